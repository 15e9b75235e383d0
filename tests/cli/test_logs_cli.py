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
    assert bodies[0] == {"id": "web", "tail": 0} and len(bodies) == 4
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
