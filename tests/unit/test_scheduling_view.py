"""ClusterView: samples, liveness, the reservation ledger, feasibility edges, reasons."""
from __future__ import annotations

from collections import Counter

import pytest

from cube.scheduling import ClusterView, Demand, NodeSample, Placement

from tests.unit.scheduling_samples import GiB, MiB, sample  # noqa: F401




@pytest.fixture
def view():
    return ClusterView()


# ------------------------------------------------------------------ samples and liveness
def test_update_keeps_latest_by_seq_and_ignores_old_or_duplicate(view):
    assert view.update(sample("w1", seq=5, ts=100.0, cpu_usage=0.5), now=0)
    assert not view.update(sample("w1", seq=4, ts=99.0, cpu_usage=0.9), now=1)  # late
    assert not view.update(sample("w1", seq=5, ts=100.0, cpu_usage=0.9), now=1)  # duplicate
    state = view.get("w1", now=1)
    assert state.cpu_usage == 0.5 and state.age == 1.0  # ignored samples do not refresh it
    assert view.update(sample("w1", seq=6, ts=101.0, cpu_usage=0.7), now=2)
    assert view.get("w1", now=2).cpu_usage == 0.7


def test_worker_restart_is_detected_by_ts_and_old_incarnation_is_then_ignored(view):
    view.update(sample("w1", seq=500, ts=100.0), now=0)
    assert view.update(sample("w1", seq=1, ts=200.0, cpu_usage=0.3), now=1)  # restarted
    assert view.get("w1", now=1).cpu_usage == 0.3
    # a delayed sample of the old incarnation: higher seq but stamped before the restart
    assert not view.update(sample("w1", seq=501, ts=100.5, cpu_usage=0.9), now=2)
    assert view.update(sample("w1", seq=2, ts=201.0, cpu_usage=0.4), now=2)
    assert view.get("w1", now=2).cpu_usage == 0.4


def test_sample_without_name_is_rejected(view):
    with pytest.raises(ValueError):
        view.update({"seq": 1})


def test_sample_parsing_tolerates_missing_fields():
    s = NodeSample.from_dict({"name": "w1", "cpus": 2, "reserved": None, "task_ids": None})
    assert s.cpus == 2.0 and s.reserved_cpu == 0.0 and s.task_ids == frozenset()


def test_liveness_uses_receiver_clock_and_stale_after(view):
    view.update(sample("w1"), now=10.0)
    assert view.get("w1", now=15.0).alive  # exactly stale_after: still alive
    assert not view.get("w1", now=15.01).alive
    assert view.alive(now=12.0) == ["w1"] and view.alive(now=16.0) == []
    assert view.decide(Demand(), now=15.0).node == "w1"
    assert view.decide(Demand(), now=15.01).node is None


def test_default_clock_is_monotonic_now():
    ticks = iter([100.0, 103.0, 106.0])
    view = ClusterView(clock=lambda: next(ticks))
    view.update(sample("w1"))
    assert view.get("w1").alive  # now=103
    assert not view.get("w1").alive  # now=106 > 100 + 5


def test_forget_drops_node_and_its_reservations_and_keeps_others_intact(view):
    for i, name in enumerate(["a", "b", "c", "d"]):
        view.update(sample(name, cpus=float(i + 1)), now=0)
    view.reserve("b", "tb", Demand(cpu=0.5), now=0)
    view.reserve("d", "td", Demand(cpu=1.0), now=0)
    assert view.forget("b") and not view.forget("b")
    assert "b" not in view and len(view) == 3
    assert view.reservations() == {"td": Demand(cpu=1.0)}
    states = {s.name: s for s in view.nodes(now=0)}
    assert [s for s in states] == ["a", "c", "d"]
    assert states["d"].cpus == 4.0 and states["d"].free_cpu == 3.0  # moved slot, same numbers
    assert view.decide(Demand(cpu=3.5), now=0).node is None
    assert view.decide(Demand(cpu=3.0), now=0).node == "d"
    assert view.decide(Demand(cpu=2.5), "greedy", now=0).node == "c"


def test_many_nodes_grow_the_columns(view):
    for i in range(100):
        view.update(sample(f"w{i:03d}", cpus=float(i)), now=0)
    assert view.decide(Demand(cpu=98.5), now=0).node == "w099"
    assert len(view.describe(now=0)) == 100


def test_describe_rows(view):
    view.update(sample("w1", cpus=2.0, memory=4 * GiB, task_ids=["a"], reserved=(0.5, GiB, 0)),
                now=0)
    view.reserve("w1", "b", Demand(cpu=0.5, memory=GiB), now=0)
    row = view.describe(now=1)[0]
    assert row["name"] == "w1" and row["state"] == "alive" and row["address"] == "w1.local"
    assert row["cpu_free"] == 1.0 and row["memory_free"] == 2 * GiB
    assert row["tasks"] == 2 and row["pending"] == 1
    assert view.describe(now=10)[0]["state"] == "stale"


# ------------------------------------------------------------------ feasibility edges
def test_exact_fit_is_allowed_and_one_more_byte_is_not(view):
    view.update(sample("w1", cpus=2.0, memory=4 * GiB, disk=10 * GiB, task_ids=["a"],
                       reserved=(1.0, GiB, 4 * GiB)), now=0)
    exact = Demand(cpu=1.0, memory=3 * GiB, disk=6 * GiB)
    assert view.decide(exact, now=0).node == "w1"
    assert view.decide(Demand(1.0, 3 * GiB + 1, 6 * GiB), now=0).node is None
    assert view.decide(Demand(1.0, 3 * GiB, 6 * GiB + 1), now=0).node is None
    assert view.decide(Demand(1.0000001, 3 * GiB, 6 * GiB), now=0).node is None


def test_float_sums_of_cpu_do_not_refuse_an_exact_fit(view):
    view.update(sample("w1", cpus=1.0), now=0)
    view.reserve("w1", "a", Demand(cpu=0.1), now=0)
    view.reserve("w1", "b", Demand(cpu=0.2), now=0)
    assert view.place("c", Demand(cpu=0.7), now=0).node == "w1"


def test_zero_demand_fits_any_live_node_even_empty_or_overcommitted(view):
    view.update(sample("empty", cpus=0.0, memory=0, disk=0, memory_total=0), now=0)
    view.update(sample("over", cpus=1.0, memory=GiB, task_ids=["a"], reserved=(2.0, 2 * GiB, 0)),
                now=0)
    for algorithm in ("roundrobin", "greedy", "epvm", "epvm-book"):
        p = view.decide(Demand(), algorithm, now=0, with_scores=True)
        assert set(p.scores) == {"empty", "over"}, algorithm
    assert view.decide(Demand(cpu=0.1), now=0).node is None
    assert view.decide(Demand(memory=1), now=0).node is None
    assert view.decide(Demand(disk=1), now=0).node == "over"  # disk is not over-committed


def test_stale_and_excluded_nodes_are_not_candidates(view):
    view.update(sample("old"), now=0)
    view.update(sample("w1"), now=10)
    view.update(sample("w2"), now=10)
    p = view.decide(Demand(cpu=1.0), now=11, with_scores=True, exclude={"w1", "unknown"})
    assert p.node == "w2" and set(p.scores) == {"w2"}


def test_demand_validation_and_from_task():
    with pytest.raises(ValueError):
        Demand(cpu=-1.0)
    with pytest.raises(ValueError):
        Demand(cpu=float("nan"))
    assert Demand.of({"cpu": 0.5, "memory": 10, "image": "x"}) == Demand(0.5, 10, 0)


def test_scores_are_attached_for_small_clusters_only_unless_asked(view):
    for i in range(40):
        view.update(sample(f"w{i:02d}"), now=0)
    assert view.decide(Demand(), now=0).scores is None
    assert len(view.decide(Demand(), now=0, with_scores=True).scores) == 40
    assert len(view.decide(Demand(), now=0, exclude={f"w{i:02d}" for i in range(10)}).scores) \
        == 30
    assert view.decide(Demand(), now=0, with_scores=False,
                       exclude={f"w{i:02d}" for i in range(10)}).scores is None


# ------------------------------------------------------------------ reservations
def test_burst_between_two_samples_spreads_with_epvm(view):
    for name in ("w1", "w2", "w3", "w4", "w5"):
        view.update(sample(name, cpus=4.0, memory=8 * GiB), now=0)
    placed = [view.place(f"t{i}", Demand(cpu=0.5, memory=512 * MiB), now=0.5)
              for i in range(10)]
    assert all(isinstance(p, Placement) and p.placed for p in placed)
    counts = Counter(p.node for p in placed)
    assert len(counts) == 5 and max(counts.values()) == 2
    assert view.get("w1", now=0.5).pending == ("t0", "t5")


def test_greedy_piles_a_burst_onto_one_node_as_the_book_did(view):
    view.update(sample("w1", cpu_usage=0.1), now=0)
    view.update(sample("w2", cpu_usage=0.5), now=0)
    got = {view.place(f"t{i}", Demand(cpu=0.5), "greedy", now=0).node for i in range(8)}
    assert got == {"w1"}  # 8 x 0.5 = 4 cpus: until w1 is full, greedy cannot see the burst
    assert view.place("t8", Demand(cpu=0.5), "greedy", now=0).node == "w2"


def test_sample_listing_the_task_ids_does_not_double_count(view):
    view.update(sample("w1", seq=1, cpus=4.0, memory=8 * GiB), now=0)
    for i in range(3):
        view.place(f"t{i}", Demand(cpu=1.0, memory=GiB), now=0)
    assert view.get("w1", now=0).free_cpu == 1.0
    # next sample was taken before t2 started: it lists t0 and t1 and counts them in reserved
    view.update(sample("w1", seq=2, ts=101.0, cpus=4.0, memory=8 * GiB, task_ids=["t0", "t1"],
                       reserved=(2.0, 2 * GiB, 0)), now=1)
    state = view.get("w1", now=1)
    assert state.reserved_cpu == 3.0 and state.reserved_memory == 3 * GiB
    assert state.pending == ("t2",) and state.task_count == 3
    view.update(sample("w1", seq=3, ts=102.0, cpus=4.0, memory=8 * GiB,
                       task_ids=["t0", "t1", "t2"], reserved=(3.0, 3 * GiB, 0)), now=2)
    state = view.get("w1", now=2)
    assert state.reserved_cpu == 3.0 and state.pending == () and view.reservations() == {}


def test_reservation_times_out(view):
    view.update(sample("w1", cpus=1.0), now=0)
    assert view.place("t1", Demand(cpu=1.0), now=0).node == "w1"
    view.update(sample("w1", seq=2, ts=101.0, cpus=1.0), now=29)  # t1 never shows up
    assert view.place("t2", Demand(cpu=1.0), now=29.9).node is None
    assert view.place("t2", Demand(cpu=1.0), now=30.0).node == "w1"  # t1 expired
    assert set(view.reservations()) == {"t2"}
    short = ClusterView(reservation_timeout=2.0)
    short.update(sample("w1"), now=0)
    short.reserve("w1", "x", Demand(cpu=1.0), now=0)
    assert short.reservations() == {"x": Demand(cpu=1.0)}
    assert short.get("w1", now=2.0).pending == ()


def test_release_frees_the_space(view):
    view.update(sample("w1", cpus=1.0), now=0)
    view.place("t1", Demand(cpu=1.0), now=0)
    assert view.decide(Demand(cpu=1.0), now=0).node is None
    assert view.release("t1") and not view.release("t1")
    assert view.decide(Demand(cpu=1.0), now=0).node == "w1"


def test_reserve_rules(view):
    view.update(sample("w1", task_ids=["running"], reserved=(1.0, 0, 0)), now=0)
    view.update(sample("w2"), now=0)
    with pytest.raises(KeyError):
        view.reserve("nope", "t", Demand())
    assert not view.reserve("w1", "running", Demand(cpu=1.0), now=0)  # already counted
    assert view.get("w1", now=0).reserved_cpu == 1.0
    assert view.reserve("w1", "t", Demand(cpu=1.0), now=0)
    assert view.reserve("w2", "t", Demand(cpu=1.0), now=0)  # moved, not duplicated
    assert view.get("w1", now=0).reserved_cpu == 1.0
    assert view.reservations("w2") == {"t": Demand(cpu=1.0)}
    # another node listing the task (e.g. the old node still reporting it) does not drop it
    view.update(sample("w1", seq=2, ts=101.0, task_ids=["running", "t"]), now=1)
    assert view.reservations() == {"t": Demand(cpu=1.0)}


def test_failed_decision_reserves_nothing(view):
    view.update(sample("w1", cpus=1.0), now=0)
    p = view.place("t", Demand(cpu=2.0), now=0)
    assert p.node is None and p.scores is None and view.reservations() == {}


# ------------------------------------------------------------------ unplaceable reasons
def test_reason_no_live_worker(view):
    assert view.place("t", Demand(cpu=1.0), now=0).reason == "no live worker"
    view.update(sample("w1"), now=0)
    reason = view.place("t", Demand(cpu=1.0), now=60).reason
    assert reason == "no live worker (1 known, none heard from in the last 5 s)"


def test_reason_names_the_binding_resource(view):
    view.update(sample("w1", cpus=1.0, memory=8 * GiB), now=0)
    view.update(sample("w2", cpus=2.0, memory=8 * GiB, task_ids=["a"], reserved=(0.5, 0, 0)),
                now=0)
    p = view.place("t", Demand(cpu=4.0), now=0)
    assert p.reason == "no worker has 4.0 cpu free; largest free is 1.5 on w2"
    p = view.place("t", Demand(cpu=1.0, memory=12 * GiB), now=0)
    assert p.reason == "no worker has 12.0 GiB of memory free; largest free is 8.0 GiB on w1"
    # both short: memory is further out of reach (32/8 = 4x) than cpu (2/1.5 = 1.3x)
    p = view.place("t", Demand(cpu=2.0, memory=32 * GiB), now=0)
    assert p.reason.startswith("no worker has 32.0 GiB of memory free")


def test_reason_when_resources_exist_but_not_together(view):
    view.update(sample("w1", cpus=4.0, memory=GiB), now=0)
    view.update(sample("w2", cpus=1.0, memory=8 * GiB), now=0)
    p = view.place("t", Demand(cpu=2.0, memory=4 * GiB), now=0)
    assert p.reason == ("no worker has 2.0 cpu and 4.0 GiB of memory free at once; "
                        "most cpu free: 4.0 on w1 (with 1.0 GiB of memory); "
                        "most memory free: 8.0 GiB on w2 (with 1.0 cpu)")


def test_reason_mentions_excluded_and_stale(view):
    view.update(sample("old"), now=-10)
    view.update(sample("w1", cpus=1.0), now=0)
    view.update(sample("w2", cpus=8.0), now=0)
    p = view.place("t", Demand(cpu=2.0), exclude={"w2"}, now=0)
    assert p.reason == ("no worker has 2.0 cpu free; largest free is 1.0 on w1 "
                        "(excluded: w2; 1 stale worker not counted)")
    p = view.place("t", Demand(cpu=2.0), exclude={"w1", "w2"}, now=0)
    assert p.reason == ("no live worker outside the excluded "
                        "(excluded: w1, w2; 1 stale worker not counted)")


def test_success_reason_names_algorithm(view):
    view.update(sample("w1"), now=0)
    p = view.place("t", Demand(cpu=1.0), "greedy", now=0)
    assert p.placed and p.reason == "greedy: lowest score 0 of 1 candidate(s)"
