"""Health checks of Running tasks: HTTP probes off the loop, a restart after `threshold` failures.

A probe runs in the loop's thread pool (a slow task never stalls the Manager); its result comes
back on the loop and counts only if the task is still Running the same attempt.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cube.control.health import probe
from cube.manager.registry import WorkerRegistry
from cube.manager.taskbook import TaskBook
from cube.model.ports import container_key
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task
from cube.wire.loop import Loop

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, loop: Loop, book: TaskBook, registry: WorkerRegistry,
                 unhealthy: Callable[[Task, str], None]):
        self.loop = loop
        self.book = book
        self.registry = registry
        self.unhealthy = unhealthy  # called when a task failed `threshold` probes in a row
        self.failures: dict[str, int] = {}  # task id -> consecutive failed probes
        self.last_probe: dict[str, float] = {}  # task id -> loop time of the last probe
        self.probing: set[str] = set()
        self.passing: dict[str, float] = {}  # task id -> wall time of its first passing probe since the last failure
        self.checked: dict[str, Task] = {}  # Running tasks with a health check (kept by a watcher)
        book.watchers.append(self._watch)

    def _watch(self, task_id: str, task: Task | None) -> None:
        if task is not None and task.state == State.RUNNING and task.health is not None:
            self.checked[task_id] = task
        else:
            self.checked.pop(task_id, None)
            self.passing.pop(task_id, None)

    def healthy_since(self, task: Task) -> float | None:
        """Since when a Running task is known healthy: its start without a health check, else
        its first passing probe since the last failure (None: not known yet)."""
        if task.health is None:
            return task.started_at or None
        return self.passing.get(task.id)

    def started(self, task_id: str) -> None:
        """A task just became Running: its first probe is one interval from now."""
        self.failures.pop(task_id, None)
        self.passing.pop(task_id, None)
        self.last_probe[task_id] = self.loop.clock()

    def forget(self, task_id: str) -> None:
        self.failures.pop(task_id, None)
        self.passing.pop(task_id, None)
        self.last_probe.pop(task_id, None)

    def tick(self) -> None:
        now = self.loop.clock()
        for task in list(self.checked.values()):  # not a scan of every task, twice a second
            if task.id in self.probing or task.desired != DESIRED_RUNNING:
                continue
            if now - self.last_probe.get(task.id, 0.0) < task.health.interval:
                continue
            target = self._target(task)
            if target is None:
                continue
            self.last_probe[task.id] = now
            self.probing.add(task.id)
            host, port = target
            self.loop.run_blocking(probe, host, port, task.health.path, task.health.timeout,
                                   done=lambda res, err, t=task: self._result(t.id, t.attempt, res, err))

    def _target(self, task: Task) -> tuple[str, int] | None:
        rec = self.registry.get(task.worker)
        port_key = task.health.port or (container_key(task.ports[0]) if task.ports else "")
        host_port = task.host_ports.get(port_key)
        if rec is None or not host_port:
            return None
        return rec.address, int(host_port)

    def _result(self, task_id: str, attempt: int, result: Any, error: BaseException | None) -> None:
        self.probing.discard(task_id)
        task = self.book.get(task_id)
        if task is None or task.attempt != attempt or task.state != State.RUNNING:
            return
        if error is None and result.ok:
            self.failures.pop(task_id, None)
            self.passing.setdefault(task_id, time.time())
            return
        self.passing.pop(task_id, None)
        failures = self.failures.get(task_id, 0) + 1
        self.failures[task_id] = failures
        detail = result.detail if result else str(error)
        log.info("manager: health check %d/%d of %s failed: %s", failures, task.health.threshold, task.id[:8], detail)
        if failures >= task.health.threshold:
            self.unhealthy(task, f"health check failed {failures} times ({detail})")
