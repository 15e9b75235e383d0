"""The task state machine.

The state table of the book (Build an Orchestrator in Go) plus two edges the book lacks: a task
can be stopped before it ever ran (Pending/Scheduled -> Completed), which the book refuses.
Restarts travel Running/Failed -> Scheduled, as in the book's final version.
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
    State.SCHEDULED: frozenset({State.SCHEDULED, State.RUNNING, State.FAILED, State.COMPLETED}),
    State.RUNNING: frozenset({State.RUNNING, State.COMPLETED, State.FAILED, State.SCHEDULED}),
    State.COMPLETED: frozenset(),
    State.FAILED: frozenset({State.SCHEDULED}),
}

TERMINAL = frozenset({State.COMPLETED})


class IllegalTransition(ValueError):
    """Raised when code asks for a transition the table forbids; it is never applied."""


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]


def check_transition(src: State, dst: State, task_id: str = "") -> None:
    if not can_transition(src, dst):
        log.warning("refused illegal transition %s -> %s for task %s", src, dst, task_id)
        raise IllegalTransition(f"task {task_id or '?'}: cannot go from {src} to {dst}")
