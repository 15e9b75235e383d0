"""Services: keep N replicas of a task template, one task per slot, and roll updates through them.

The ServiceController owns the services (persisted in the Store's `services` namespace) and, on
a timer and after every change of one of their tasks, asks the pure planner
(cube/control/rollout.py) what each needs, then applies it: new tasks through the TaskBook (a
burst of them is one group-committed Store write), stops through TaskLife, rollout progress in
the service's record (so an update resumes after a manager restart). docs/architecture.md,
"Services".

Every change of a service (an API request, or the planner moving its rollout on) goes through
`change`: one at a time per service, applied to the version in memory when its turn comes and
kept in memory only once the Store has it, like a task's changes in the TaskBook.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
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
DELETE = object()  # what a change returns to remove the service

Change = Callable[[Service | None], Any]  # the current service (None: none) -> new Service, DELETE, or None (nothing)
Done = Callable[[Service | None, CubeError | None], None]


@dataclass
class _Pending:
    fn: Change
    done: Done | None


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
        self._placed: dict[str, collections.Counter[str]] = {}  # service -> workers of its placed live tasks
        self._placed_on: dict[str, tuple[str, str]] = {}  # task id -> (service, worker) counted above
        self._queues: dict[str, list[_Pending]] = {}  # service -> changes waiting; the first is in flight
        self._creating: dict[tuple[str, int, int], str] = {}  # (service, slot, version) -> task id being written
        self._in_flight: set[str] = set()  # ids of the creates waiting for the Store
        self._stopping: set[str] = set()
        self._dirty = False
        book.watchers.append(self._watch)

    # ---- indexes -------------------------------------------------------------------------------------
    def _watch(self, task_id: str, task: Task | None) -> None:
        counted = self._placed_on.pop(task_id, None)
        if counted is not None:
            self._placed[counted[0]][counted[1]] -= 1
        if task is None:  # pruned
            name = self._service_of.pop(task_id, None)
            if name is not None:
                self.tasks.get(name, set()).discard(task_id)
            return
        if not task.service:
            return
        self.tasks.setdefault(task.service, set()).add(task_id)
        self._service_of[task_id] = task.service
        if task.worker and task.desired == DESIRED_RUNNING and task.state in (State.SCHEDULED, State.RUNNING):
            self._placed.setdefault(task.service, collections.Counter())[task.worker] += 1
            self._placed_on[task_id] = (task.service, task.worker)
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
        placed = self._placed.get(task.service) if task.service else None
        return sorted(w for w, n in placed.items() if n > 0) if placed else []

    # ---- changes, one at a time per service ---------------------------------------------------------------
    def change(self, name: str, fn: Change, done: Done | None = None) -> None:
        queue = self._queues.setdefault(name, [])
        queue.append(_Pending(fn, done))
        if len(queue) == 1:
            self._next(name)

    def _next(self, name: str) -> None:
        queue = self._queues.get(name)
        if not queue:
            self._queues.pop(name, None)
            return
        item = queue[0]
        current = self.services.get(name)
        try:
            new = item.fn(Service.from_dict(current.to_dict()) if current is not None else None)
        except CubeError as e:
            self._finish(name, item, None, e)
            return
        if new is None:  # nothing to change
            self._finish(name, item, current, None)
            return
        if new is DELETE:
            def deleted(_: Any, error: CubeError | None) -> None:
                if error is None:
                    self.services.pop(name, None)
                    self._dirty = True
                self._finish(name, item, None, error)
            self.store.delete(SERVICES, name, deleted)
            return
        record = {**new.to_dict(), "events": self.events.get(name, [])[-MAX_EVENTS:]}

        def written(_: Any, error: CubeError | None) -> None:
            if error is None:
                self.services[name] = new
                self._dirty = True
            self._finish(name, item, new if error is None else None, error)
        self.store.put(SERVICES, name, record, written)

    def _finish(self, name: str, item: _Pending, svc: Service | None, error: CubeError | None) -> None:
        queue = self._queues.get(name)
        if queue and queue[0] is item:
            queue.pop(0)
        if item.done is not None:
            item.done(svc, error)
        self._next(name)

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
            if self._queues.get(svc.name):  # a change in flight: plan on what it leaves
                continue
            self._apply(svc, planner.plan(svc, [self._replica(t) for t in self.replicas(svc.name)], now, drained))
        self._stop_orphans()

    def _replica(self, t: Task) -> Replica:
        return Replica(task_id=t.id, slot=t.slot, version=t.version, state=t.state.value, desired=t.desired,
                       finished=listing.finished(t), restart_count=t.restart_count, created_at=t.created_at,
                       healthy_since=self.healthy_since(t) if t.state == State.RUNNING else None, worker=t.worker,
                       finished_at=t.finished_at or t.updated_at, lost_count=t.lost_count)

    def _apply(self, svc: Service, plan: planner.Plan) -> None:
        for message in plan.events:
            self.event(svc.name, message)
        if plan.rollback:
            now = self.clock()
            self.change(svc.name, lambda current: rolled_back(current, now) if current is not None else None)
            return
        if plan.rollout is not None:
            rollout = plan.rollout

            def moved_on(current: Service | None) -> Service | None:
                if current is None or current.version != svc.version:
                    return None  # changed meanwhile (an update, a rollback): the next plan decides
                current.rollout = rollout
                return current
            self.change(svc.name, moved_on)
        for task_id, reason in plan.stop:
            if task_id not in self._stopping:
                self._stopping.add(task_id)
                self.stop(task_id, reason)
        for slot, version in plan.create:
            key = (svc.name, slot, version)
            if key in self._creating and self._creating[key] in self._in_flight:
                continue
            # The same id until it is written: a create whose answer was lost is found, not doubled.
            task_id = self._creating.get(key) or new_task_id()
            self._creating[key] = task_id
            self._in_flight.add(task_id)
            task = svc.task_for(slot, task_id, version)

            def added(t: Task | None, existing: bool, error: CubeError | None, key=key, task_id=task_id) -> None:
                self._in_flight.discard(task_id)
                if error is None:
                    self._creating.pop(key, None)
                    self.schedule()  # now that it is written, a placement pass finds it
                else:
                    log.warning("manager: service %s slot %d: task not written yet (%s); retrying", key[0], key[1],
                                error)
                self._dirty = True
            self.book.add(task, "submitted", added)  # placement replaces "submitted" with its reason

    def _stop_orphans(self) -> None:
        """Tasks of a service that no longer exists (removed; a stop that failed) are stopped."""
        for name in [n for n in self.tasks if n not in self.services and not self._queues.get(n)]:
            for t in self.replicas(name):
                if t.desired == DESIRED_RUNNING and t.id not in self._stopping:
                    self._stopping.add(t.id)
                    self.stop(t.id, f"service {name} removed")

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
    back.rollout.failed, back.rollout.done = [], []
    back.updated_at = now
    return back
