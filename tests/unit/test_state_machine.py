"""The task state machine: every ordered pair of states against the table in cube/model/state.py."""
from __future__ import annotations

import itertools

import pytest

from cube.model.state import TERMINAL, TRANSITIONS, IllegalTransition, State, can_transition
from cube.model.task import Task

# The book's final state table plus Cube's additions: a task can be stopped before it ran
# (Pending/Scheduled -> Completed), and an operator's restart returns a placed or finished task
# to Pending. Written out here, independently of the code, on purpose.
EXPECTED = {
    (State.SCHEDULED, State.PENDING), (State.RUNNING, State.PENDING),
    (State.COMPLETED, State.PENDING), (State.FAILED, State.PENDING),
    (State.PENDING, State.SCHEDULED), (State.PENDING, State.COMPLETED),
    (State.SCHEDULED, State.SCHEDULED), (State.SCHEDULED, State.RUNNING),
    (State.SCHEDULED, State.FAILED), (State.SCHEDULED, State.COMPLETED),
    (State.RUNNING, State.RUNNING), (State.RUNNING, State.COMPLETED),
    (State.RUNNING, State.FAILED), (State.RUNNING, State.SCHEDULED),
    (State.FAILED, State.SCHEDULED),
}
PAIRS = list(itertools.product(State, State))


def test_table_is_the_documented_one():
    assert {(a, b) for a, dsts in TRANSITIONS.items() for b in dsts} == EXPECTED
    assert set(TRANSITIONS) == set(State)
    assert len(PAIRS) == 25


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS])
def test_transition(src, dst):
    task = Task(id="t-1", name="web", image="img:1", state=src, updated_at=123.0, reason="before")
    legal = (src, dst) in EXPECTED
    assert can_transition(src, dst) is legal
    if legal:
        task.transition(dst, "why")
        assert task.state is dst
        assert task.updated_at > 123.0
        assert task.reason == "why"
    else:
        with pytest.raises(IllegalTransition) as err:
            task.transition(dst, "why")
        assert src.value in str(err.value) and dst.value in str(err.value) and "t-1" in str(err.value)
        assert task.state is src
        assert task.updated_at == 123.0
        assert task.reason == "before"


def test_transition_without_reason_keeps_the_old_one():
    task = Task(id="t", name="n", image="i", reason="kept")
    task.transition(State.SCHEDULED)
    assert task.reason == "kept"


def test_completed_is_left_only_by_a_restart_and_failed_only_rescheduled_or_restarted():
    assert TERMINAL == {State.COMPLETED}
    assert TRANSITIONS[State.COMPLETED] == {State.PENDING}
    assert TRANSITIONS[State.FAILED] == {State.SCHEDULED, State.PENDING}


def test_states_are_strings_as_the_book_spells_them():
    assert [s.value for s in State] == ["Pending", "Scheduled", "Running", "Completed", "Failed"]
    assert str(State.RUNNING) == "Running"
    assert State("Failed") is State.FAILED
