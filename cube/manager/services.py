"""Services: keep N replicas of a task template, one task per slot, and roll updates through them.

The ServiceController owns the services (persisted in the Store's `services` namespace) and, on
a timer and after every change of one of their tasks, asks the pure planner
(cube/control/rollout.py) what each needs, then applies it: new tasks through the TaskBook (a
burst of them is one group-committed Store write), stops through TaskLife, rollout progress in
the service's record (so an update resumes after a manager restart). docs/architecture.md,
"Services".
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cube.control import rollout as planner
from cube.control.rollout import Replica
from cube.manager import listing
from cube.manager.storage import AsyncStore
from cube.manager.taskbook import TaskBook
from cube.model.service import ACTIVE, Service
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task, new_task_id
from cube.wire.errors import CubeError

log = logging.getLogger(__name__)

SERVICES = "services"
MAX_EVENTS = 50  # kept with each service: the latest steps of its rollouts


class ServiceController:
    def __init__(self, book: TaskBook, store: AsyncStore, stop: Callable[[str, str], None],
                 healthy_since: Callable[[Task], float | None], drained: Callable[[], frozenset[str]],
                 on_event: Callable[[str, str], None], schedule: Callable[[], None],
                 clock: Callable[[], float] = time.time):
        self.book = book
        self.store = store
        self.stop = stop  # (task id, reason): desired stopped
        self.healthy_since = healthy_since
        self.drained = drained
        self.on_event = on_event  # (service, message)
        self.schedule = schedule  # a placement pass
        self.clock = clock
        self.services: dict[str, Service] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.tasks: dict[str, set[str]] = {}  # service -> ids of its tasks (kept by a watcher)
        self._service_of: dict[str, str] = {}  # task id -> its service
        self._creating: set[tuple[str, int]] = set()  # (service, slot) being written
        self._stopping: set[str] = set()
        self._saving: set[str] = set()
        self._dirty = False
        book.watchers.append(self._watch)

    # ---- indexes -------------------------------------------------------------------------------------
    def _watch(self, task_id: str, task: Task | None) -> None:
        if task is None:  # pruned
            name = self._service_of.pop(task_id, None)
            if name is not None:
                self.tasks.get(name, set()).discard(task_id)
            return
        if task.service:
            self.tasks.setdefault(task.service, set()).add(task_id)
            self._service_of[task_id] = task.service
            self._dirty = True

    def load(self, items: list[tuple[str, Any]]) -> None:
        for name, data in items:
            try:
                self.services[name] = Service.from_dict(data)
                self.events[name] = list(data.get("events") or [])
            except (TypeError, ValueError) as e:
                log.error("manager: service %s in the Store cannot be read (%s); skipped", name, e)

    def replicas(self, name: str) -> list[Task]:
        return sorted((t for t in (self.book.get(i) for i in self.tasks.get(name, ())) if t is not None),
                      key=lambda t: (t.slot, t.created_at))

    def spread(self, task: Task) -> list[str]:
        """Workers already running a replica of `task`'s service: placement avoids them if it can."""
        if not task.service:
            return []
        return sorted({t.worker for t in self.replicas(task.service)
                       if t.id != task.id and t.worker and t.desired == DESIRED_RUNNING
                       and t.state in (State.SCHEDULED, State.RUNNING)})

    # ---- changes from the API -------------------------------------------------------------------------
    def save(self, svc: Service, done: Callable[[Service | None, CubeError | None], None] | None = None) -> None:
        record = {**svc.to_dict(), "events": self.events.get(svc.name, [])[-MAX_EVENTS:]}

        def written(_: Any, error: CubeError | None) -> None:
            if error is None:
                self.services[svc.name] = svc
                self._dirty = True
            if done is not None:
                done(svc if error is None else None, error)
        self.store.put(SERVICES, svc.name, record, written)

    def remove(self, name: str, done: Callable[[int, CubeError | None], None]) -> None:
        def written(_: Any, error: CubeError | None) -> None:
            if error is not None:
                done(0, error)
                return
            self.services.pop(name, None)
            stopped = 0
            for t in self.replicas(name):
                if t.desired == DESIRED_RUNNING:
                    self.stop(t.id, f"service {name} removed")
                    stopped += 1
            self.event(name, "removed")
            done(stopped, None)
        self.store.delete(SERVICES, name, written)

    def event(self, name: str, message: str) -> None:
        self.events.setdefault(name, []).append({"time": self.clock(), "message": message})
        del self.events[name][:-MAX_EVENTS]
        log.info("manager: service %s: %s", name, message)
        self.on_event(name, message)

    # ---- the control loop -------------------------------------------------------------------------------
    def tick(self, force: bool = False) -> None:
        """Plan every service (each timer tick; at once after a change of one of their tasks)."""
        if not force and not self._dirty and not any(s.rollout.state in ACTIVE for s in self.services.values()):
            return
        self._dirty = False
        now = self.clock()
        drained = self.drained()
        for svc in list(self.services.values()):
            if svc.name in self._saving:
                continue
            self._apply(svc, planner.plan(svc, [self._replica(t) for t in self.replicas(svc.name)], now, drained))

    def _replica(self, t: Task) -> Replica:
        return Replica(task_id=t.id, slot=t.slot, version=t.version, state=t.state.value, desired=t.desired,
                       finished=listing.finished(t), restart_count=t.restart_count, created_at=t.created_at,
                       healthy_since=self.healthy_since(t) if t.state == State.RUNNING else None, worker=t.worker)

    def _apply(self, svc: Service, plan: planner.Plan) -> None:
        for message in plan.events:
            self.event(svc.name, message)
        if plan.rollback:
            back = rolled_back(svc, self.clock())
            self._saving.add(svc.name)
            self.save(back, lambda _, error: self._saved(svc.name, error))
            return
        if plan.rollout is not None:
            svc.rollout = plan.rollout
            self._saving.add(svc.name)
            self.save(svc, lambda _, error: self._saved(svc.name, error))
        for task_id, reason in plan.stop:
            if task_id not in self._stopping:
                self._stopping.add(task_id)
                self.stop(task_id, reason)
        created = False
        for slot, version in plan.create:
            if (svc.name, slot) in self._creating:
                continue
            self._creating.add((svc.name, slot))
            task = svc.task_for(slot, new_task_id(), version)

            def added(t: Task | None, existing: bool, error: CubeError | None, key=(svc.name, slot)) -> None:
                self._creating.discard(key)
                if error is not None:
                    log.warning("manager: service %s slot %d: task not created (%s); retrying", key[0], key[1], error)
                self._dirty = True
            self.book.add(task, "submitted", added)  # placement replaces "submitted" with its reason
            created = True
        if created:
            self.schedule()

    def _saved(self, name: str, error: CubeError | None) -> None:
        self._saving.discard(name)
        if error is not None:
            log.warning("manager: service %s not saved (%s); retrying", name, error)
        self._dirty = True

    def stopped(self, task_id: str) -> None:
        """A stop was written (or refused): the next plan sees it."""
        self._stopping.discard(task_id)
        self._dirty = True


def rolled_back(svc: Service, now: float) -> Service:
    """The service with its previous spec as the target again, rolling back."""
    back = Service.from_dict(svc.to_dict())
    back.spec, back.previous_spec = svc.previous_spec or svc.spec, svc.spec
    back.version, back.previous_version = svc.previous_version, svc.version
    back.rollout = planner.start_rollback(back, now)
    back.rollout.failed = []
    back.updated_at = now
    return back
