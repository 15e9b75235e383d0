"""The Manager's table of tasks, persisted through the Store before anything is acknowledged.

Every change goes through `commit`: the task is copied, changed, written with its event in one
atomic batch, and only then replaces the in-memory copy and is published. If the Store does not
answer, nothing changes in memory and the caller sees the error (and retries or reports it).
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
from cube.wire.errors import CONFLICT, NOT_FOUND, CubeError

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


class TaskBook:
    def __init__(self, store: Store, publish: Callable[[TaskEvent, Task], None] | None = None):
        self.store = store
        self.publish = publish or (lambda event, task: None)
        self.tasks: dict[str, Task] = {}
        self.seq = 0

    def load(self) -> int:
        """Read every task back from the Store (after a restart); returns how many."""
        self.tasks = {k: Task.from_dict(v) for k, v in self.store.list(TASKS)}
        self.seq = int(self.store.get(META, "event_seq") or 0)
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self.tasks.values()))

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def find(self, ref: str) -> Task:
        """A task by id, unique id prefix or unique name; errors say which it was."""
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
        """Apply `change` to a copy of `task`, persist it (with an event), then adopt it."""
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
        self.store.batch(ops)
        if ev:
            self.seq = ev.seq
        self.tasks[new.id] = new
        if ev:
            log.info("task %s %s: %s%s%s", new.name, new.id[:8],
                     f"{task.state.value} -> " if new.id in self.tasks and task.state != new.state else "",
                     new.state.value, f" ({ev.reason})" if ev.reason else "")
            self.publish(ev, new)
        return new

    def add(self, task: Task, reason: str = "submitted") -> Task:
        return self.commit(task, None, reason)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return [v for _, v in self.store.list(EVENTS, prefix=task_id + "/")]

    def where(self, predicate: Callable[[Task], bool]) -> list[Task]:
        return sorted((t for t in self.tasks.values() if predicate(t)), key=lambda t: (t.created_at, t.id))

    def on_worker(self, worker: str, states: tuple[State, ...] = (State.SCHEDULED, State.RUNNING)) -> list[Task]:
        return self.where(lambda t: t.worker == worker and t.state in states)
