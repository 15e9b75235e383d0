"""`cube task logs` (issue 12, part 2): pages followed by cursor, --follow until the attempt ends,
--attempt, and a failed attempt's last lines in `task inspect` (against the in-memory manager)."""
from __future__ import annotations

from cube.cli import tasks


def scripted(manager, *replies):
    """task.logs answers these in turn (the last one repeats)."""
    queue = list(replies)
    manager.replies["task.logs"] = lambda body: queue.pop(0) if len(queue) > 1 else queue[0]


def page(logs, cursor, more=False, ended=False, attempt=2):
    return {"logs": logs, "cursor": cursor, "more": more, "ended": ended, "attempt": attempt}


def test_pages_are_read_until_none_is_left_without_follow(cube, manager):
    manager.add(name="web")
    scripted(manager, page("a\n", "1:1", more=True), page("b", "2:1"), page("never\n", "3:1"))
    r = cube("task", "logs", "web", "--tail", "all")
    assert r.status == 0 and r.out == "a\nb\n"  # a last line without newline gets one
    [first, second] = [body for _, body in manager.sent("task.logs")]
    assert first == {"id": "web", "tail": tasks.ALL_LINES}
    assert second == {"id": "web", "cursor": "1:1", "attempt": 2}


def test_follow_asks_again_until_the_attempt_has_ended(cube, manager, monkeypatch):
    monkeypatch.setattr(tasks, "FOLLOW_EVERY", 0.01)
    manager.add(name="web")
    scripted(manager, page("one\n", "1:1"), page("", "1:1"), page("two\n", "2:1"),
             page("last\n", "3:1", ended=True), page("never\n", "4:1"))
    r = cube("task", "logs", "web", "-f", "--tail", "0")
    assert r.status == 0 and r.out == "one\ntwo\nlast\n"
    bodies = [body for _, body in manager.sent("task.logs")]
    assert bodies[0] == {"id": "web", "tail": 0, "follow": True} and len(bodies) == 4
    assert all(b["attempt"] == 2 for b in bodies[1:])  # pinned to the attempt first read


def test_attempt_is_sent_and_checked(cube, manager):
    manager.add(name="web")
    scripted(manager, page("first run\n", "1:1", attempt=1, ended=True))
    r = cube("task", "logs", "web", "--attempt", "1")
    assert r.status == 0 and r.out == "first run\n"
    assert manager.sent("task.logs")[0][1] == {"id": "web", "tail": 100, "attempt": 1}
    r = cube("task", "logs", "web", "--attempt", "0")
    assert r.status == 2 and "--attempt" in r.err


def test_follow_takes_one_task(cube, manager):
    manager.add(name="a")
    manager.add(name="b")
    r = cube("task", "logs", "a", "b", "--follow")
    assert r.status == 2 and "one task" in r.err and manager.calls == []


def test_inspect_shows_a_failed_attempts_last_lines(cube, manager):
    manager.add(name="bad", state="Failed", exit_code=3, output="starting\nboom", output_attempt=2,
                ran_on={"1": "w1", "2": "w1"})
    out = cube("task", "inspect", "bad").out
    assert "OUTPUT (last lines of attempt 2" in out and "\n  starting\n  boom\n" in out
    assert "ran_on" not in out and "output_attempt" not in out
    assert out.index("OUTPUT") < out.index("EVENTS")


def test_follow_waits_for_a_task_that_has_not_run_yet(cube, manager, monkeypatch):
    monkeypatch.setattr(tasks, "FOLLOW_EVERY", 0.01)
    manager.add(name="web")
    waiting = {"logs": "", "cursor": "", "more": False, "ended": False, "attempt": 0, "waiting": "Pending: no room"}
    scripted(manager, waiting, waiting, page("hello\n", "1:1", attempt=1, ended=True))
    r = cube("task", "logs", "web", "-f")
    assert r.status == 0 and r.out == "hello\n"
    assert r.err.count("has not run yet (Pending: no room)") == 1
    bodies = [body for _, body in manager.sent("task.logs")]
    assert bodies[:3] == [{"id": "web", "tail": 100, "follow": True}] * 3  # no attempt pinned while waiting


def test_follow_waits_for_a_manager_that_restarts(cube, manager, monkeypatch):
    from cube.cli import session
    from cube.wire.errors import CubeError
    monkeypatch.setattr(tasks, "FOLLOW_EVERY", 0.01)
    monkeypatch.setattr(tasks, "RETRY_EVERY", 0.01)
    manager.add(name="web")
    replies = [page("one\n", "1:1"),
               session.NotReached("cannot reach the manager at 127.0.0.1:5555 (no answer within 8s)", sent=True),
               CubeError("unavailable", "the manager is loading its state; retry in a moment"),
               CubeError("unavailable", "worker w1, which ran attempt 2 of task web, is not connected"),
               page("two\n", "2:1", ended=True)]

    def answer(body):
        r = replies.pop(0)
        if isinstance(r, Exception):
            raise r
        return r
    manager.replies["task.logs"] = answer
    r = cube("task", "logs", "web", "-f")
    assert r.status == 0 and r.out == "one\ntwo\n"
    assert "(no answer within 8s); asking again" in r.err and r.err.count("asking again") == 1
    bodies = [body for _, body in manager.sent("task.logs")]
    assert all(b == {"id": "web", "cursor": "1:1", "attempt": 2, "follow": True} for b in bodies[1:])


def test_without_follow_a_manager_that_does_not_answer_is_an_error(cube, manager):
    from cube.cli import session
    manager.add(name="web")

    def answer(body):
        raise session.NotReached("cannot reach the manager at 127.0.0.1:5555 (no answer within 8s)", sent=True)
    manager.replies["task.logs"] = answer
    r = cube("task", "logs", "web")
    assert r.status == 1 and "cannot reach the manager" in r.err
