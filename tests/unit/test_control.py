"""The Manager's pure logic: restart policy outcomes, reconciliation plans, the worker registry
and the TaskBook (persist first, then change memory), driven through a FakeStore whose answers
the test releases."""
from __future__ import annotations

import pytest

from cube.control import policy, reconcile
from cube.manager.registry import LOST, READY, WorkerRegistry
from cube.manager.taskbook import EVENTS, META, TASKS, TaskBook
from cube.model.state import State
from cube.model.task import DESIRED_STOPPED, RestartPolicy, Task
from cube.wire.errors import BAD_REQUEST, CONFLICT, NOT_FOUND, UNAVAILABLE, CubeError
from tests.unit import fakes
from tests.unit.fakes import Calls, FakeStore


def task(id="t1", state=State.RUNNING, restart="on-failure", max_restarts=3, count=0, backoff=1.0,
         worker="w1", attempt=1, desired="running", name=None, created=0.0) -> Task:
    return Task(id=id, name=name or f"n-{id}", image="img", state=state, worker=worker, attempt=attempt,
                desired=desired, restart=RestartPolicy(restart, max_restarts, backoff, 30.0),
                restart_count=count, created_at=created)


# ---- policy.on_end -------------------------------------------------------------------------------

def test_exit_0_under_on_failure_completes():
    out = policy.on_end(task(), 0, "exited with code 0")
    assert (out.state, out.restart, out.delay) == (State.COMPLETED, False, 0.0)
    assert out.reason == "exited with code 0"


def test_non_zero_restarts_with_doubling_backoff():
    delays = []
    for count in range(3):
        out = policy.on_end(task(count=count, backoff=0.5), 1, "exited with code 1")
        assert out.state is State.FAILED and out.restart
        assert f"restart {count + 1} of 3" in out.reason
        delays.append(out.delay)
    assert delays == [0.5, 1.0, 2.0]


def test_backoff_is_capped():
    t = task(count=9, max_restarts=20, backoff=1.0)
    assert policy.on_end(t, 1, "x").delay == 30.0


def test_max_reached_fails_and_gives_up():
    out = policy.on_end(task(count=3), 137, "exited with code 137")
    assert (out.state, out.restart) == (State.FAILED, False)
    assert "gave up" in out.reason and "exited with code 137" in out.reason


def test_vanished_container_counts_as_a_failure():
    out = policy.on_end(task(), None, "container vanished")
    assert out.state is State.FAILED and out.restart


def test_policy_no_never_restarts():
    out = policy.on_end(task(restart="no"), 1, "exited with code 1")
    assert (out.state, out.restart) == (State.FAILED, False)
    assert "'no'" in out.reason
    assert policy.on_end(task(restart="no"), 0, "exited with code 0").state is State.COMPLETED


def test_always_restarts_on_0():
    out = policy.on_end(task(restart="always"), 0, "exited with code 0")
    assert (out.state, out.restart) == (State.FAILED, True)
    out = policy.on_end(task(restart="always", count=3), 0, "exited with code 0")
    # restarts used up, but it ended well: Completed, and the reason says so (not "on-failure")
    assert (out.state, out.restart) == (State.COMPLETED, False)
    assert "no restart left (3 of 3 under 'always')" in out.reason and "on-failure" not in out.reason


@pytest.mark.parametrize("exit_code", [0, 1, None])
def test_desired_stopped_completes_whatever_happened(exit_code):
    out = policy.on_end(task(desired=DESIRED_STOPPED, restart="always"), exit_code, "exited")
    assert (out.state, out.restart) == (State.COMPLETED, False)
    assert out.reason.startswith("stopped")


# ---- reconcile.plan --------------------------------------------------------------------------------

def rep(task_id, attempt=1, state="running", **kw):
    return {"task_id": task_id, "attempt": attempt, "state": state, "container_id": "c-" + task_id, **kw}


def tasks_of(*ts: Task) -> dict[str, Task]:
    return {t.id: t for t in ts}


def test_plan_unknown_task_is_stopped():
    p = reconcile.plan("w1", [rep("ghost", 4)], {})
    assert p.stop == [("ghost", 4, "unknown task")]
    assert not (p.adopt or p.ended or p.resend or p.vanished)


def test_plan_stale_attempt_is_stopped_and_current_one_resent():
    t = task(state=State.SCHEDULED, attempt=3)
    p = reconcile.plan("w1", [rep("t1", 2)], tasks_of(t))
    assert [(s[0], s[1]) for s in p.stop] == [("t1", 2)] and "attempt 3" in p.stop[0][2]
    assert p.resend == [t]


def test_plan_task_moved_to_another_worker_is_stopped_here():
    t = task(worker="w2", attempt=1)
    p = reconcile.plan("w1", [rep("t1", 1)], tasks_of(t))
    assert [(s[0], s[1]) for s in p.stop] == [("t1", 1)] and "w2" in p.stop[0][2]
    assert not p.adopt and not p.vanished  # w2's copy is w2's business


def test_plan_adopts_a_live_container():
    t = task(state=State.SCHEDULED)
    report = rep("t1", 1, "running")
    p = reconcile.plan("w1", [report], tasks_of(t))
    assert p.adopt == [(t, report)]
    assert not (p.stop or p.resend or p.vanished or p.ended)


@pytest.mark.parametrize("live_state", ["created", "restarting", "paused"])
def test_plan_other_live_states_are_adopted(live_state):
    p = reconcile.plan("w1", [rep("t1", 1, live_state)], tasks_of(task()))
    assert len(p.adopt) == 1


def test_plan_container_that_ended_while_apart():
    t = task()
    report = rep("t1", 1, "exited", exit_code=3)
    p = reconcile.plan("w1", [report], tasks_of(t))
    assert p.ended == [(t, report)] and not p.vanished and not p.stop


def test_plan_stopped_or_ended_task_is_stopped():
    for t in (task(desired=DESIRED_STOPPED), task(state=State.COMPLETED), task(state=State.FAILED)):
        p = reconcile.plan("w1", [rep("t1", 1)], tasks_of(t))
        assert [(s[0], s[1]) for s in p.stop] == [("t1", 1)]
        assert not (p.adopt or p.resend or p.vanished)


def test_plan_resends_scheduled_and_fails_vanished_running():
    sched = task("s1", state=State.SCHEDULED)
    run = task("r1", state=State.RUNNING)
    elsewhere = task("o1", worker="w2")
    pending = task("p1", state=State.PENDING, worker="")
    stopped = task("x1", desired=DESIRED_STOPPED)
    p = reconcile.plan("w1", [], tasks_of(sched, run, elsewhere, pending, stopped))
    assert p.resend == [sched]
    assert p.vanished == [run]
    assert not p.stop and not p.adopt


def test_plan_tolerates_odd_reports():
    p = reconcile.plan("w1", [{"state": "running"}, {"task_id": "t1", "attempt": "1"}], tasks_of(task()))
    assert ("", -1, "unknown task") in p.stop
    assert any(s[0] == "t1" and s[1] == -1 for s in p.stop)  # non-int attempt: never current


# ---- WorkerRegistry --------------------------------------------------------------------------------

def test_registry_expiry_with_explicit_now():
    reg = WorkerRegistry(grace=5.0)
    w1 = reg.hello("w1", "10.0.0.1", 2.0, 1 << 30, 1 << 34)
    w2 = reg.hello("w2", "10.0.0.2", 2.0, 1 << 30, 1 << 34)
    w1.last_seen, w2.last_seen = 100.0, 103.0
    assert reg.expire(now=105.0) == []
    assert reg.expire(now=105.1) == [w1]
    assert w1.state == LOST and reg.lost() == ["w1"] and reg.ready() == ["w2"]
    assert reg.expire(now=105.2) == []  # lost once, reported once
    assert not reg.is_ready("w1") and reg.is_ready("w2") and not reg.is_ready("nobody")
    assert reg.seen("w1") is None  # a lost worker must say hello again
    assert reg.expire(now=108.1) == [w2]


def test_registry_hello_revives_and_keeps_joined_at():
    reg = WorkerRegistry(grace=1.0)
    first = reg.hello("w1", "a", 1.0, 1, 1)
    first.joined_at = 42.0
    reg.expire(now=first.last_seen + 10)
    assert reg.lost() == ["w1"]
    again = reg.hello("w1", "b", 4.0, 2, 2, pid=7)
    assert again.state == READY and again.joined_at == 42.0 and again.address == "b" and again.pid == 7
    assert reg.get("w1") is again and again.route == []  # secure: no route until its key speaks
    assert reg.track_route("w1", [b"\x00conn"]) and again.route == [b"\x00conn"]
    insecure = WorkerRegistry(grace=1.0, named_routes=True)
    assert insecure.hello("w1", "a", 1.0, 1, 1).route == [b"w1"]  # loopback tests: named connections


def test_registry_seen_refreshes():
    reg = WorkerRegistry(grace=1.0)
    rec = reg.hello("w1", "a", 1.0, 1, 1)
    rec.last_seen = 0.0
    assert reg.seen("w1") is rec and rec.last_seen > 0.0
    assert reg.seen("ghost") is None


def test_registry_remember_gives_a_known_worker_one_grace_period_and_time_to_say_hello():
    reg = WorkerRegistry(grace=2.0)
    reg.remember({"name": "old", "address": "x", "cpus": 1.0, "memory": 1, "disk": 1, "last_seen": 5.0})
    rec = reg.get("old")
    assert rec.state == READY and rec.last_seen_wall == 5.0
    assert reg.expire(now=rec.last_seen + 1.0) == []
    assert reg.expire(now=rec.last_seen + 2.5) == [rec]
    live = reg.hello("live", "y", 1.0, 1, 1)
    reg.remember({"name": "live"})  # never overrides a worker that already said hello
    assert reg.get("live") is live
    assert set(rec.to_dict()) >= {"name", "address", "cpus", "memory", "disk", "state", "last_seen"}


# Regression (chaos script 24): a worker remembered after a manager restart, heard from but slow to
# say hello (its hello waits for a container listing), was declared lost and its tasks moved while
# they ran: a double run. Hearing from it restarts its grace period; it is still asked to say hello.
def test_a_remembered_worker_heard_from_is_alive_but_must_still_say_hello():
    reg = WorkerRegistry(grace=2.0)
    reg.remember({"name": "old", "address": "x", "cpus": 1.0, "memory": 1, "disk": 1})
    rec = reg.get("old")
    rec.last_seen -= 1.5
    assert reg.seen("old") is None  # "say hello"
    assert reg.expire(now=rec.last_seen + 1.9) == []  # but its grace period started again
    assert rec.shown_state == "remembered" and not reg.is_ready("old")


# ---- TaskBook (asynchronous: the FakeStore answers when the test says) ----------------------------


@pytest.fixture
def book():
    published = []
    b = TaskBook(FakeStore(), lambda ev, t, _record: published.append((ev, t)))
    b.published = published
    return b


def test_commit_persists_task_and_event_atomically(book):
    t = task(state=State.PENDING, worker="")
    added = fakes.add(book, t)
    assert added is not t and book.get("t1") is added
    backend = book.store.backend
    assert backend.get(TASKS, "t1")["state"] == "Pending"
    first = book.store.requests[0]  # the task, its event (its history, the log) and the sequence number: one batch
    assert first.kind == "batch" and [(op, ns) for op, ns, _, _ in first.ops] == [
        ("put", TASKS), ("put", EVENTS), ("put", "eventlog"), ("put", META)]
    events = fakes.events(book, "t1")
    assert len(events) == 1 and events[0]["state"] == "Pending" and events[0]["reason"] == "submitted"
    assert backend.get(META, "event_seq") == 1

    def scheduled(x: Task) -> None:
        x.transition(State.SCHEDULED)
        x.worker = "w1"
    new = fakes.commit(book, "t1", scheduled, "placed on w1")
    assert added.state is State.PENDING  # the old object is untouched
    assert new.state is State.SCHEDULED and book.get("t1") is new and new.reason == "placed on w1"
    assert Task.from_dict(backend.get(TASKS, "t1")) == new
    assert [e["state"] for e in fakes.events(book, "t1")] == ["Pending", "Scheduled"]
    assert [e["seq"] for e in fakes.events(book, "t1")] == [1, 2]
    assert [(ev.seq, t.state) for ev, t in book.published] == [(1, State.PENDING), (2, State.SCHEDULED)]


def test_commit_without_event(book):
    fakes.add(book, task(state=State.PENDING))
    fakes.commit(book, "t1", None, "still waiting: no node fits", event=False)
    assert book.get("t1").reason == "still waiting: no node fits"
    assert book.store.backend.get(TASKS, "t1")["reason"] == "still waiting: no node fits"
    assert [op[1] for op in book.store.requests[-1].ops] == [TASKS]  # the task alone
    assert len(fakes.events(book, "t1")) == 1 and len(book.published) == 1 and book.seq == 1


def test_events_of_one_task_only(book):
    fakes.add(book, task("abc"))
    fakes.add(book, task("abcd"))
    assert len(fakes.events(book, "abc")) == 1 and fakes.events(book, "abc")[0]["task_id"] == "abc"


@pytest.mark.parametrize("error, says", [
    (CubeError(BAD_REQUEST, "disk full"), "disk full"),
    (CubeError(UNAVAILABLE, "store.batch expired: the write was not applied"), "retry"),
])
def test_a_store_that_refuses_leaves_memory_unchanged(book, error, says):
    t = fakes.add(book, task(state=State.PENDING))
    got = fakes.Calls()
    book.commit("t1", lambda x: x.transition(State.SCHEDULED), "placed", done=got)
    book.store.next("batch").fail(error)
    task_, err = got.one()
    assert task_ is None and err.code == error.code and says in err.message
    added = fakes.Calls()
    book.add(task("t2"), done=added)
    book.store.next("batch").fail(error)
    assert added.one()[0] is None and added.one()[2].code == error.code
    assert book.get("t1") is t and t.state is State.PENDING
    assert book.get("t2") is None and len(book) == 1 and not book.doubts
    assert len(book.published) == 1 and not book.store.pending  # nothing to read back: definite
    assert fakes.commit(book, "t1", lambda x: x.transition(State.SCHEDULED)).state is State.SCHEDULED
    # The refused writes' numbers are not reused: a gap, never a duplicate.
    assert [e["seq"] for e in fakes.events(book, "t1")] == [1, 4]
    assert book.store.seq_writes == [1, 4]


def test_an_illegal_change_leaves_memory_and_store_unchanged(book):
    t = fakes.add(book, task(state=State.PENDING))
    got = fakes.Calls()
    book.commit("t1", lambda x: x.transition(State.RUNNING), done=got)
    assert not book.store.pending  # decided before anything was sent
    task_, err = got.one()
    assert task_ is t and err.code == CONFLICT and "cannot go from Pending to Running" in err.message
    assert book.get("t1") is t and book.store.backend.get(TASKS, "t1")["state"] == "Pending"
    assert len(fakes.events(book, "t1")) == 1 and book.seq == 1
    with pytest.raises(CubeError) as e:
        fakes.commit(book, "nope")
    assert e.value.code == NOT_FOUND


def test_find(book):
    a = fakes.add(book, task("aaaa1111-0000", name="web"))
    b = fakes.add(book, task("aaaa2222-0000", name="db"))
    c = fakes.add(book, task("bbbb3333-0000", name="cache"))
    assert book.find("aaaa1111-0000") is a  # exact id
    assert book.find("aaaa2") is b  # unique prefix
    assert book.find("bbbb") is c
    assert book.find("db") is b  # name
    with pytest.raises(CubeError) as err:
        book.find("aaaa")
    assert err.value.code == CONFLICT and "2 tasks" in err.value.message
    with pytest.raises(CubeError) as err:
        book.find("nothing-like-it")
    assert err.value.code == NOT_FOUND
    with pytest.raises(CubeError) as err:
        book.find("aaa")  # prefixes shorter than 4 are not looked up
    assert err.value.code == NOT_FOUND


def test_find_reused_name_prefers_the_live_task_then_the_newest(book):
    old = fakes.add(book, task("old-0001", name="web", desired=DESIRED_STOPPED, created=1.0))
    new = fakes.add(book, task("new-0002", name="web", desired=DESIRED_STOPPED, created=2.0))
    assert book.find("web") is new
    live = fakes.add(book, task("live-0003", name="web", created=0.5))
    assert book.find("web") is live
    assert old.id != live.id


def test_load_restores_tasks_and_event_sequence(book):
    fakes.add(book, task("t1"))
    fakes.add(book, task("t2", state=State.PENDING))
    fresh = TaskBook(FakeStore(book.store.backend))
    assert fakes.load(fresh) == 2
    assert fresh.get("t1") == book.get("t1") and fresh.seq == 2
    again = fakes.commit(fresh, "t2", None, "again")
    assert book.store.backend.get(META, "event_seq") == 3 and again is fresh.get("t2")
    assert book.store.backend.count(EVENTS) == 3


def test_load_reports_a_store_that_does_not_answer(book):
    got = Calls()
    book.load(got)
    book.store.next("list").lose()
    assert got.one()[0] is None and got.one()[1].code == UNAVAILABLE and len(book) == 0


def test_where_and_on_worker(book):
    fakes.add(book, task("b", state=State.RUNNING, worker="w1", created=2.0))
    fakes.add(book, task("a", state=State.SCHEDULED, worker="w1", created=1.0))
    fakes.add(book, task("c", state=State.FAILED, worker="w1"))
    fakes.add(book, task("d", state=State.RUNNING, worker="w2"))
    assert [t.id for t in book.on_worker("w1")] == ["a", "b"]  # by creation time
    assert [t.id for t in book.where(lambda t: True)] == ["c", "d", "a", "b"]  # (created_at, id)
    assert sorted(t.id for t in book) == ["a", "b", "c", "d"]
