"""`cube task start` when the manager answers `unavailable` (its Store did not answer in time):
retried once with the same id, then resolved by id with task.inspect (issue 14, defect D3). A
connection refused at once was never delivered: not retried, and said so (issue 10)."""
from __future__ import annotations

import pytest

from cube.cli import session, submit
from cube.cli.session import CliError, NotReached
from cube.wire.errors import NOT_FOUND, UNAVAILABLE, CubeError


class FakeManager:
    def __init__(self, starts, inspect):
        self.starts = list(starts)  # one outcome per task.start: a reply or an exception
        self.inspect = inspect
        self.calls = []

    def __call__(self, conn, msg_type, body, timeout=session.DEFAULT_TIMEOUT):
        self.calls.append((msg_type, body))
        outcome = self.starts.pop(0) if msg_type == "task.start" else self.inspect
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


STORE_SLOW = CubeError(UNAVAILABLE, "the store did not answer in time; the task may or may not exist")
NO_ANSWER = NotReached("cannot reach the manager at 127.0.0.1:5555 (no answer within 3s)", sent=True)
REFUSED = NotReached("cannot reach the manager at 127.0.0.1:5555: connection refused", sent=False)
CONN = session.Conn("tcp://127.0.0.1:5555", None)


@pytest.fixture
def fake(monkeypatch):
    def install(starts, inspect=None):
        f = FakeManager(starts, inspect)
        monkeypatch.setattr(session, "call", f)
        return f
    return install


def ids(f):
    return {body.get("task", {}).get("id") or body.get("id") for _, body in f.calls}


def start(f):
    return submit.send(CONN, submit.build(None, {"image": "img", "name": "web"}))


def test_a_refused_start_is_retried_with_the_same_id(fake):
    f = fake([STORE_SLOW, {"task": {"id": "abc"}}])
    assert start(f) == {"id": "abc"}
    assert [t for t, _ in f.calls] == ["task.start", "task.start"] and len(ids(f)) == 1


@pytest.mark.parametrize("first", [STORE_SLOW, NO_ANSWER])
def test_two_failures_then_found_by_id_is_a_success(fake, first):
    f = fake([first, STORE_SLOW], inspect={"task": {"id": "placeholder"}, "events": []})
    assert start(f) == {"id": "placeholder"}
    assert [t for t, _ in f.calls] == ["task.start", "task.start", "task.inspect"]
    assert len(ids(f)) == 1  # the inspect asks for the id both starts sent


def test_two_failures_then_not_found_says_it_was_not_created(fake):
    f = fake([STORE_SLOW, STORE_SLOW], inspect=CubeError(NOT_FOUND, "no task with id or name 'x'"))
    with pytest.raises(CliError) as err:
        start(f)
    assert "not created" in str(err.value) and f.calls[-1][0] == "task.inspect"


def test_two_failures_and_no_answer_to_inspect_says_it_is_unknown(fake):
    f = fake([STORE_SLOW, STORE_SLOW], inspect=CubeError(UNAVAILABLE, "may or may not exist"))
    with pytest.raises(CliError) as err:
        start(f)
    tid = f.calls[0][1]["task"]["id"]
    assert "may or may not" in str(err.value) and f"cube task inspect {tid}" in str(err.value)


def test_a_refused_connection_is_not_retried(fake):
    f = fake([REFUSED])
    with pytest.raises(CliError) as err:
        start(f)
    assert len(f.calls) == 1 and "connection refused" in str(err.value) and "was not created" in str(err.value)


def test_other_refusals_are_not_retried(fake):
    f = fake([CubeError("bad_request", "bad image")])
    with pytest.raises(CubeError):
        start(f)
    assert len(f.calls) == 1
