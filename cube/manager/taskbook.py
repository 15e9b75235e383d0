"""The Manager's table of tasks, persisted through the Store before anything is acknowledged.

Every change goes through `commit(task_id, change, reason, done)`: the change is applied to a copy
of the task as it is *when its turn comes*, written with its event in one batch, and only then
adopted in memory, published, and reported to `done` (docs/architecture.md, "The life of a task").
Nothing waits: writes are requests on the Manager's loop. Changes of one task are applied one at
a time, in the order they were asked for, so two changes never race; changes of different tasks
are written concurrently (and the Store commits them together).

A change that no longer applies to the task as it now is raises `Skip`: nothing is written. One
that only fills in a detail of the record (the ports of a container already Running) returns
`QUIET`: written, without an event.

A write the Store refused (an error reply, e.g. `unavailable` for a write past its deadline) was
not applied: `done` gets the error (`unavailable`: not applied). A write that got no answer may or
may not have been applied (the Store may have frozen in the middle of it): `done` gets `in_doubt`,
and the task is *in doubt*; its later changes wait
while `resolve_doubts` reads it back. If the Store holds the doubtful version it is adopted
(memory, published event, `on_adopt`); otherwise it is dropped. Event sequence numbers are handed
out once each and never reused.
"""
from __future__ import annotations

import bisect

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cube.manager.events import EventLog
from cube.manager.storage import AsyncStore
from cube.model.state import State
from cube.model.task import Task
from cube.store.base import Op, pack, unpack
from cube.wire.errors import CONFLICT, IN_DOUBT, NOT_FOUND, UNAVAILABLE, CubeError, Unavailable

log = logging.getLogger(__name__)

TASKS, EVENTS, META = "tasks", "events", "meta"
MAX_QUEUED = 64  # changes waiting behind one task's write; more are refused (the Store is down)
MAX_EVENTS = 200  # events returned by `events` (the newest)
BULKY = 4096  # bytes of env and command past which a task's writes are not coalesced

Done = Callable[[Task | None, CubeError | None], None]


def bulky(task: Task) -> bool:
    """A task whose record may be large (a big env or command): written in a request of its own."""
    if not task.env and not task.command:
        return False
    return sum(len(k) + len(v) for k, v in task.env.items()) + sum(len(c) for c in task.command or ()) > BULKY


class Skip(Exception):
    """Raised by a change that no longer applies to the task as it now is: nothing is written."""


QUIET = object()  # returned by a change that fills in a detail of the record: written, no event


@dataclass
class TaskEvent:
    """A task's event, as the event log stores and publishes it (docs/protocol.md, "Events")."""
    seq: int
    task_id: str
    state: str
    time: float
    worker: str
    reason: str
    name: str = ""
    attempt: int = 0
    service: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"type": "task", **self.__dict__}
        if not self.service:
            del out["service"]
        return out


@dataclass
class Change:
    fn: Callable[[Task], object] | None  # may return QUIET
    reason: str
    event: bool
    done: Done | None
    create: Task | None = None  # set for a new task: written only if the id is not known


@dataclass
class Doubt:
    """A write that got no answer: applied before its deadline, or never."""
    task: Task  # the version written
    event: TaskEvent | None
    previous: Task | None  # the version in memory then (None: the write created the task)
    since: float
    resolving: bool = False

    def describe(self) -> str:
        if self.previous is None:
            return f"task {self.task.id} may or may not have been created"
        return f"the change to task {self.task.id} ({self.task.reason}) may or may not have been saved"


@dataclass
class _Queue:
    waiting: collections.deque = field(default_factory=collections.deque)
    busy: bool = False


class TaskBook:
    def __init__(self, store: AsyncStore, publish: Callable[[TaskEvent, Task, dict[str, Any]], None] | None = None,
                 on_adopt: Callable[[Task | None, Task], None] | None = None, events: EventLog | None = None):
        self.store = store
        self.eventlog = events if events is not None else EventLog(store)  # numbers and stores every event
        self.publish = publish or (lambda event, task, record: None)
        # Called with (version before, adopted version) when a write that got no answer turns out
        # to have been applied: whatever its caller would have done next was not done.
        self.on_adopt = on_adopt
        self.tasks: dict[str, Task] = {}
        # Called with (task id, the version now in memory or None) whenever memory changes, so
        # parts such as Placement keep their own indexes instead of scanning every task.
        self.watchers: list[Callable[[str, Task | None], None]] = []
        self._by_worker: dict[str, set[str]] = {}  # worker -> ids of its Scheduled/Running tasks
        self._placed_on: dict[str, str] = {}  # task id -> that worker
        self._ids: list[str] = []  # every id, sorted: a prefix is a bisect, not a scan
        self._by_name: dict[str, set[str]] = {}  # name -> ids of the tasks with that name
        self._name_of: dict[str, str] = {}  # id -> its name (names never change)
        self.doubts: dict[str, Doubt] = {}
        self._queues: dict[str, _Queue] = {}

    # ---- loading ------------------------------------------------------------------------------------
    def load(self, done: Callable[[int | None, CubeError | None], None]) -> None:
        """Read every task and the event sequence back from the Store (after a restart)."""
        def got_tasks(items: Any, error: CubeError | None) -> None:
            if error is not None:
                done(None, error)
                return

            def got_seq(_: Any, error: CubeError | None) -> None:
                if error is not None:
                    done(None, error)
                    return
                loaded = sorted((Task.from_dict(v) for _, v in items), key=lambda t: (t.created_at, t.id))
                self.tasks = {t.id: t for t in loaded}  # in creation order: indexes append
                for task_id, task in self.tasks.items():
                    self._changed(task_id, task)
                done(len(self.tasks), None)
            self.eventlog.load(got_seq)
        self.store.list_all(TASKS, got_tasks)

    @property
    def seq(self) -> int:
        """The last event number handed out (cluster-wide: the event log's)."""
        return self.eventlog.seq

    # ---- reading --------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Task]:
        return iter(list(self.tasks.values()))

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def busy(self, task_id: str) -> bool:
        """A write of this task is in flight or waiting (its memory copy is about to change)."""
        q = self._queues.get(task_id)
        return task_id in self.doubts or (q is not None and (q.busy or bool(q.waiting)))

    def find(self, ref: str) -> Task:
        """A task by id, unique id prefix or unique name; errors say which it was.

        A task whose creation is in doubt is neither found nor not found until the Store says."""
        for d in self.doubts.values():
            if d.previous is None and ref not in self.tasks and (
                    ref == d.task.id or (len(ref) >= 4 and d.task.id.startswith(ref)) or ref == d.task.name):
                raise CubeError(IN_DOUBT, f"the store has not confirmed it yet; {d.describe()}")
        if ref in self.tasks:
            return self.tasks[ref]
        matches = self._with_prefix(ref, 6) if len(ref) >= 4 else []
        if not matches:
            matches = self.named(ref)
            if len(matches) > 1:  # a name reused over time: the live one, else the newest
                live = [t for t in matches if t.desired == "running"]
                matches = live or [max(matches, key=lambda t: t.created_at)]
        if not matches:
            raise CubeError(NOT_FOUND, f"no task with id or name {ref!r}")
        if len(matches) > 1:
            ids = ", ".join(t.id[:12] for t in matches[:5])
            raise CubeError(CONFLICT, f"{ref!r} matches {len(matches)} tasks ({ids}); give more of the id")
        return matches[0]

    def _with_prefix(self, prefix: str, most: int) -> list[Task]:
        i = bisect.bisect_left(self._ids, prefix)
        out = []
        while i < len(self._ids) and self._ids[i].startswith(prefix) and len(out) < most:
            out.append(self.tasks[self._ids[i]])
            i += 1
        return out

    def named(self, name: str) -> list[Task]:
        return [self.tasks[i] for i in self._by_name.get(name, ())]

    def where(self, predicate: Callable[[Task], bool]) -> list[Task]:
        return sorted((t for t in self.tasks.values() if predicate(t)), key=lambda t: (t.created_at, t.id))

    def count_on_worker(self, worker: str) -> int:
        """How many tasks are Scheduled or Running on `worker` (from the same index)."""
        return len(self._by_worker.get(worker, ()))

    def on_worker(self, worker: str) -> list[Task]:
        """The tasks Scheduled or Running on `worker` (from an index: no scan of every task)."""
        ids = self._by_worker.get(worker, ())
        return sorted((self.tasks[i] for i in ids), key=lambda t: (t.created_at, t.id))

    def events(self, task_id: str, done: Callable[[list[dict[str, Any]] | None, CubeError | None], None]) -> None:
        """The task's events, oldest first (the newest MAX_EVENTS)."""
        def got(items: Any, error: CubeError | None) -> None:
            done(None if error else [v for _, v in items][-MAX_EVENTS:], error)
        self.store.list_all(EVENTS, got, prefix=task_id + "/")

    # ---- writing ----------------------------------------------------------------------------------------
    def add(self, task: Task, reason: str = "submitted",
            done: Callable[[Task | None, bool, CubeError | None], None] | None = None) -> None:
        """A new task; a task with the same id (a retried submit) is reported as existing."""
        def added(t: Task | None, error: CubeError | None) -> None:
            if done is not None:
                done(t, t is not None and t is not created[0], error)
        created: list[Task | None] = [None]
        self._enqueue(task.id, Change(None, reason, True, added, create=task), created)

    def commit(self, task_id: str, change: Callable[[Task], object] | None = None, reason: str = "",
               event: bool = True, done: Done | None = None) -> None:
        """Apply `change` to the task as it is when its turn comes, persist, adopt, publish."""
        self._enqueue(task_id, Change(change, reason, event, done))

    def prune(self, task_ids: list[str], done: Callable[[int, CubeError | None], None]) -> None:
        """Forget finished tasks and their events (retention); not if a change is pending."""
        ids = [i for i in task_ids if i in self.tasks and not self.busy(i) and i not in self.doubts]
        if not ids:
            done(0, None)
            return
        ops: list[Op] = []
        for i in ids:
            ops += [("delete", TASKS, i, None), ("delete_prefix", EVENTS, i + "/", None)]

        def written(_: Any, error: CubeError | None) -> None:
            if error is None:
                for i in ids:
                    if not self.busy(i):
                        self.tasks.pop(i, None)
                        self._changed(i, None)
            done(0 if error else len(ids), error)
        self.store.batch(ops, written)

    def _enqueue(self, task_id: str, change: Change, created: list | None = None) -> None:
        q = self._queues.setdefault(task_id, _Queue())
        if len(q.waiting) >= MAX_QUEUED:
            self._finish(change, None, CubeError(UNAVAILABLE, f"too many changes of task {task_id} waiting "
                                                              f"for the store; retry"))
            return
        q.waiting.append((change, created))
        self._next(task_id)

    def _next(self, task_id: str) -> None:
        q = self._queues.get(task_id)
        if q is None or q.busy:
            return
        if task_id in self.doubts:
            self._resolve(task_id)
            return
        if not q.waiting:
            del self._queues[task_id]
            return
        change, created = q.waiting.popleft()
        q.busy = True
        self._write(task_id, change, created)

    def _write(self, task_id: str, change: Change, created: list | None) -> None:
        current = self.tasks.get(task_id)
        if change.create is not None:
            if current is not None:  # already known: a replayed or retried submit
                self._done(task_id, change, current, None)
                return
            base = change.create
        elif current is None:
            self._done(task_id, change, None, CubeError(NOT_FOUND, f"no task with id {task_id!r}"))
            return
        else:
            base = current
        new = base.copy()
        quiet = False
        try:
            if change.fn:
                quiet = change.fn(new) is QUIET
        except Skip:
            self._done(task_id, change, current, None)
            return
        except Exception as e:  # e.g. an illegal transition: a bug in the caller, not in the Store
            self._done(task_id, change, current, CubeError(CONFLICT, f"task {task_id}: {e}"))
            return
        if created is not None:
            created[0] = new
        new.updated_at = time.time()
        if change.reason:
            new.reason = change.reason
        record = new.record()  # `new` is never changed again: each change applies to a copy
        ops: list[Op] = [("put", TASKS, new.id, record)]
        ev = None
        if change.event and not quiet:  # numbered now, once: a refused write leaves a gap, never a repeat
            ev = TaskEvent(self.eventlog.number({})["seq"], new.id, new.state.value, new.updated_at, new.worker,
                           change.reason or new.reason, new.name, new.attempt, new.service)
            stored = ev.to_dict()
            ops.append(("put", EVENTS, f"{new.id}/{ev.seq:012d}", stored))  # the task's history (inspect)
            ops += self.eventlog.ops(stored)  # the cluster's log (events.since)

        def written(_: Any, error: CubeError | None) -> None:
            if error is None:
                self.tasks[new.id] = new
                self._changed(new.id, new)
                if ev:
                    self._announce(current, new, ev, record)
                self._done(task_id, change, new, None)
            elif isinstance(error, Unavailable):  # no answer: applied before its deadline, or never
                self.doubts[task_id] = Doubt(new, ev, current, time.time())
                hint = ("retrying with the same id is safe" if current is None
                        else "it will be known once the store answers")
                self._done(task_id, change, None, CubeError(
                    IN_DOUBT, f"the store did not answer in time; {self.doubts[task_id].describe()} ({hint})"))
            elif error.code == UNAVAILABLE:  # refused: its deadline had passed, so it was not applied
                what = ("the task was not created, retry" if current is None
                        else f"the change to task {task_id} was not saved, retry")
                self._done(task_id, change, None, CubeError(UNAVAILABLE, f"the store refused the write ({error.message}); "
                                                                         f"{what}"))
            else:
                self._done(task_id, change, None, error)
        self.store.batch(ops, written, solo=bulky(new))

    def _changed(self, task_id: str, task: Task | None) -> None:
        self._index_name(task_id, task)
        old = self._placed_on.pop(task_id, None)
        if old is not None:
            self._by_worker[old].discard(task_id)
        if task is not None and task.worker and task.state in (State.SCHEDULED, State.RUNNING):
            self._placed_on[task_id] = task.worker
            self._by_worker.setdefault(task.worker, set()).add(task_id)
        for watch in self.watchers:
            watch(task_id, task)

    def _index_name(self, task_id: str, task: Task | None) -> None:
        if task is None:  # forgotten (pruned)
            name = self._name_of.pop(task_id, None)
            if name is not None:
                self._by_name[name].discard(task_id)
                if not self._by_name[name]:
                    del self._by_name[name]
                i = bisect.bisect_left(self._ids, task_id)
                if i < len(self._ids) and self._ids[i] == task_id:
                    del self._ids[i]
            return
        if task_id in self._name_of:
            return
        self._name_of[task_id] = task.name
        self._by_name.setdefault(task.name, set()).add(task_id)
        if not self._ids or task_id > self._ids[-1]:
            self._ids.append(task_id)
        else:
            bisect.insort(self._ids, task_id)

    def _done(self, task_id: str, change: Change, task: Task | None, error: CubeError | None) -> None:
        q = self._queues.get(task_id)
        if q is not None:
            q.busy = False
        self._finish(change, task, error)
        self._next(task_id)

    @staticmethod
    def _finish(change: Change, task: Task | None, error: CubeError | None) -> None:
        if change.done is not None:
            try:
                change.done(task, error)
            except Exception:  # a caller's callback must not wedge the task's queue
                log.exception("taskbook: callback after a commit failed")

    def _announce(self, old: Task | None, new: Task, ev: TaskEvent, record: dict[str, Any] | None = None) -> None:
        # The routine steps (Pending, Scheduled, Running) are in the event stream and at debug
        # level: at thousands of tasks a second the log would cost the Manager a sixth of its time.
        level = logging.INFO if new.state in (State.FAILED, State.COMPLETED) else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "task %s %s: %s%s%s", new.name, new.id[:8],
                    f"{old.state.value} -> " if old is not None and old.state != new.state else "",
                    new.state.value, f" ({ev.reason})" if ev.reason else "")
        self.publish(ev, new, record if record is not None else new.to_dict())

    # ---- writes that got no answer --------------------------------------------------------------------
    def resolve_doubts(self) -> None:
        """Read back every write still in doubt (the Manager calls this on a timer)."""
        for task_id in list(self.doubts):
            self._resolve(task_id)

    def _resolve(self, task_id: str) -> None:
        d = self.doubts.get(task_id)
        if d is None or d.resolving:
            return
        d.resolving = True

        def got(stored: Any, error: CubeError | None) -> None:
            d.resolving = False
            if error is not None:
                log.warning("task %s: %s; the store does not answer yet: %s", task_id[:8], d.describe(), error)
                return
            del self.doubts[task_id]
            if stored is None or stored != unpack(pack(d.task.to_dict())):
                log.info("task %s: the write that got no answer %.1fs ago was not applied (%s)",
                         task_id[:8], time.time() - d.since, d.task.reason)
            else:
                log.info("task %s: the write that got no answer %.1fs ago was applied; adopting it",
                         task_id[:8], time.time() - d.since)
                self.tasks[task_id] = d.task
                self._changed(task_id, d.task)
                if d.event:
                    self._announce(d.previous, d.task, d.event)
                if self.on_adopt:
                    self.on_adopt(d.previous, d.task)
            self._next(task_id)
        # The Store handles requests in order: once it answers this read, the doubtful write is
        # over, and one still queued is past its deadline and will be refused.
        self.store.get(TASKS, task_id, got)
