"""The Manager's table of tasks, persisted through the Store before anything is acknowledged.

Every change goes through `commit`: the task is copied, changed, written with its event in one
atomic batch, and only then replaces the in-memory copy and is published.

A write the Store refused (an error reply, e.g. `unavailable` for a write past its deadline) was
not applied: nothing changes in memory and the caller sees the error. A write that got no answer
at all may or may not have been applied (the Store may have frozen in the middle of it): the
commit is kept as *in doubt* and, before anything else is written, `resolve_doubt` reads the task
and the event sequence back. If the Store holds the doubtful version it is adopted (memory, event
sequence, published event); otherwise it is dropped. Until the Store answers, commits are refused
(`unavailable`), so no event sequence number is ever written twice. The Manager also calls
`resolve_doubt` on a timer, so memory catches up without waiting for the next commit.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from cube.model.state import State
from cube.model.task import Task
from cube.store import Store
from cube.store.base import pack, unpack
from cube.wire.errors import CONFLICT, NOT_FOUND, UNAVAILABLE, CubeError, Unavailable

log = logging.getLogger(__name__)

TASKS, EVENTS, META = "tasks", "events", "meta"


@dataclass
class TaskEvent:
    seq: int
    task_id: str
    state: str
    time: float
    worker: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Doubt:
    """A commit whose write got no answer: applied before its deadline, or never."""
    task: Task  # the version written
    event: TaskEvent | None
    previous: Task | None  # the version in memory then (None: the write created the task)
    since: float

    def describe(self) -> str:
        if self.previous is None:
            return f"task {self.task.id} may or may not have been created"
        return f"the change to task {self.task.id} ({self.task.reason}) may or may not have been saved"


class TaskBook:
    def __init__(self, store: Store, publish: Callable[[TaskEvent, Task], None] | None = None,
                 on_adopt: Callable[[Task | None, Task], None] | None = None):
        self.store = store
        self.publish = publish or (lambda event, task: None)
        # Called with (version in memory before, adopted version) when a commit that got no answer
        # turns out to have been applied: whatever its caller would have done next was not done.
        self.on_adopt = on_adopt
        self.tasks: dict[str, Task] = {}
        self.seq = 0
        self.doubt: Doubt | None = None

    def load(self) -> int:
        """Read every task back from the Store (after a restart); returns how many."""
        tasks = {k: Task.from_dict(v) for k, v in self.store.list(TASKS)}
        seq = int(self.store.get(META, "event_seq") or 0)
        self.tasks, self.seq, self.doubt = tasks, seq, None  # the Store's word settles any doubt
        return len(self.tasks)

    # ---- writes that got no answer -------------------------------------------------------------
    def resolve_doubt(self) -> bool:
        """Settle a commit whose write got no answer by reading the Store back.

        True when nothing is in doubt any more; False when the Store still does not answer (call
        again later). Safe to call at any time: without a doubt it does nothing.
        """
        d = self.doubt
        if d is None:
            return True
        try:
            # The Store handles one request at a time: once it answers, the doubtful write is over,
            # and one still queued is past its deadline and will be refused.
            stored = self.store.get(TASKS, d.task.id)
            stored_seq = int(self.store.get(META, "event_seq") or 0)
        except CubeError as e:
            log.warning("task %s: %s; the store does not answer yet: %s", d.task.id[:8], d.describe(), e)
            return False
        self.doubt = None
        self.seq = max(self.seq, stored_seq)  # never hand out a number the Store has seen
        if stored is None or stored != unpack(pack(d.task.to_dict())):
            log.info("task %s: the write that got no answer %.1fs ago was not applied (%s)",
                     d.task.id[:8], time.time() - d.since, d.task.reason)
            return True
        log.info("task %s: the write that got no answer %.1fs ago was applied; adopting it",
                 d.task.id[:8], time.time() - d.since)
        self.tasks[d.task.id] = d.task
        if d.event:
            self.seq = max(self.seq, d.event.seq)
            self._announce(d.previous, d.task, d.event)
        if self.on_adopt:
            self.on_adopt(d.previous, d.task)
        return True

    def _settle(self, task: Task) -> Task | None:
        """Before a write: resolve a doubt, or refuse (raise `unavailable`) while it cannot be.

        Returns the version of `task` adopted meanwhile, if any."""
        d = self.doubt
        if d is None:
            return None
        if not self.resolve_doubt():
            if task.id == d.task.id:
                what = d.describe()
            elif task.id in self.tasks:
                what = f"the change to task {task.id} was not saved, retry"
            else:
                what = "the task was not created, retry"
            raise CubeError(UNAVAILABLE, f"the store is not answering (a write it got "
                                         f"{time.time() - d.since:.0f}s ago is unconfirmed); {what}")
        adopted = self.tasks.get(task.id)
        return adopted if adopted is d.task else None

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self.tasks.values()))

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def find(self, ref: str) -> Task:
        """A task by id, unique id prefix or unique name; errors say which it was.

        A task whose creation is in doubt is neither found nor not found until the Store says."""
        d = self.doubt
        if (d is not None and d.previous is None and ref not in self.tasks
                and ((len(ref) >= 4 and d.task.id.startswith(ref)) or ref == d.task.name)):
            if not self.resolve_doubt():
                raise CubeError(UNAVAILABLE, f"the store is not answering; {d.describe()}")
        if ref in self.tasks:
            return self.tasks[ref]
        matches = [t for t in self.tasks.values() if t.id.startswith(ref)] if len(ref) >= 4 else []
        if not matches:
            matches = [t for t in self.tasks.values() if t.name == ref]
            if len(matches) > 1:  # a name reused over time: the live one, else the newest
                live = [t for t in matches if t.desired == "running"]
                matches = live or [max(matches, key=lambda t: t.created_at)]
        if not matches:
            raise CubeError(NOT_FOUND, f"no task with id or name {ref!r}")
        if len(matches) > 1:
            ids = ", ".join(t.id[:12] for t in matches[:5])
            raise CubeError(CONFLICT, f"{ref!r} matches {len(matches)} tasks ({ids}); give more of the id")
        return matches[0]

    def commit(self, task: Task, change: Callable[[Task], None] | None = None,
               reason: str = "", event: bool = True) -> Task:
        """Apply `change` to a copy of `task`, persist it (with an event), then adopt it.

        Raises `unavailable` when the Store does not take it: with "not created / not saved" when
        it was refused, "may or may not" when it got no answer (the commit is then in doubt)."""
        if self._settle(task) is not None:
            # A write on the old version turned out to be applied: the caller decided on stale data.
            raise CubeError(UNAVAILABLE, f"task {task.id} changed meanwhile (a write the store had "
                                         f"not confirmed was applied after all); retry")
        new = copy.deepcopy(task)
        if change:
            change(new)
        new.updated_at = time.time()
        if reason:
            new.reason = reason
        ops: list[tuple[str, str, str, Any]] = [("put", TASKS, new.id, new.to_dict())]
        ev = None
        if event:
            ev = TaskEvent(self.seq + 1, new.id, new.state.value, new.updated_at, new.worker, reason or new.reason)
            ops.append(("put", EVENTS, f"{new.id}/{ev.seq:012d}", ev.to_dict()))
            ops.append(("put", META, "event_seq", ev.seq))
        previous = self.tasks.get(new.id)
        try:
            self.store.batch(ops)
        except Unavailable:  # no answer: applied before its deadline, or never
            self.doubt = Doubt(new, ev, previous, time.time())
            hint = ("retrying with the same id is safe" if previous is None
                    else "it will be known once the store answers")
            raise CubeError(UNAVAILABLE, f"the store did not answer in time; {self.doubt.describe()} "
                                         f"({hint})") from None
        except CubeError as e:
            if e.code == UNAVAILABLE:  # refused: its deadline had passed, so it was not applied
                what = ("the task was not created, retry" if previous is None
                        else f"the change to task {new.id} was not saved, retry")
                raise CubeError(UNAVAILABLE, f"the store did not answer in time; {what}") from None
            raise
        if ev:
            self.seq = ev.seq
        self.tasks[new.id] = new
        if ev:
            self._announce(task if previous is not None else None, new, ev)
        return new

    def _announce(self, old: Task | None, new: Task, ev: TaskEvent) -> None:
        log.info("task %s %s: %s%s%s", new.name, new.id[:8],
                 f"{old.state.value} -> " if old is not None and old.state != new.state else "",
                 new.state.value, f" ({ev.reason})" if ev.reason else "")
        self.publish(ev, new)

    def add(self, task: Task, reason: str = "submitted") -> Task:
        """A new task; a task with the same id (a retried submit) is returned as it is."""
        self._settle(task)
        existing = self.tasks.get(task.id)
        if existing is not None:
            return existing
        return self.commit(task, None, reason)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return [v for _, v in self.store.list(EVENTS, prefix=task_id + "/")]

    def where(self, predicate: Callable[[Task], bool]) -> list[Task]:
        return sorted((t for t in self.tasks.values() if predicate(t)), key=lambda t: (t.created_at, t.id))

    def on_worker(self, worker: str, states: tuple[State, ...] = (State.SCHEDULED, State.RUNNING)) -> list[Task]:
        return self.where(lambda t: t.worker == worker and t.state in states)
