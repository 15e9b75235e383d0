"""Tasks counted as they change, so nobody counts them by walking every task.

`manager.ping {states}` (`cube top`) and the `cube_tasks` / `cube_service_replicas_running`
gauges (docs/architecture.md, "Metrics") read these counts. Walking 100,000 tasks held the
Manager's loop about 40 ms per read; the tally is a TaskBook watcher instead (it sees every
change the book adopts: added, changed, adopted after a doubt, loaded, pruned), O(1) a change.
"""
from __future__ import annotations

import bisect
import collections
from typing import Any

from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task

Replica = tuple[str, int, int]  # (service, version, slot)


class _Slots:
    """Running replicas of one version of a service, by slot: their total, and the slots in order,
    so those outside 1..replicas (a scale-down under way) are found by bisection, not a walk."""

    def __init__(self) -> None:
        self.total = 0
        self.count: dict[int, int] = {}
        self.order: list[int] = []  # the slots with a count, sorted

    def add(self, slot: int, n: int) -> None:
        self.total += n
        left = self.count.get(slot, 0) + n
        if left > 0:
            if slot not in self.count:
                bisect.insort(self.order, slot)
            self.count[slot] = left
        elif slot in self.count:
            del self.count[slot]
            del self.order[bisect.bisect_left(self.order, slot)]

    def within(self, replicas: int) -> int:
        """How many run in slots 1..replicas."""
        n = self.total
        for slot in self.order[:bisect.bisect_right(self.order, 0)]:
            n -= self.count[slot]
        for slot in self.order[bisect.bisect_right(self.order, replicas):]:
            n -= self.count[slot]
        return n


class TaskTally:
    """Tasks by state, and a service's replicas that count as running (`service ls`'s number)."""

    def __init__(self) -> None:
        self.by_state: collections.Counter[State] = collections.Counter()
        self._state_of: dict[str, State] = {}  # task id -> the state counted for it
        # (service, version) -> its Running, desired-running replicas by slot
        self._running: dict[tuple[str, int], _Slots] = {}
        self._replica_of: dict[str, Replica] = {}  # task id -> where it is counted above

    def watch(self, task_id: str, task: Task | None) -> None:
        """A TaskBook watcher: `task` is the version now in memory, None when it was forgotten."""
        old = self._state_of.pop(task_id, None)
        if old is not None:
            self.by_state[old] -= 1
        counted = self._replica_of.pop(task_id, None)
        if counted is not None:
            key = counted[:2]
            slots = self._running[key]
            slots.add(counted[2], -1)
            if not slots.total:
                del self._running[key]
        if task is None:
            return
        self._state_of[task_id] = task.state
        self.by_state[task.state] += 1
        if task.service and task.state == State.RUNNING and task.desired == DESIRED_RUNNING:
            self._replica_of[task_id] = (task.service, task.version, task.slot)
            slots = self._running.get((task.service, task.version))
            if slots is None:
                slots = self._running[(task.service, task.version)] = _Slots()
            slots.add(task.slot, 1)

    def states(self) -> dict[str, int]:
        """Every state named, with its count (the reply of `manager.ping {states: true}`)."""
        return {s.value: self.by_state.get(s, 0) for s in State}

    def running(self, service: Any) -> int:
        """Replicas of `service`'s current version Running in their slots (1..replicas)."""
        slots = self._running.get((service.name, service.version))
        return slots.within(service.replicas) if slots is not None else 0
