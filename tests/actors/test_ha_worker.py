"""A worker with several managers (docs/ha.md): it follows `not_leader` to the leader, moves on
from a silent manager, and does not obey a command of an older leader's term."""
from __future__ import annotations

from cube.runtime.fake import FakeRuntime
from tests.actors.helpers import envelope
from tests.actors.test_worker_actor import TASK, FakeManager


def not_leader(fm: FakeManager, leader: FakeManager | None) -> None:
    hello = fm.expect(lambda m: m.type == "worker.hello", what="hello")
    named = f"the leader is 127.0.0.1:{leader.port}" if leader else "no leader elected yet; retry in a moment"
    fm.send(hello.error("not_leader", f"not leader: {named}", "fake"))


def accept(fm: FakeManager, term: int) -> None:
    hello = fm.expect(lambda m: m.type == "worker.hello", timeout=8.0, what="hello")
    fm.send(hello.reply({"metrics": "", "heartbeat": 0.2, "grace": 5.0, "term": term}, "fake"))


def test_follows_not_leader_to_the_leader_and_ignores_an_older_term(actors):
    follower, leader = FakeManager(actors), FakeManager(actors)
    runtime = FakeRuntime()
    worker = actors.worker(follower.config, "w1", runtime,
                           manager=f"127.0.0.1:{follower.port},127.0.0.1:{leader.port}")
    not_leader(follower, leader)
    accept(leader, term=7)
    assert leader.command("worker.run", {"spec": TASK, "attempt": 1, "term": 7}).body == {}
    leader.status("task-1", "running")
    assert worker.term == 7
    # A deposed leader (term 5) thawed: its stop is not obeyed; the container keeps running.
    stale = leader.command("worker.stop", {"task_id": "task-1", "attempt": 1, "term": 5})
    assert stale.body == {"ignored": "older term"}
    assert stale_run_ignored(leader)
    leader.idle(0.3)
    assert [c.attempt for c in runtime.list()] == [1]
    # A newer leader is obeyed; a command without a term, once terms were seen, is not a leader's.
    assert leader.command("worker.stop", {"task_id": "task-1", "attempt": 1, "term": 9}).body == {}
    leader.status("task-1", "stopped")
    assert worker.term == 9
    assert leader.command("worker.run", {"spec": {**TASK, "task_id": "task-2"}, "attempt": 1}).body == {
        "ignored": "older term"}


def stale_run_ignored(fm: FakeManager) -> bool:
    reply = fm.command("worker.run", {"spec": {**TASK, "task_id": "task-3"}, "attempt": 1, "term": 6})
    return reply.body == {"ignored": "older term"}


def test_asks_a_follower_again_while_no_leader_is_known(actors):
    only = FakeManager(actors)
    actors.worker(only.config, "w1", manager=f"127.0.0.1:{only.port}")
    not_leader(only, None)
    accept(only, term=3)  # the same manager, elected meanwhile


def test_moves_on_from_a_manager_that_does_not_answer(actors):
    silent, leader = FakeManager(actors), FakeManager(actors)
    actors.worker(silent.config, "w1", manager=f"127.0.0.1:{silent.port},127.0.0.1:{leader.port}")
    silent.expect(lambda m: m.type == "worker.hello", what="hello")  # and no answer
    accept(leader, term=2)
    leader.send(envelope("worker.run", {"spec": TASK, "attempt": 1, "term": 2}, sender="fake"))
    leader.status("task-1", "running")


def test_a_worker_goes_back_to_a_live_leader_it_once_found_silent(actors):
    """Review of issue 13: one lost hello made the leader 'silent'; a follower kept naming it and the
    worker kept asking the follower for good (its tasks placed again elsewhere, its containers kept)."""
    import time

    from cube.wire.link import SILENT_HOLD
    leader, follower = FakeManager(actors), FakeManager(actors)
    actors.worker(leader.config, "w1", manager=f"127.0.0.1:{leader.port},127.0.0.1:{follower.port}")
    leader.expect(lambda m: m.type == "worker.hello", what="hello")  # lost: the leader looks silent
    t0 = time.monotonic()
    while time.monotonic() - t0 < SILENT_HOLD + 10:
        hello = follower._recv(0.1)
        if hello is not None and hello.type == "worker.hello":
            follower.send(hello.error("not_leader", f"not leader: the leader is 127.0.0.1:{leader.port}", "fake"))
        again = leader._recv(0.1)
        if again is not None and again.type == "worker.hello":
            leader.send(again.reply({"metrics": "", "heartbeat": 0.2, "grace": 5.0, "term": 2}, "fake"))
            return
    raise AssertionError("the worker never went back to the leader the follower kept naming")


def test_a_restarted_worker_remembers_the_newest_term_and_ignores_commands_without_one(actors):
    from cube.store.memory import MemoryStore
    leader = FakeManager(actors)
    store = MemoryStore()
    worker = actors.worker(leader.config, "w1", FakeRuntime(), store=store)
    accept(leader, term=5)
    assert leader.command("worker.run", {"spec": TASK, "attempt": 1, "term": 5}).body == {}
    assert leader.command("worker.stop", {"task_id": "task-1", "attempt": 1}).body == {"ignored": "older term"}
    from cube.actors.worker import META
    assert worker.term == 5 and store.get(META, "term") == 5  # what a restart reads back (Worker.__init__)
