"""task.logs planning (cube/manager/tasklogs.py): which worker, which attempt, ended or not."""
from __future__ import annotations

import pytest

from cube.manager import tasklogs
from cube.model.state import State
from cube.model.task import MAX_RAN_ON, task_from_spec
from cube.wire.envelope import REPLY_OK, Envelope
from cube.wire.errors import CubeError


def task(state=State.RUNNING, attempts=("w1",), **fields):
    t = task_from_spec({"image": "img", "id": "t-1"})
    for n, worker in enumerate(attempts, 1):
        t.attempt = n
        t.ran(n, worker)
        t.worker = worker
    t.state = state
    for k, v in fields.items():
        setattr(t, k, v)
    return t


def error(t, body, connected=lambda w: True) -> CubeError:
    with pytest.raises(CubeError) as e:
        tasklogs.plan(t, body, connected)
    return e.value


def test_the_latest_attempt_by_default_and_an_earlier_one_on_its_own_worker():
    t = task(attempts=("w1", "w2"))
    latest = tasklogs.plan(t, {}, lambda w: True)
    assert (latest.worker, latest.attempt, latest.ended) == ("w2", 2, False)
    assert latest.body == {"task_id": "t-1", "attempt": 2, "tail": 100}
    first = tasklogs.plan(t, {"attempt": 1, "tail": 0, "cursor": "5:1"}, lambda w: True)
    assert (first.worker, first.ended) == ("w1", True)
    assert first.body == {"task_id": "t-1", "attempt": 1, "tail": 0, "cursor": "5:1"}


def test_an_ended_task_and_a_restarted_one_have_ended_attempts():
    assert tasklogs.plan(task(State.FAILED), {}, lambda w: True).ended
    restarted = task(State.PENDING, worker="")  # restart clears the worker; ran_on remembers it
    ask = tasklogs.plan(restarted, {}, lambda w: True)
    assert ask.worker == "w1" and ask.ended


def test_refusals_say_why():
    assert "has not run yet" in error(task(State.PENDING, attempts=()), {}).message
    assert "no attempt 3" in error(task(), {"attempt": 3}).message
    assert error(task(), {"tail": -1}).code == "bad_request"
    gone = error(task(State.FAILED, output="boom", output_attempt=1), {}, connected=lambda w: False)
    assert gone.code == "unavailable" and "worker w1, which ran attempt 1" in gone.message
    assert "cube task inspect" in gone.message


def test_only_the_last_attempts_workers_are_remembered():
    t = task(attempts=[f"w{n}" for n in range(1, MAX_RAN_ON + 6)])
    assert len(t.ran_on) == MAX_RAN_ON and "1" not in t.ran_on
    assert "forgotten" in error(t, {"attempt": 1}).message
    assert tasklogs.plan(t, {"attempt": 6}, lambda w: True).worker == "w6"


def test_a_just_placed_attempt_the_worker_does_not_know_yet_has_no_output_yet():
    ask = tasklogs.plan(task(State.SCHEDULED), {"cursor": "7:2"}, lambda w: True)
    unknown = Envelope("error", {"code": "not_found", "message": "no output"})
    settled = ask.settle(unknown)
    assert settled.type == REPLY_OK and ask.answer(settled.body)["cursor"] == "7:2"
    running = tasklogs.plan(task(State.RUNNING), {}, lambda w: True)
    assert running.settle(unknown) is unknown


def test_a_follower_of_a_task_not_run_yet_is_told_to_wait_unless_it_never_will():
    pending = task(State.PENDING, attempts=(), reason="no room")
    assert tasklogs.not_started(pending, {}) is None  # without follow: the refusal of plan()
    page = tasklogs.not_started(pending, {"follow": True})
    assert page["waiting"] == "Pending: no room" and page["attempt"] == 0 and not page["ended"]
    assert tasklogs.not_started(task(State.FAILED, attempts=()), {"follow": True}) is None  # never will
    assert tasklogs.not_started(task(), {"follow": True}) is None  # it ran: plan() as usual
