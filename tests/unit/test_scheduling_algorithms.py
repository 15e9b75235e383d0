"""Scores of each algorithm on hand-computed cases, plus a property check against a plain
Python transcription of the formulas."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cube.scheduling import (ALGORITHMS, LIEB, ClusterView, Demand, make_scheduler)
from cube.scheduling.algorithms import feasible

from tests.unit.scheduling_samples import GiB, MiB, sample  # noqa: F401
REL = 1e-12  # numpy's vectorised pow may differ from C's pow in the last bit or two




def scores(view, algorithm, demand, now=0.0):
    p = view.decide(demand, algorithm, now=now, with_scores=True)
    assert p.scores is not None
    return p


def test_registry_names_and_default():
    assert set(ALGORITHMS) == {"roundrobin", "greedy", "epvm", "epvm-book"}
    assert make_scheduler().name == "epvm"
    with pytest.raises(ValueError, match="unknown scheduler 'best'"):
        make_scheduler("best")


def test_epvm_book_formula_worked_by_hand():
    # Node: memory_total 8 GiB = 8,388,608 kB, memory_used 2 GiB = 2,097,152 kB, nothing
    # reserved, 0 tasks, cpu_usage 0.5. Task memory 1,048,576,000 B -> // 1000 = 1,048,576.
    #   memAlloc  = 2,097,152 kB                memPct    = 2,097,152 / 8,388,608 = 0.25
    #   newMemPct = (2,097,152 + 1,048,576) / 8,388,608 = 0.375
    #   memCost   = L^0.375 + L^(1/4) - L^0.25 - L^0   = 1.175650 - 1      = 0.175650
    #   cpuCost   = L^c + L^(1/4) - L^c - L^0           = 1.113915 - 1      = 0.113915
    #   score     = 0.289565                   (L^x = e^(0.431523 x), ln L = 0.431523)
    view = ClusterView()
    view.update(sample("w1", memory_total=8 * GiB, memory_used=2 * GiB, cpu_usage=0.5), now=0)
    p = scores(view, "epvm-book", Demand(cpu=3.0, memory=1_048_576_000))
    assert p.scores["w1"] == pytest.approx(0.289565, abs=1e-6)
    exact = (LIEB ** 0.375 + LIEB ** 0.25 - LIEB ** 0.25 - LIEB ** 0) + \
        (LIEB ** 0.5 + LIEB ** 0.25 - LIEB ** 0.5 - LIEB ** 0)
    assert p.scores["w1"] == pytest.approx(exact, rel=REL)


def test_epvm_book_ignores_cpu_and_truncates_task_memory():
    view = ClusterView()
    view.update(sample("idle", cpu_usage=0.0, memory_used=GiB), now=0)
    view.update(sample("busy", cpu_usage=1.0, memory_used=GiB), now=0)
    p = scores(view, "epvm-book", Demand(cpu=4.0, memory=1999))
    assert p.scores["idle"] == p.scores["busy"]  # cpuCost cancels: the book's known flaw
    q = scores(view, "epvm-book", Demand(cpu=4.0, memory=1000))
    assert p.scores["idle"] == q.scores["idle"]  # 1999 // 1000 == 1000 // 1000


def test_epvm_book_counts_reservations_as_memory_allocated():
    view = ClusterView()
    view.update(sample("w1", memory_total=8 * GiB, memory_used=2 * GiB), now=0)
    view.reserve("w1", "t0", Demand(memory=1_048_576_000), now=0)
    # memAlloc = 2,097,152 + 1,048,576,000 / 1000 = 3,145,728 kB -> memPct 0.375; n = 1
    p = scores(view, "epvm-book", Demand(memory=1_048_576_000))
    exact = (LIEB ** 0.5 + LIEB ** 0.5 - LIEB ** 0.375 - LIEB ** 0.25) + \
        (LIEB ** 0 + LIEB ** 0.5 - LIEB ** 0 - LIEB ** 0.25)
    assert p.scores["w1"] == pytest.approx(exact, rel=REL)


def test_epvm_worked_by_hand():
    # Node offers 4 cpus and 8 GiB; the machine has 16 GiB with 4 GiB used (share 0.25) and
    # cpu_usage 0.5; its 2 Cube tasks reserved 1 cpu (share 0.25) and 1 GiB (share 0.125).
    #   load = max(0.5, 0.25) = 0.5          newLoad = 0.5 + 1 / 4     = 0.75
    #   mem  = max(0.25, 0.125) = 0.25       newMem  = 0.25 + 2 GiB/8 GiB = 0.5
    #   memCost = L^0.5  + L^0.75 - L^0.25 - L^0.5 = L^0.75 - L^0.25
    #   cpuCost = L^0.75 + L^0.75 - L^0.5  - L^0.5
    #   score   = 3 L^0.75 - L^0.25 - 2 L^0.5 = 3(1.382153) - 1.113915 - 2(1.240806) = 0.550931
    view = ClusterView()
    view.update(sample("w1", cpus=4.0, memory=8 * GiB, memory_total=16 * GiB,
                       memory_used=4 * GiB, cpu_usage=0.5, task_ids=["a", "b"],
                       reserved=(1.0, GiB, 0)), now=0)
    p = scores(view, "epvm", Demand(cpu=1.0, memory=2 * GiB))
    assert p.scores["w1"] == pytest.approx(0.550931, abs=1e-6)
    exact = 3 * LIEB ** 0.75 - LIEB ** 0.25 - 2 * LIEB ** 0.5
    assert p.scores["w1"] == pytest.approx(exact, rel=REL)


def test_epvm_reserved_share_wins_over_idle_usage_and_pending_adds_on_top():
    # Tasks that reserved 3 of 4 cpus but sit idle (usage 0.1): load is 0.75, not 0.1.
    view = ClusterView()
    view.update(sample("w1", cpus=4.0, memory=8 * GiB, memory_total=8 * GiB, cpu_usage=0.1,
                       task_ids=["a"], reserved=(3.0, 0, 0)), now=0)
    view.reserve("w1", "b", Demand(cpu=0.5, memory=2 * GiB), now=0)
    # load = 0.75 + 0.5/4 = 0.875, mem = max(0, 0) + 0.25 = 0.25, n = 2
    p = scores(view, "epvm", Demand(cpu=0.5, memory=GiB))
    mem_cost = LIEB ** 0.375 + LIEB ** 0.75 - LIEB ** 0.25 - LIEB ** 0.5
    cpu_cost = LIEB ** 1.0 + LIEB ** 0.75 - LIEB ** 0.875 - LIEB ** 0.5
    assert p.scores["w1"] == pytest.approx(mem_cost + cpu_cost, rel=REL)


def test_epvm_counts_the_tasks_own_cpu():
    view = ClusterView()
    view.update(sample("small", cpus=2.0), now=0)
    view.update(sample("big", cpus=16.0), now=0)
    assert view.decide(Demand(cpu=2.0), "epvm", now=0).node == "big"
    assert view.decide(Demand(cpu=2.0), "epvm-book", now=0).node == "big"  # only by name tie
    p = scores(view, "epvm-book", Demand(cpu=2.0))
    assert p.scores["big"] == p.scores["small"]


def test_greedy_score_is_book_cpu_load():
    view = ClusterView()
    view.update(sample("w1", cpu_usage=0.4), now=0)
    view.update(sample("w2", cpu_usage=0.2), now=0)
    p = scores(view, "greedy", Demand(cpu=1.0))
    assert p.scores["w1"] == pytest.approx(0.229740, abs=1e-6)  # 0.4 / 2^0.8
    assert p.scores["w1"] == 0.4 / 2 ** 0.8
    assert p.node == "w2"


def test_roundrobin_scores_point_one_for_the_next_in_turn():
    view = ClusterView()
    for name in ("w1", "w2", "w3"):
        view.update(sample(name), now=0)
    p = scores(view, "roundrobin", Demand())
    assert p.scores == {"w1": 0.1, "w2": 1.0, "w3": 1.0}


def test_roundrobin_alternates_in_name_order_and_skips_what_does_not_fit():
    view = ClusterView()
    for name in ("w3", "w1", "w2"):  # arrival order must not matter
        view.update(sample(name, cpus=4.0), now=0)
    got = [view.place(f"t{i}", Demand(cpu=0.5), "roundrobin", now=0).node for i in range(6)]
    assert got == ["w1", "w2", "w3", "w1", "w2", "w3"]
    got = [view.place(f"u{i}", Demand(cpu=0.5), "roundrobin", exclude={"w2"}, now=0).node
           for i in range(2)]
    assert got == ["w1", "w3"]
    # w1 and w3 now hold 3 x 0.5 = 1.5 cpu (2.5 free), w2 holds 1.0 (3.0 free): a 3 cpu task
    # fits only on w2, whoever's turn it is.
    assert view.place("big", Demand(cpu=3.0), "roundrobin", now=0).node == "w2"
    view.update(sample("w0"), now=0)  # joins before everyone in name order: turn goes on
    got = [view.place(f"v{i}", Demand(), "roundrobin", now=0).node for i in range(3)]
    assert got == ["w3", "w0", "w1"]


def test_roundrobin_turn_is_per_view_and_dry_run_does_not_advance():
    view = ClusterView()
    for name in ("a", "b"):
        view.update(sample(name), now=0)
    assert view.decide(Demand(), "roundrobin", now=0).node == "a"
    assert view.decide(Demand(), "roundrobin", now=0).node == "a"
    assert view.place("t1", Demand(), "roundrobin", now=0).node == "a"
    assert view.place("t2", Demand(), "roundrobin", now=0).node == "b"


def test_ties_go_to_the_first_name():
    view = ClusterView()
    for name in ("w9", "w10", "w2"):
        view.update(sample(name), now=0)
    for algorithm in ALGORITHMS:
        assert view.decide(Demand(cpu=1.0), algorithm, now=0).node == "w10", algorithm


# ------------------------------------------------------------------ property: vectorised == scalar
def _ref_epvm(s, pending, d):
    """Plain transcription of the epvm formula from the raw sample and pending demands."""
    cpus, memory = s["cpus"], s["memory"]
    inv_c = 1 / cpus if cpus > 0 else 0.0
    inv_m = 1 / memory if memory > 0 else 0.0
    used = s["memory_used"] / s["memory_total"] if s["memory_total"] else 0.0
    load = max(s["cpu_usage"], s["reserved"]["cpu"] * inv_c) + sum(p.cpu for p in pending) * inv_c
    mem = max(used, s["reserved"]["memory"] * inv_m) + sum(p.memory for p in pending) * inv_m
    n = s["task_count"] + len(pending)
    new_load, new_mem = load + d.cpu * inv_c, mem + d.memory * inv_m
    mem_cost = LIEB ** new_mem + LIEB ** ((n + 1) / 4) - LIEB ** mem - LIEB ** (n / 4)
    cpu_cost = LIEB ** new_load + LIEB ** ((n + 1) / 4) - LIEB ** load - LIEB ** (n / 4)
    return mem_cost + cpu_cost


def _ref_book(s, pending, d):
    alloc = s["memory_used"] / 1024 + (s["reserved"]["memory"] + sum(p.memory for p in pending)) \
        / 1000
    node_mem = max(s["memory_total"] / 1024, 1.0)
    n = s["task_count"] + len(pending)
    cpu_load = s["cpu_usage"] / 2 ** 0.8
    mem_cost = LIEB ** ((alloc + d.memory // 1000) / node_mem) + LIEB ** ((n + 1) / 4) \
        - LIEB ** (alloc / node_mem) - LIEB ** (n / 4)
    cpu_cost = LIEB ** cpu_load + LIEB ** ((n + 1) / 4) - LIEB ** cpu_load - LIEB ** (n / 4)
    return mem_cost + cpu_cost


node_st = st.fixed_dictionaries({
    "cpus": st.sampled_from([0.0, 0.5, 1.0, 2.0, 8.0]),
    "memory": st.sampled_from([0, 512 * MiB, 2 * GiB, 16 * GiB]),
    "disk": st.sampled_from([0, GiB, 100 * GiB]),
    "cpu_usage": st.floats(0, 1),
    "used": st.floats(0, 1),
    "tasks": st.integers(0, 6),
    "res": st.tuples(st.floats(0, 4), st.integers(0, 4 * GiB), st.integers(0, 10 * GiB)),
    "pending": st.lists(st.tuples(st.floats(0, 2), st.integers(0, 2 * GiB),
                                  st.integers(0, 5 * GiB)), max_size=3),
    "age": st.sampled_from([0.0, 4.0, 5.0, 6.0]),
})
demand_st = st.builds(Demand, st.sampled_from([0.0, 0.25, 1.0, 3.0]),
                      st.sampled_from([0, MiB, GiB, 4 * GiB]),
                      st.sampled_from([0, GiB, 50 * GiB]))


@settings(max_examples=150, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=20), demand_st, st.sets(st.integers(0, 19)))
def test_vectorised_decisions_match_the_scalar_formulas(nodes, d, excluded):
    view = ClusterView()
    raw, pendings = {}, {}
    for i, n in enumerate(nodes):
        name = f"n{i:02d}"
        s = sample(name, cpus=n["cpus"], memory=n["memory"], disk=n["disk"],
                   cpu_usage=n["cpu_usage"], memory_total=16 * GiB,
                   memory_used=int(n["used"] * 16 * GiB), task_count=n["tasks"],
                   reserved=n["res"])
        view.update(s, now=-n["age"])
        raw[name] = s
        pendings[name] = []
        for k, (c, m, dk) in enumerate(n["pending"]):
            view.reserve(name, f"{name}-p{k}", Demand(c, m, dk), now=0)
            pendings[name].append(Demand(c, m, dk))
    exclude = {f"n{i:02d}" for i in excluded}

    def fits(name):
        s, p = raw[name], pendings[name]
        free_c = s["cpus"] - (s["reserved"]["cpu"] + sum(x.cpu for x in p))
        free_m = s["memory"] - (s["reserved"]["memory"] + sum(x.memory for x in p))
        free_d = s["disk"] - (s["reserved"]["disk"] + sum(x.disk for x in p))
        return (name not in exclude and view.get(name, now=0).alive
                and (d.cpu == 0 or d.cpu <= free_c + 1e-9)
                and (d.memory == 0 or d.memory <= free_m) and (d.disk == 0 or d.disk <= free_d))

    expected = sorted(name for name in raw if fits(name))
    table = view.table(0)
    assert sorted(table.names[i] for i in feasible(table, d, exclude)) == expected
    for algorithm, ref in (("epvm", _ref_epvm), ("epvm-book", _ref_book)):
        p = view.decide(d, algorithm, exclude, now=0, with_scores=True)
        if not expected:
            assert p.node is None and p.scores is None
            continue
        assert sorted(p.scores) == expected
        for name in expected:
            want = ref(raw[name], pendings[name], d)
            assert math.isclose(p.scores[name], want, rel_tol=REL, abs_tol=1e-12), name
        assert p.scores[p.node] == min(p.scores.values())
