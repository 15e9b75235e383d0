"""Placement of waiting tasks: batches of decisions from the Scheduler, then assignment.

Tasks wait when they are Pending, or Failed with a restart due (policy and backoff). A pass sends
the waiting tasks, oldest first, in one `sched.place_many` request (at most MAX_BATCH); the reply
assigns each placed task (Scheduled on its node, a new attempt, then `worker.run`) and records why
the others wait. One request is in flight at a time; triggers meanwhile (a new task, a task that
ended, a worker that joined) coalesce into the next pass.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import zmq

from cube.manager.delivery import Commands
from cube.manager.registry import WorkerRegistry
from cube.manager.taskbook import Skip, TaskBook
from cube.messages import sched as sched_msg
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task
from cube.observability import manager_metrics as metrics
from cube.wire.actor import Actor
from cube.wire.envelope import REPLY_ERROR, Envelope
from cube.wire.errors import IN_DOUBT, CubeError

log = logging.getLogger(__name__)

SCHEDULER_TIMEOUT = 5.0
NOTE_EVERY = 5.0  # seconds between two writes of why a task waits
# Seconds a worker where a task's fixed host port was taken at start stays off-limits to it: by
# then that worker's metrics show what holds the port, and the Scheduler keeps the task off while
# it is held (docs/architecture.md, "Ports"). A conflict the metrics cannot see costs one attempt
# per hold, within the restart policy's limit: never an endless retry there.
PORT_CONFLICT_HOLD = 10.0


def may_want_placement(t: Task) -> bool:
    """Waiting now, or once its restart backoff is over."""
    return t.desired == DESIRED_RUNNING and (t.state == State.PENDING or (
        t.state == State.FAILED and t.not_before > 0 and t.restart.allows(t.exit_code, t.restart_count)))


def wants_placement(t: Task, now: float) -> bool:
    """Waiting now: Pending, or Failed with its restart backoff over."""
    return may_want_placement(t) and (t.state == State.PENDING or t.not_before <= now)


class Placement:
    def __init__(self, actor: Actor, sock: zmq.Socket, book: TaskBook, registry: WorkerRegistry,
                 commands: Commands, batch: int = sched_msg.MAX_BATCH):
        self.actor = actor
        self.sock = sock  # a DEALER to the Scheduler
        self.book = book
        self.registry = registry
        self.commands = commands
        self.batch = batch
        self.in_flight = False
        self._again = False
        self._timer: Any = None
        self._cursor: tuple[float, str] | None = None  # where the last full batch ended
        # New tasks are tried at once, on their own; the tasks that already wait are looked at
        # again only when room may have appeared (a task ended, a worker joined or came back,
        # and every second for the metrics): thousands of tasks waiting for room must not make
        # every submit pay for a pass over all of them.
        self._fresh: dict[str, None] = {}
        self._full = True  # the next pass looks at every waiting task
        self.placed = 0
        self.candidates: dict[str, Task] = {}  # tasks that wait, or will once their backoff ends
        self.spread: Callable[[Task], list[str]] = lambda task: []  # workers a service's replica avoids
        book.watchers.append(self._watch)

    def _watch(self, task_id: str, task: Task | None) -> None:
        if task is not None and may_want_placement(task):
            self.candidates[task_id] = task
        else:
            self.candidates.pop(task_id, None)

    def added(self, task_id: str) -> None:
        """A task was just written: the next pass tries it (and only the new ones, unless room
        may have appeared since the last full pass)."""
        self._fresh[task_id] = None
        self.schedule(full=False)

    def schedule(self, delay: float = 0.0, full: bool = True) -> None:
        """Ask for a pass in `delay` seconds, coalesced with the other requests: the earliest wins
        (a task's restart backoff must not hold back the placement of new tasks). `full`: room
        may have appeared, so every waiting task is looked at again."""
        if full:
            self._full = True
        if self.in_flight and delay <= 0:
            self._again = True
            return
        due = self.actor.loop.clock() + delay
        if self._timer is not None and not self._timer.cancelled:
            if self._timer.when <= due:
                return
            self._timer.cancel()
        self._timer = self.actor.loop.call_later(delay, self._pass)

    def waiting(self, now: float | None = None) -> list[Task]:
        """The tasks to place now, oldest first."""
        now = time.time() if now is None else now
        return sorted((t for t in self.candidates.values() if wants_placement(t, now) and not self.book.busy(t.id)),
                      key=lambda t: (t.created_at, t.id))

    def _next_batch(self) -> list[Task]:
        """The oldest waiting tasks; after a full batch, those after it first (then from the
        start), so a long queue of tasks that fit nowhere cannot hide newer ones for ever."""
        waiting = self.waiting()
        if self._cursor is not None and len(waiting) > self.batch:
            later = [t for t in waiting if (t.created_at, t.id) > self._cursor]
            waiting = later + [t for t in waiting if (t.created_at, t.id) <= self._cursor]
        tasks = waiting[: self.batch]
        self._cursor = (tasks[-1].created_at, tasks[-1].id) if len(tasks) == self.batch else None
        return tasks

    def _fresh_batch(self) -> list[Task]:
        """The oldest of the tasks added since the last pass that still wait."""
        now = time.time()
        fresh = [t for t in (self.candidates.get(i) for i in self._fresh)
                 if t is not None and wants_placement(t, now) and not self.book.busy(t.id)]
        fresh.sort(key=lambda t: (t.created_at, t.id))
        tasks = fresh[: self.batch]
        self._fresh = dict.fromkeys(t.id for t in fresh[self.batch:])
        return tasks

    def _pass(self) -> None:
        self._timer = None
        if self.in_flight:  # a delayed pass came due while a request is out: after its reply
            self._again = True
            return
        if self._full:
            self._full = False
            self._fresh.clear()  # a full pass sees them too
            tasks = self._next_batch()
        else:
            tasks = self._fresh_batch()
        if not tasks:
            return
        body = {"tasks": [self._item(t) for t in tasks], "exclude": self.registry.lost(),
                "only": self.registry.schedulable()}
        self.in_flight, self._again = True, False
        self.actor.request(self.sock, Envelope(sched_msg.PLACE_MANY, body),
                           lambda reply: self._decided(tasks, reply), timeout=SCHEDULER_TIMEOUT)

    def _item(self, t: Task) -> dict[str, Any]:
        item: dict[str, Any] = {"task_id": t.id, "cpu": float(t.cpu), "memory": int(t.memory), "disk": int(t.disk)}
        fixed = t.fixed_ports
        if fixed:  # a resource of the worker: free there, or the task does not go there
            item["fixed_ports"] = fixed
        if t.port_conflicts:  # its ports were taken there when it started: not again for a while
            now = time.time()
            recent = [w for w, at in t.port_conflicts.items() if now - at < PORT_CONFLICT_HOLD]
            if recent:
                item["exclude"] = recent
        if t.service:  # replicas of one service avoid sharing a worker when another one fits
            item["group"] = t.service
            item["avoid"] = self.spread(t)
        return item

    def _decided(self, tasks: list[Task], reply: Envelope | None) -> None:
        self.in_flight = False
        if reply is None or reply.type == REPLY_ERROR:
            why = "no answer" if reply is None else reply.body.get("message")
            log.warning("manager: scheduler unavailable (%s); %d tasks wait", why, len(tasks))
            metrics.placement_failed(metrics.SCHEDULER_UNAVAILABLE, len(tasks))
            if reply is None:  # it may have decided (and reserved) anyway: give those back
                for t in tasks:
                    self._release(t.id)
            self.schedule(1.0)
            return
        placed_any = False
        for p in reply.body.get("placements", []):
            node, task_id = p.get("node"), p.get("task_id")
            if not isinstance(task_id, str):
                continue
            if node and self.registry.is_ready(node):
                self._assign(task_id, node)
                placed_any = True
                continue
            reason = p.get("reason") or f"scheduler chose {node}, which is not connected"
            metrics.placement_failed(metrics.WORKER_GONE if node else metrics.reason_kind(reason))
            if node:
                self._release(task_id)
            self._note(task_id, _with_conflicts(self.book.get(task_id), reason))
        if self._again or self._fresh or (placed_any and len(tasks) == self.batch):
            self.schedule(full=False)  # a full pass only if one was asked for meanwhile

    def _note(self, task_id: str, reason: str) -> None:
        """Record why a task waits; at most every NOTE_EVERY seconds a task (the reason quotes free
        capacity, which changes with every placement: a write per task per pass otherwise)."""
        task = self.book.get(task_id)
        if task is not None and task.updated_at > time.time() - NOTE_EVERY and task.reason not in ("", "submitted"):
            return
        if task is not None and task.reason != reason and not self.book.busy(task_id):
            def note(t: Task) -> None:
                if t.reason == reason or not wants_placement(t, time.time()):
                    raise Skip
            self.book.commit(task_id, note, reason, event=False)

    def _assign(self, task_id: str, node: str) -> None:
        def scheduled(t: Task) -> None:
            if not wants_placement(t, time.time()):
                raise Skip  # stopped or changed while the scheduler decided
            restart = t.state == State.FAILED
            t.transition(State.SCHEDULED)
            t.worker = node
            t.attempt += 1
            t.ran(t.attempt, node)  # its logs are asked of that worker (docs/architecture.md, "Logs")
            t.container_id = ""
            t.host_ports = {}
            t.exit_code = None
            t.not_before = 0.0
            t.report_clock = []  # a new attempt: no report of it applied yet
            if restart:
                t.restart_count += 1
            t.reason = f"restart {t.restart_count} on {node}" if restart else f"placed on {node}"

        def done(task: Task | None, error: CubeError | None) -> None:
            if error is None and task is not None and task.state == State.SCHEDULED and task.worker == node:
                self.placed += 1
                metrics.placements.inc()
                self.commands.run(task)
                return
            if error is not None and error.code == IN_DOUBT:
                return  # it may be Scheduled there after all: keep the reservation (adoption runs it)
            self._release(task_id)
            if error is not None:
                metrics.placement_failed(metrics.STORE)
                log.warning("manager: could not assign %s to %s: %s", task_id[:8], node, error)
                self.schedule(1.0)
        self.book.commit(task_id, scheduled, "", done=done)

    def _release(self, task_id: str) -> None:
        """The Scheduler reserved capacity for a placement that did not happen: give it back."""
        self.actor.request(self.sock, Envelope(sched_msg.RELEASE, {"task_id": task_id}), timeout=SCHEDULER_TIMEOUT)


def _with_conflicts(task: Task | None, reason: str) -> str:
    """A reason that says why workers are excluded when a fixed host port was refused there."""
    if task is None or not task.port_conflicts:
        return reason
    now = time.time()
    recent = sorted(w for w, at in task.port_conflicts.items() if now - at < PORT_CONFLICT_HOLD)
    if not recent:
        return reason
    return (f"{reason}; Docker refused host port {', '.join(task.fixed_ports)} on {', '.join(recent)}: "
            f"not placed there again for {PORT_CONFLICT_HOLD:g} s")
