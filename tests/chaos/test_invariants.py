"""The chaos invariants as pure functions of a Snapshot, without a cluster (docs/chaos.md, Invariants).

Each loophole the invariants used to leave open has a case that passed before and must fail now,
next to a clean case that must pass. Containers are stand-ins with the attributes the checks read
from docker SDK objects (.id, .short_id, .status, .labels, .ports / .attrs).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from cube.chaos import invariants as inv
from cube.chaos import runner as chaos_runner
from cube.chaos import script as chaos_script
from cube.chaos import steps as chaos_steps
from cube.chaos.invariants import ACKED, REFUSED, UNANSWERED, Expect, RunWatcher, Snapshot, Window
from cube.chaos.rules import Rule
from cube.scheduling.view import ClusterView
from cube.wire.errors import CubeError, Unavailable

W1, W2 = "xtok-w1", "xtok-w2"


@dataclass
class C:
    """A Docker container as the checks see it."""

    id: str
    task: str
    attempt: int = 1
    worker: str = W1
    status: str = "running"
    ports: dict[str, Any] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:10]

    @property
    def labels(self) -> dict[str, str]:
        return {"cube.task_id": self.task, "cube.attempt": str(self.attempt), "cube.worker": self.worker}


def task(tid: str, state: str = "Running", desired: str = "running", worker: str = W1, attempt: int = 1,
         restart_count: int = 0, container_id: str | None = None, **kw: Any) -> dict[str, Any]:
    t = {"id": tid, "name": f"n-{tid}", "state": state, "desired": desired, "worker": worker,
         "attempt": attempt, "restart_count": restart_count,
         "container_id": container_id if container_id is not None else (f"c-{tid}-{attempt}" if state == "Running" else ""),
         "restart": {"name": "on-failure", "max_restarts": 3}, "exit_code": None, "reason": "",
         "cpu": 0.0, "memory": 0, "ports": [], "host_ports": {}, "updated_at": 1.0}
    t.update(kw)
    return t


def running(tid: str, **kw: Any) -> tuple[dict[str, Any], C]:
    t = task(tid, **kw)
    return t, C(t["container_id"], tid, t["attempt"], t["worker"])


def snap(tasks: list[dict[str, Any]], containers: list[C] = (), expect: dict[str, Expect] | None = None,
         **kw: Any) -> Snapshot:
    by_id = {t["id"]: t for t in tasks}
    s = Snapshot(by_id, list(containers), expect if expect is not None else {t: Expect() for t in by_id},
                 stored={tid: dict(t) for tid, t in by_id.items()}, services={}, stored_services={})
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def problems(name: str, s: Snapshot) -> list[str]:
    return inv.CHECKS[name](s)[0]


# ---- 1. restart accounting ---------------------------------------------------------------------------

def test_a_give_up_no_longer_excuses_an_unaccounted_failure():
    # restart "no", killed once: Failed for good. desired-state accepts it (settled), as before...
    t = task("a", state="Failed", restart={"name": "no", "max_restarts": 3}, exit_code=137)
    s = snap([t])
    assert inv.settled(t) and problems("desired-state", s) == []
    # ...but nothing in the script caused that failure: restarts does not
    assert problems("restarts", s) and "1 failures" in problems("restarts", s)[0]
    # a container step that hit it is an allowance of one
    assert problems("restarts", snap([t], expect={"a": Expect(allowance=1)})) == []


def test_exhausted_restart_budget_needs_that_many_allowed_failures():
    t = task("a", state="Failed", restart_count=3, attempt=4, exit_code=1)
    assert problems("desired-state", snap([t])) == []  # the policy legitimately gave up
    assert len(problems("restarts", snap([t], expect={"a": Expect(allowance=2)}))) == 2
    assert problems("restarts", snap([t], expect={"a": Expect(allowance=4)})) == []


def test_placements_count_even_without_a_restart():
    t, c = running("a", attempt=3)  # placed three times, never counted as a restart
    assert problems("restarts", snap([t], [c])) == [f"a ({t['name']}): placed 3 times but the script caused 0 failures"]
    assert problems("restarts", snap([t], [c], expect={"a": Expect(allowance=2)})) == []


def test_a_completed_task_that_should_run_is_a_failure_but_a_stopped_one_is_not():
    assert problems("restarts", snap([task("a", state="Completed", exit_code=0)]))
    assert problems("restarts", snap([task("a", state="Completed", desired="stopped")])) == []


# ---- 2. refused and unanswered starts -----------------------------------------------------------------

def test_a_refused_start_must_not_be_persisted():
    s = snap([], expect={"r": Expect(start=REFUSED)})
    assert problems("nothing-lost", s) == []
    s.stored = {"r": task("r", state="Pending")}  # the manager said unavailable, the Store applied it later
    assert problems("nothing-lost", s) == ["r: refused but persisted (in the Store)"]
    s2 = snap([task("r", state="Pending")], expect={"r": Expect(start=REFUSED)})
    assert "refused but persisted (in task.ls and the Store)" in problems("nothing-lost", s2)[0]


def test_an_unanswered_start_may_be_absent_but_if_present_is_judged_like_an_acked_one():
    absent = snap([], expect={"u": Expect(start=UNANSWERED)})
    assert all(problems(n, absent) == [] for n in ("desired-state", "nothing-lost", "restarts"))
    stuck = snap([task("u", state="Pending", worker="")], expect={"u": Expect(start=UNANSWERED)})
    assert problems("desired-state", stuck)  # before: never looked at
    failed = snap([task("u", state="Failed", restart_count=3, attempt=4)], expect={"u": Expect(start=UNANSWERED)})
    assert problems("restarts", failed)
    ok_t, ok_c = running("u")
    assert problems("desired-state", snap([ok_t], [ok_c], expect={"u": Expect(start=UNANSWERED)})) == []


def test_an_acknowledged_task_missing_anywhere_is_lost():
    t, c = running("a")
    s = snap([t], [c])
    s.stored = {}
    assert problems("nothing-lost", s) == ["a: acked but not in the Store"]
    assert problems("nothing-lost", snap([], expect={"a": Expect()})) == [
        "a: acknowledged but missing from task.ls", "a: acked but not in the Store"]


class FakeClient:
    """Stands in for cube.wire.client.Client: each call takes the next scripted outcome."""

    script: list[Any] = []

    def __init__(self, *a: Any, **kw: Any) -> None:
        pass

    def call(self, msg_type: str, body: dict[str, Any]) -> dict[str, Any]:
        what = FakeClient.script.pop(0)
        if isinstance(what, Exception):
            raise what
        return what

    def close(self) -> None:
        pass


def fake_run(tasks: list[dict[str, Any]] | None = None) -> chaos_runner.Run:
    cluster = types.SimpleNamespace(token="xtok", endpoints={"api": "tcp://127.0.0.1:1"},
                                    worker_name=lambda s: f"xtok-{s}", worker_names={"w1": W1, "w2": W2},
                                    call=lambda t, b=None, timeout=3.0, endpoint="api": {"tasks": tasks or []},
                                    credentials=lambda: None)
    script = chaos_script.parse({"cluster": {"workers": 2}})
    return chaos_runner.Run(script, cluster, lambda line: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("outcomes,want", [
    ([CubeError("unavailable", "store timed out")] * 4, REFUSED),  # error replies only
    ([Unavailable("no answer"), CubeError("unavailable", "x"), CubeError("unavailable", "x"),
      CubeError("unavailable", "x")], UNANSWERED),
    ([CubeError("unavailable", "x"), Unavailable("no answer"), {"task": {"id": "t", "desired": "running"}}], ACKED),
    ([CubeError("bad_request", "no")], REFUSED),
])
def test_start_outcomes_tell_error_replies_from_no_answer(monkeypatch, outcomes, want):
    monkeypatch.setattr(chaos_runner, "Client", FakeClient)
    monkeypatch.setattr(chaos_runner.time, "sleep", lambda s: None)
    FakeClient.script = list(outcomes)
    run = fake_run()
    reply, error, tries = run.api_tries("task.start", {"task": {"id": "t"}}, retries=3)
    assert run.record_start("t", tries, reply["task"]["desired"] if reply else None) == want
    assert run.expectations()["t"].start == want


def test_a_later_outcome_only_upgrades_what_was_recorded():
    run = fake_run()
    run.record_start("t", ["error"])
    run.record_start("t", ["none"])
    assert run.expect["t"].start == UNANSWERED
    run.record_start("t", ["ok"], "running")
    run.record_start("t", ["error"])
    assert run.expect["t"].start == ACKED and run.acked == {"t": "running"}


# ---- 3. the Store's content ---------------------------------------------------------------------------

def test_the_store_must_hold_what_task_ls_says_field_by_field():
    t, c = running("a")
    s = snap([t], [c])
    assert problems("store-matches", s) == []
    s.stored = {"a": {**t, "state": "Scheduled", "attempt": 2}}  # present, so nothing-lost is happy
    assert problems("nothing-lost", s) == []
    assert problems("store-matches", s)[0].startswith("a: the Store and task.ls differ in attempt, state")
    s.stored = {"a": t, "ghost": task("ghost", state="Pending")}
    assert problems("store-matches", s) == ["ghost: in the Store (Pending) but not in task.ls"]
    s.stored = {}
    assert problems("store-matches", s) == ["a: in task.ls (Running) but not in the Store"]


# ---- 4. worker-side state -------------------------------------------------------------------------------

def node_rows(task_ids: dict[str, list[str]], cpu: dict[str, float], memory: dict[str, int] | None = None):
    nodes = {w: {"name": w, "state": "ready", "address": "127.0.0.1"} for w in task_ids}
    sched = {w: {"name": w, "state": "alive", "task_ids": ids,
                 "reserved": {"cpu": cpu.get(w, 0.0), "memory": (memory or {}).get(w, 0), "disk": 0}}
             for w, ids in task_ids.items()}
    return nodes, sched


def test_a_worker_keeping_a_slot_for_a_completed_task_is_caught():
    a, ca = running("a", cpu=0.5, memory=1000)
    done = task("d", state="Completed", cpu=0.25)
    nodes, sched = node_rows({W1: ["a", "d"]}, {W1: 0.75}, {W1: 1000})
    s = snap([a, done], [ca], nodes=nodes, sched=sched)
    assert problems("single-container", s) == [] and problems("no-leftovers", s) == []
    assert problems("worker-slots", s) == [
        f"worker {W1}: keeps a slot for d (Completed, desired running, on {W1})",
        f"worker {W1}: reserves 0.75 cpu, its tasks ask for 0.5"]
    nodes, sched = node_rows({W1: ["a"]}, {W1: 0.1 + 0.2 + 0.2}, {W1: 1000})  # 0.5 with float noise
    assert problems("worker-slots", snap([a, done], [ca], nodes=nodes, sched=sched)) == []


def test_worker_slots_reads_memory_and_missing_slots_and_skips_workers_that_are_not_live():
    a, ca = running("a", memory=1000)
    nodes, sched = node_rows({W1: []}, {W1: 0.0}, {W1: 5})
    assert problems("worker-slots", snap([a], [ca], nodes=nodes, sched=sched)) == [
        f"worker {W1}: no slot for a (Running there)", f"worker {W1}: reserves 5 bytes, its tasks ask for 1000"]
    nodes[W1]["state"] = "remembered"
    assert problems("worker-slots", snap([a], [ca], nodes=nodes, sched=sched)) == []


def test_worker_slots_needs_a_sample_newer_than_the_previous_round():
    # Before: any sample the Scheduler still called alive (up to 5 s old) was read, so both
    # "clean" rounds of settle could read the same sample, taken before the cluster settled.
    a, ca = running("a")
    nodes, sched = node_rows({W1: ["a"]}, {})
    sched[W1]["age"] = 1.5
    s = snap([a], [ca], nodes=nodes, sched=sched)
    assert problems("worker-slots", s) == []  # the first round: nothing to be newer than
    s.since_previous = 1.2
    assert problems("worker-slots", s) == [
        f"worker {W1}: no fresh sample yet (the latest is 1.5s old, the previous round looked 1.20s ago)"]
    sched[W1]["age"] = 0.3
    assert problems("worker-slots", s) == []


def test_settle_hands_each_round_the_time_since_the_previous_one(monkeypatch):
    monkeypatch.setattr(inv.time, "sleep", lambda s: None)
    a, ca = running("a")

    def round_(taken: float, age: float) -> Snapshot:
        nodes, sched = node_rows({W1: ["a"]}, {})
        sched[W1]["age"] = age
        return snap([a], [ca], nodes=nodes, sched=sched, taken=taken)
    # the same sample read twice (its age grows with the time between the looks), then fresh ones
    rounds = [round_(10.0, 0.3), round_(11.2, 1.5), round_(11.7, 0.2), round_(12.8, 0.3)]
    it = iter(rounds)
    results, _ = inv.settle(lambda: next(it), bound=30, names=["worker-slots"], gap=0.0)
    assert results["worker-slots"][0] == [] and next(it, None) is None  # all four rounds were needed
    assert [r.since_previous for r in rounds] == [None, pytest.approx(1.2), pytest.approx(0.5), pytest.approx(1.1)]


def test_describe_rows_carry_the_samples_reserved_and_task_ids():
    view = ClusterView()
    view.update({"name": "n1", "ts": 1.0, "seq": 1, "cpus": 4, "memory": 100, "disk": 100,
                 "reserved": {"cpu": 1.5, "memory": 10, "disk": 0}, "task_ids": ["b", "a"]}, now=0.0)
    row = view.describe(now=0.5)[0]
    assert row["reserved"] == {"cpu": 1.5, "memory": 10, "disk": 0} and row["task_ids"] == ["a", "b"]


# ---- 5. / 6. containers in any state ----------------------------------------------------------------------

def test_an_exited_leftover_next_to_the_running_container_is_caught():
    t, c = running("a", attempt=2)
    old = C("c-old", "a", attempt=1, status="exited")
    assert problems("single-container", snap([t], [c])) == []
    assert problems("single-container", snap([t], [c, old])) == [
        "a: 1 more containers besides its own: c-old (exited, attempt 1 on xtok-w1)"]


def test_the_running_container_must_be_the_tasks_own_attempt_and_worker():
    t = task("a", attempt=2, worker=W2, container_id="c1")
    wrong = C("c1", "a", attempt=1, worker=W1)
    got = problems("single-container", snap([t], [wrong]))
    assert len(got) == 2 and "attempt 1" in got[0] and f"worker {W1}" in got[1]
    assert problems("single-container", snap([t], [C("c1", "a", attempt=2, worker=W2, status="paused")])) == [
        "a: Running but its container c1 is paused"]
    assert problems("single-container", snap([t], [])) == [f"a: Running on {W2} but its container c1 is not in Docker"]


@pytest.mark.parametrize("t", [
    task("a", state="Completed", exit_code=0),  # finished for good, desired running
    task("a", state="Failed", restart={"name": "no"}, exit_code=1),
    task("a", state="Completed", desired="stopped"),
    task("a", state="Pending", worker=""),
])
def test_a_task_that_must_have_no_container_has_none_in_any_state(t):
    for status in ("exited", "created", "dead", "running"):
        got = problems("no-leftovers", snap([t], [C("c9", "a", status=status)]))
        assert len(got) == 1 and "left for task a" in got[0], (status, got)
    assert problems("no-leftovers", snap([t], [])) == []


def test_containers_of_unknown_tasks_and_stale_attempts_of_scheduled_tasks():
    assert problems("no-leftovers", snap([], [C("c1", "zz", status="exited")])) == [
        "container c1 (exited, attempt 1 on xtok-w1) for task zz the manager does not know"]
    sched = task("a", state="Scheduled", attempt=2, worker=W2)
    assert problems("no-leftovers", snap([sched], [C("c2", "a", attempt=2, worker=W2, status="created")])) == []
    assert problems("no-leftovers", snap([sched], [C("c1", "a", attempt=1, worker=W1, status="exited")]))


# ---- 7. consistent, stable snapshots and the Docker watcher -----------------------------------------------

class FakeTarget:
    def __init__(self, ls: list[list[dict[str, Any]]]):
        self.ls = ls
        self.calls: list[str] = []

    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             endpoint: str = "api") -> dict[str, Any]:
        self.calls.append(msg_type)
        if msg_type == "task.ls":
            return {"tasks": self.ls.pop(0) if len(self.ls) > 1 else self.ls[0]}
        if msg_type == "store.list":
            return {"items": [], "more": False}
        if msg_type == "service.ls":
            return {"services": [], "continue": ""}
        if msg_type in ("sched.nodes", "node.ls"):
            return {"nodes": []}
        return {}

    def containers(self, all_: bool = True) -> list[Any]:
        return []


def test_a_snapshot_is_bracketed_by_two_task_ls_and_retaken_when_they_differ(monkeypatch):
    monkeypatch.setattr(inv.time, "sleep", lambda s: None)
    a1, a2 = task("a", state="Scheduled"), task("a", updated_at=2.0)
    target = FakeTarget([[a1], [a2], [a2], [a2]])
    s = inv.snapshot(target, {}, [])
    assert s.errors == [] and s.tasks["a"]["state"] == "Running"
    assert target.calls[:8] == ["task.ls", "store.list", "service.ls", "store.list", "sched.nodes", "node.ls",
                                "task.ls", "task.ls"]
    moving = FakeTarget([[task("a", updated_at=float(i))] for i in range(10)])
    s = inv.snapshot(moving, {}, [], tries=3)
    assert s.errors and "no consistent look" in s.errors[0]
    assert inv.evaluate(s, ["desired-state"])["desired-state"][0]  # an inconsistent look never passes


def test_a_snapshot_keeps_each_judged_tasks_events_and_when_it_read_the_scheduler(monkeypatch):
    monkeypatch.setattr(inv.time, "sleep", lambda s: None)
    events = [ev(1, "Scheduled", 1.0), ev(2, "Running", 2.0)]

    class Inspecting(FakeTarget):
        def call(self, msg_type, body=None, timeout=3.0, endpoint="api"):
            if msg_type == "task.inspect":
                return {"task": task("a"), "events": events}
            return super().call(msg_type, body, timeout, endpoint)
    w = [Window(W1, "paused", 1.5, 3.0)]
    s = inv.snapshot(Inspecting([[task("a")]]), {"a": Expect()}, [], windows=w, slack=5.0)
    assert s.events == {"a": events} and s.taken is not None and s.windows == w and s.slack == 5.0
    assert s.disrupted("a") == [f"on {W1} during paused"]


def test_settle_needs_two_clean_rounds_a_gap_apart(monkeypatch):
    t, c = running("a")
    clean, dirty = snap([t], [c]), snap([t], [])  # the container flickers away
    rounds = iter([clean, dirty, clean, clean])
    seen: list[Snapshot] = []

    def collect() -> Snapshot:
        seen.append(next(rounds))
        return seen[-1]
    results, _ = inv.settle(collect, bound=30, names=["single-container"], gap=0.01)
    assert len(seen) == 4 and results["single-container"][0] == []  # the first clean round did not win


def test_settle_gives_a_clean_round_its_confirmation_even_past_the_bound():
    t, c = running("a")
    rounds = iter([snap([t], [c]), snap([t], [])])
    results, _ = inv.settle(lambda: next(rounds), bound=0, names=["single-container"], gap=0.01)
    assert results["single-container"][0]  # the confirming round failed: the cluster was not stable


def test_settle_stops_waiting_only_for_a_recorded_double_run():
    t, c = running("a")
    recorded = snap([t], [c], double_runs=["a: two containers of the same attempt"], watched={c.id})
    calls = []
    results, _ = inv.settle(lambda: calls.append(1) or recorded, bound=30, names=["no-double-run"])
    assert len(calls) == 1 and results["no-double-run"][0] == recorded.double_runs
    unseen = iter([snap([t], [c], watched=set()), snap([t], [c], watched={c.id}), snap([t], [c], watched={c.id})])
    results, _ = inv.settle(lambda: next(unseen), bound=30, names=["no-double-run"], gap=0.01)
    assert results["no-double-run"][0] == []  # the watcher was late, not blind: waited for it


def test_the_watcher_records_two_running_containers_of_one_task():
    disrupted: set[str] = set()
    w = RunWatcher("xtok", lambda worker, at: worker in disrupted)
    labels = lambda att, wk: {"cube.task_id": "a", "cube.attempt": str(att), "cube.worker": wk}  # noqa: E731
    w.feed("start", "c1", labels(1, W1))
    w.feed("start", "c2", labels(2, W2))  # W1 was not disrupted: a double run
    assert len(w.recorded()) == 1 and "not in a disruption window" in w.recorded()[0]
    w.feed("die", "c1", labels(1, W1))
    w.feed("die", "c2", labels(2, W2))
    disrupted.add(W1)
    w.feed("start", "c3", labels(3, W1))
    w.feed("start", "c4", labels(4, W2))  # the old one is on a disrupted worker: a partition, excused
    assert len(w.recorded()) == 1 and w.excused == 1
    w.feed("start", "c5", labels(4, W1))  # the same attempt twice is never excused (c3 still is)
    assert len(w.recorded()) == 2 and "same attempt" in w.recorded()[-1] and w.excused == 2
    w.feed("start", "cx", {"cube.task_id": "a", "cube.attempt": "1", "cube.worker": "other-w1"})
    assert len(w.recorded()) == 2  # another cluster's container
    assert w.running_ids() == {"c3", "c4", "c5"}


def test_an_overlap_is_excused_only_while_the_old_workers_window_lasts():
    # Before: `disrupted` was a set that only grew, so W1 paused once excused any later overlap.
    run = fake_run()  # grace 2 s: a window counts until its end + 2 + 3 s
    run.windows.append(Window(W1, "paused", 100.0, 110.0, "paused:w1"))
    w = RunWatcher("xtok", run.disrupted_at)
    labels = lambda att, wk: {"cube.task_id": "a", "cube.attempt": str(att), "cube.worker": wk}  # noqa: E731
    w.feed("start", "c1", labels(1, W1), at=90.0)
    w.feed("start", "c2", labels(2, W2), at=114.0)  # inside the window + grace + margin: excused
    assert w.recorded() == [] and w.excused == 1
    w.feed("die", "c2", labels(2, W2), at=114.5)
    w.feed("start", "c3", labels(3, W2), at=116.0)  # after it: the old container should be gone
    assert w.excused == 1 and len(w.recorded()) == 1 and "not in a disruption window" in w.recorded()[0]
    w.feed("start", "c4", labels(3, W1), at=105.0)  # same attempt: never excused, window or not
    assert "same attempt" in w.recorded()[-1]
    # a window of the NEW container's worker excuses nothing
    run2 = fake_run()
    run2.windows.append(Window(W2, "paused", 100.0, None, "paused:w2"))
    w2 = RunWatcher("xtok", run2.disrupted_at)
    w2.feed("start", "c1", labels(1, W1), at=90.0)
    w2.feed("start", "c2", labels(2, W2), at=101.0)
    assert len(w2.recorded()) == 1 and w2.excused == 0
    assert run2.disrupted_at(W2, 1e12) and not run2.disrupted_at(W2, 99.0)  # open: until the end of the run


def test_pause_and_destroy_end_a_run_and_the_watcher_must_have_seen_every_running_container():
    w = RunWatcher("xtok", lambda worker, at: False)
    lab = {"cube.task_id": "a", "cube.attempt": "1", "cube.worker": W1}
    w.feed("start", "c1", lab)
    w.feed("pause", "c1", lab)
    w.feed("start", "c2", {**lab, "cube.attempt": "2"})
    w.feed("destroy", "c2", lab)
    w.feed("unpause", "c1", lab)
    assert w.recorded() == []
    t, c = running("a", container_id="c1")
    s = snap([t], [C("c1", "a"), ], watched=w.running_ids(), double_runs=w.recorded())
    assert problems("no-double-run", s) == []
    s.watched = set()  # the watcher missed it: the check cannot vouch for anything
    assert "did not see it start" in problems("no-double-run", s)[0]


# ---- 8. host ports ---------------------------------------------------------------------------------------

def test_host_ports_must_be_the_containers_real_bindings_and_unique():
    bind = lambda p: {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(p)}, {"HostIp": "::", "HostPort": str(p)}]}  # noqa: E731
    a = task("a", ports=["8080/tcp"], host_ports={"8080/tcp": 32001}, container_id="ca")
    b = task("b", ports=["8080/tcp"], host_ports={"8080/tcp": 32002}, worker=W2, container_id="cb")
    ca, cb = C("ca", "a", ports=bind(32001)), C("cb", "b", worker=W2, ports=bind(32002))
    nodes = {W1: {"address": "127.0.0.1"}, W2: {"address": "127.0.0.1"}}
    assert problems("host-ports", snap([a, b], [ca, cb], nodes=nodes)) == []
    lying = C("ca", "a", ports=bind(40000))
    assert problems("host-ports", snap([a, b], [lying, cb], nodes=nodes)) == [
        "a: host_ports[8080/tcp] = 32001 but Docker publishes it on [40000]"]
    b2 = {**b, "host_ports": {"8080/tcp": 32001}}
    attrs_only = C("cb", "b", worker=W2, attrs={"NetworkSettings": {"Ports": bind(32001)}})
    attrs_only.ports = None
    assert problems("host-ports", snap([a, b2], [ca, attrs_only], nodes=nodes)) == [
        "host port 32001/tcp on 127.0.0.1 used by both a and b"]
    assert problems("host-ports", snap([{**a, "host_ports": {}}], [ca], nodes=nodes)) == [
        "a: port 8080/tcp missing from host_ports (Docker publishes it on [32001])"]


# ---- 10. stops that got no answer ------------------------------------------------------------------------

def test_an_unanswered_stop_makes_stopped_acceptable_too():
    t = task("a", state="Completed", desired="stopped")
    assert problems("desired-state", snap([t], expect={"a": Expect(desired="running")}))  # a false positive before
    assert problems("desired-state", snap([t], expect={"a": Expect(desired="running", doubt={"stopped"})})) == []
    r, c = running("a")
    assert problems("desired-state", snap([r], [c], expect={"a": Expect(desired="running", doubt={"stopped"})})) == []
    half = task("a", state="Running", desired="stopped")  # applied, but not done: judged as stopped
    assert problems("desired-state", snap([half], expect={"a": Expect(desired="running", doubt={"stopped"})}))


def test_the_stop_step_records_doubt_only_when_no_answer_came(monkeypatch):
    monkeypatch.setattr(chaos_runner, "Client", FakeClient)
    monkeypatch.setattr(chaos_runner.time, "sleep", lambda s: None)
    run = fake_run()
    run.acknowledge("a", "running")
    run.acknowledge("b", "running")
    step = chaos_script.Step(1, "stop", {"task": "a", "expect": "any", "retries": 1})
    FakeClient.script = [Unavailable("no answer"), CubeError("unavailable", "store")]
    chaos_steps.stop(run, step)
    FakeClient.script = [CubeError("unavailable", "store"), CubeError("unavailable", "store")]
    chaos_steps.stop(run, chaos_script.Step(2, "stop", {"task": "b", "expect": "any", "retries": 1}))
    assert run.expect["a"].acceptable() == {"running", "stopped"}
    assert run.expect["b"].acceptable() == {"running"}  # refused outright: must not be applied


# ---- the runner's accounting ------------------------------------------------------------------------------

class FakeRules:
    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        self.rules = [r for r in self.rules if r.id != rule.id] + [rule]

    def remove(self, rule_id: str | None = None) -> int:
        before = len(self.rules)
        self.rules = [] if rule_id is None else [r for r in self.rules if r.id != rule_id]
        return before - len(self.rules)


def steps_run(monkeypatch) -> chaos_runner.Run:
    """A Run whose cluster takes signals, rules and restarts without processes."""
    monkeypatch.setattr(chaos_steps.time, "sleep", lambda s: None)
    run = fake_run()
    run.cluster.rules = FakeRules()
    run.cluster.signal = lambda target, sig: 4242
    run.cluster.alive = lambda target: False
    run.cluster.start_worker = lambda short, wait=True: f"xtok-{short}"
    return run


def step(do: str, **args: Any) -> chaos_script.Step:
    return chaos_script.parse({"cluster": {"workers": 2}, "step": [{"do": do, **args}]}).steps[0]


def open_windows(run: chaos_runner.Run) -> list[tuple[str, str]]:
    return [(w.worker, w.key) for w in run.windows if w.end is None]


def test_pauses_kills_and_rules_open_windows_that_their_end_closes(monkeypatch):
    run = steps_run(monkeypatch)
    chaos_steps.pause(run, step("pause", target="w1"))
    assert open_windows(run) == [(W1, "paused:w1")]
    chaos_steps.resume(run, step("resume", target="w1"))
    chaos_steps.pause(run, step("pause", target="w2", **{"for": 1.0}))  # resumed within the step
    chaos_steps.pause(run, step("pause", target="store"))  # not a worker: no window
    assert open_windows(run) == [] and len(run.windows) == 2
    chaos_steps.kill(run, step("kill", target="w1"))
    assert open_windows(run) == [(W1, "down:w1")]
    chaos_steps.restart(run, step("restart", target="w1"))
    assert open_windows(run) == []
    chaos_steps.fault(run, step("fault", action="drop", to="w2", type="ok", **{"for": 3.0}))
    rule_window, until = run.windows[-1], run.cluster.rules.rules[0].until
    assert rule_window.key == "rule:r1" and rule_window.worker == W2 and rule_window.end == until
    chaos_steps.fault(run, step("fault", action="drop", **{"from": "w1"}, type="worker.heartbeat", count=5))
    assert open_windows(run) == [(W1, "rule:r2")]  # count only: until cleared (or the end of the run)
    chaos_steps.clear(run, step("clear"))
    assert open_windows(run) == [] and rule_window.end < until  # cleared before its `for` ended
    n = len(run.windows)
    chaos_steps.fault(run, step("fault", action="delay", **{"from": "w1"}, type="worker.hello", delay=1.8, count=1))
    chaos_steps.fault(run, step("fault", action="duplicate", to="w1", type="*", count=1))
    chaos_steps.fault(run, step("fault", action="drop", **{"from": "manager"}, type="worker.run", count=1))
    assert len(run.windows) == n  # none of those can make a worker look lost
    chaos_steps.kill(run, step("kill", target="w2", signal="STOP"))
    assert open_windows(run) == [(W2, "paused:w2")] and "w2" in run.paused
    chaos_steps.kill(run, step("kill", target="w2", signal="CONT"))
    assert open_windows(run) == []


@pytest.mark.parametrize("rule,disrupts", [
    (Rule("r", "delay", sender=W1, type="worker.hello", delay=1.8), False),  # a late hello is answered late
    (Rule("r", "drop", sender=W1, type="worker.hello"), True),
    (Rule("r", "delay", sender=W1, type="worker.heartbeat", delay=1.2), True),
    (Rule("r", "delay", sender=W1, type="worker.*", delay=2.5), True),
    (Rule("r", "reorder", sender=W1, type="task.status"), True),
    (Rule("r", "corrupt", sender=W1, type="*"), True),
    (Rule("r", "duplicate", sender=W1, type="*"), False),  # a copy more never looks like a loss
    (Rule("r", "drop", sender="manager", to=W1, type="ok"), True),  # replies to its hello, heartbeats, statuses
    (Rule("r", "delay", sender="*", to=W1, type="ok", delay=0.8), True),
    (Rule("r", "drop", sender=W1, type="ok"), False),  # the worker's acks of commands: commands are re-sent
    (Rule("r", "corrupt", sender="manager", to=W1, type="worker.run"), False),
    (Rule("r", "drop", sender="manager", to=W1, type="task.event"), False),
    (Rule("r", "drop", sender="store", to=W1, type="ok"), False),  # only the manager talks to workers
    (Rule("r", "drop", sender=W2, type="*"), False),
])
def test_only_rules_that_can_make_a_worker_look_lost_disrupt_it(rule, disrupts):
    assert inv.rule_disrupts(rule, W1) is disrupts
    assert inv.rule_disrupts(rule, W1, named=False) is False  # a rule must name the worker


def ev(seq: int, state: str, at: float, worker: str = W1) -> dict[str, Any]:
    return {"seq": seq, "task_id": "a", "state": state, "time": at, "worker": worker, "reason": ""}


def test_placements_are_read_from_the_tasks_events():
    events = [ev(1, "Pending", 1.0, ""), ev(2, "Scheduled", 2.0), ev(3, "Running", 3.0), ev(4, "Failed", 5.0),
              ev(5, "Scheduled", 6.0, W2), ev(6, "Running", 7.0, W2), ev(7, "Scheduled", 8.0, W2),
              ev(8, "Running", 9.0, W2)]
    assert inv.placements(reversed(events), now=20.0) == [(W1, 2.0, 5.0), (W2, 6.0, 8.0), (W2, 8.0, 20.0)]


def test_a_task_placed_on_a_worker_during_its_disruption_may_fail_once():
    # Before: allowances were counted when the step ran, for the tasks on the worker at that
    # moment: a task placed there a second later got none (a flake), a harmless rule gave one.
    pause = Window(W1, "paused", 100.0, 104.0, "paused:w1")  # grace 2 + 3: counts until 109
    moved = task("a", worker=W2, attempt=2, restart_count=1)
    placed_late = [ev(1, "Pending", 99.0, ""), ev(2, "Scheduled", 101.0), ev(3, "Failed", 103.0),
                   ev(4, "Scheduled", 103.5, W2), ev(5, "Running", 104.0, W2)]
    s = snap([moved], windows=[pause], slack=5.0, events={"a": placed_late}, at=200.0)
    assert problems("restarts", s) == []
    s.windows = [Window(W2, "paused", 90.0, 95.0)]  # the other worker's, over before it got there
    assert problems("restarts", s) == [
        "a (n-a): 1 failures (restart_count 1, Running, desired running) but the script caused 0 ()",
        "a (n-a): placed 2 times but the script caused 0 failures"]
    after = [ev(1, "Scheduled", 110.0), ev(2, "Failed", 111.0), ev(3, "Scheduled", 112.0, W2),
             ev(4, "Running", 112.5, W2)]
    s = snap([moved], windows=[pause], slack=5.0, events={"a": after}, at=200.0)
    got = problems("restarts", s)  # placed on W1 after the window (and its slack) closed
    assert len(got) == 2 and "caused 0" in got[0]
    twice = [Window(W1, "paused", 100.0, 104.0), Window(W1, "rule r1", 101.0, 102.0)]
    s = snap([task("a", attempt=3, restart_count=2)], windows=twice, slack=5.0,
             events={"a": [ev(1, "Scheduled", 101.0), ev(2, "Running", 102.0)]}, at=200.0)
    assert len(problems("restarts", s)) == 2  # one placement can fail once, however many windows it met


def test_fault_targets_are_the_workers_named_in_from_or_to():
    assert inv.rule_targets(W1, None, [W1, W2]) == {W1}
    assert inv.rule_targets("manager", W2, [W1, W2]) == {W2}
    assert inv.rule_targets("manager", None, [W1, W2]) == set()
    assert inv.rule_targets("xtok-w*", None, [W1, W2]) == {W1, W2}


def test_allow_and_start_restarts_are_parsed_and_checked(tmp_path):
    s = chaos_script.parse({"step": [{"do": "start", "as": "a", "restarts": 2},
                                     {"do": "allow", "task": "a", "restarts": 1}]})
    assert [st.do for st in s.steps] == ["start", "allow"]
    for bad, needle in ((({"do": "allow", "task": "a"}), "'restarts' is required"),
                        ({"do": "allow", "restarts": 1}, "'task' is required"),
                        ({"do": "start", "restarts": -1}, "whole number")):
        with pytest.raises(chaos_script.ScriptError) as e:
            chaos_script.parse({"step": [bad]})
        assert needle in str(e.value)
    run = fake_run()
    run.aliases["a"] = ["t1", "t2"]
    assert chaos_steps.allow(run, chaos_script.Step(1, "allow", {"task": "a", "restarts": 2})) == "2 tasks may fail 2 more times"
    assert run.expectations() == {} and dict(run.allowance) == {"t1": 2, "t2": 2}


def test_log_checks_count_lines_of_a_processs_log(monkeypatch):
    monkeypatch.setattr(chaos_steps.time, "sleep", lambda s: None)
    run = fake_run()
    run.aliases["t"] = ["task-1"]
    logs = {"worker-w1": "x\nworker xtok-w1: ignored a run of attempt 1 of task-1: it is being stopped\n",
            "manager": "manager: reconcile xtok-w1: hello snapshot older than what is known of task-1; left as it is\n"}
    run.cluster.log = lambda name: logs.get(name, "")
    ok = step("assert", log=[{"target": "w1", "contains": "ignored a run of attempt 1 of ${t}: it is being stopped"},
                             {"target": "manager", "contains": "older than what is known of", "count": 1},
                             {"target": "w2", "contains": "ignored", "count": 0}])
    assert "worker-w1.log" in chaos_steps.check_assert(run, ok)
    with pytest.raises(chaos_steps.StepFailed) as e:
        chaos_steps.check_assert(run, step("assert", log={"target": "store", "contains": "older", "count": ">=2"}))
    assert "manager.log has 1 lines containing 'older', expected >=2" in str(e.value)
    with pytest.raises(chaos_steps.StepFailed) as e:  # wait polls until the timeout
        chaos_steps.wait(run, step("wait", log={"target": "w2", "contains": "ignored"}, timeout=0.05))
    assert "worker-w2.log has 0 lines" in str(e.value)
    assert "found" in chaos_steps.wait(run, step("wait", log={"target": "w1", "contains": "ignored"}))
    for bad, needle in (({"target": "w1"}, "needs contains"), ({"target": "w1", "contains": "x", "n": 1}, "unknown key"),
                        ("text", "must be a table")):
        with pytest.raises(chaos_script.ScriptError) as e:
            chaos_script.parse({"step": [{"do": "assert", "log": bad}]})
        assert needle in str(e.value)
    assert chaos_script.parse({"cluster": {"stop_timeout": 5}}).cluster.stop_timeout == 5.0


def test_assert_containers_counts_every_container_that_is_not_exited_or_dead():
    run = fake_run()
    run.aliases["a"] = ["t"]
    listing = [C("c1", "t", status="running"), C("c2", "t", status="created"), C("c3", "t", status="exited"),
               C("c4", "t", status="paused"), C("c5", "t", status="dead")]
    run.cluster.containers = lambda all_=True: listing if all_ else [c for c in listing if c.status == "running"]
    run.cluster.call = lambda t, b=None, timeout=3.0, endpoint="api": {"task": task("t"), "events": []}
    with pytest.raises(chaos_steps.StepFailed) as e:
        chaos_steps.check_assert(run, chaos_script.Step(1, "assert", {"task": "a", "containers": 1}))
    assert "3 live containers" in str(e.value)
    assert chaos_steps.check_assert(run, chaos_script.Step(1, "assert", {"task": "a", "containers": 3}))


# ---- actors-answer ----------------------------------------------------------------------------------------

def test_actors_answer_requires_ready_not_merely_remembered():
    nodes, sched = node_rows({W1: []}, {})
    s = snap([], workers=[W1], nodes=nodes, sched=sched, pings={"manager": "", "store": "", "scheduler": ""})
    assert problems("actors-answer", s) == []
    nodes[W1]["state"] = "remembered"
    assert problems("actors-answer", s) == [f"worker {W1} is remembered in node.ls"]
    s.pings["store"] = "store.count: no answer"
    assert "store does not answer: store.count: no answer" in problems("actors-answer", s)


def test_every_check_passes_on_a_clean_cluster():
    a, ca = running("a", cpu=1.0, memory=10, ports=["80/tcp"], host_ports={"80/tcp": 31000})
    ca.ports = {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "31000"}]}
    b = task("b", state="Completed", desired="stopped", worker=W2)
    nodes, sched = node_rows({W1: ["a"], W2: []}, {W1: 1.0}, {W1: 10})
    s = snap([a, b], [ca], expect={"a": Expect(), "b": Expect(desired="stopped"), "r": Expect(start=REFUSED)},
             workers=[W1, W2], nodes=nodes, sched=sched, pings={"manager": "", "store": "", "scheduler": ""},
             watched={ca.id})
    results = inv.evaluate(s)
    assert set(results) == set(inv.CHECKS)
    assert {n: p for n, (p, _) in results.items() if p} == {}
