"""The task state machine.

The state table of the book (Build an Orchestrator in Go) plus edges the book lacks: a task
can be stopped before it ever ran (Pending/Scheduled -> Completed), which the book refuses, and
an operator's `cube task restart` returns any placed or finished task to Pending, to be placed
again as a new attempt (Swarm, Nomad and kubectl all have a restart). Restarts by policy travel
Running/Failed -> Scheduled, as in the book's final version.
"""
from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SCHEDULED, State.COMPLETED}),
    State.SCHEDULED: frozenset({State.SCHEDULED, State.RUNNING, State.FAILED, State.COMPLETED, State.PENDING}),
    State.RUNNING: frozenset({State.RUNNING, State.COMPLETED, State.FAILED, State.SCHEDULED, State.PENDING}),
    State.COMPLETED: frozenset({State.PENDING}),  # only by an operator's restart
    State.FAILED: frozenset({State.SCHEDULED, State.PENDING}),
}

TERMINAL = frozenset({State.COMPLETED})  # nothing but an operator's restart leaves it


class IllegalTransition(ValueError):
    """Raised when code asks for a transition the table forbids; it is never applied."""


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]


def check_transition(src: State, dst: State, task_id: str = "") -> None:
    if not can_transition(src, dst):
        log.warning("refused illegal transition %s -> %s for task %s", src, dst, task_id)
        raise IllegalTransition(f"task {task_id or '?'}: cannot go from {src} to {dst}")
