"""ClusterView staleness with a sample interval: a node that samples seldom (a large cluster's pace)
is stale only after missing a few samples, max(stale_after, 3 * interval); NodeState.alive and the
algorithms' table().alive always agree."""
from __future__ import annotations

import math

import pytest

from cube.scheduling import ClusterView, Demand, NodeSample
from cube.scheduling.model import MAX_INTERVAL, STALE_SAMPLES

from tests.unit.scheduling_samples import sample


def paced(name: str, interval=None, **kw) -> dict:
    s = sample(name, **kw)
    if interval is not None:
        s["interval"] = interval
    return s


def alive_both(view: ClusterView, name: str, now: float) -> bool:
    """NodeState.alive, after checking that the table the algorithms read says the same."""
    state = view.get(name, now=now).alive
    t = view.table(now=now)
    assert bool(t.alive[t.index[name]]) == state, f"{name} at {now}: state {state}, table {t.alive}"
    return state


@pytest.mark.parametrize("given, parsed", [
    (None, 0.0), (0, 0.0), (5, 5.0), (2.5, 2.5), (-3.0, 0.0), (60.0, 60.0), (61.0, MAX_INTERVAL),
    (1e9, MAX_INTERVAL), (math.inf, 0.0), (math.nan, 0.0),
])
def test_sample_interval_is_read_and_clamped_to_0_60(given, parsed):
    assert MAX_INTERVAL == 60.0
    assert NodeSample.from_dict(paced("w1", given)).interval == parsed


def test_a_node_sampling_every_5s_is_alive_12s_after_and_stale_at_16s():
    assert STALE_SAMPLES == 3
    view = ClusterView(stale_after=5.0)
    view.update(paced("slow", interval=5), now=100.0)
    view.update(paced("plain"), now=100.0)
    for now, slow, plain in [(100.0, True, True), (105.0, True, True), (105.01, True, False),
                             (112.0, True, False), (115.0, True, False), (116.0, False, False)]:
        assert alive_both(view, "slow", now) is slow, now
        assert alive_both(view, "plain", now) is plain, now
    assert view.alive(now=112.0) == ["slow"]
    assert view.alive(now=116.0) == []


def test_a_short_interval_never_makes_a_node_stale_sooner_than_stale_after():
    view = ClusterView(stale_after=5.0)
    view.update(paced("fast", interval=0.2), now=0.0)  # 3 * 0.2 < 5: stale_after rules
    assert alive_both(view, "fast", 4.9) and alive_both(view, "fast", 5.0)
    assert not alive_both(view, "fast", 5.01)


def test_the_limit_follows_the_latest_sample():
    view = ClusterView(stale_after=5.0)
    view.update(paced("w1", interval=10, seq=1), now=0.0)
    assert alive_both(view, "w1", 29.0)
    view.update(paced("w1", seq=2), now=30.0)  # the cluster shrank: samples without interval
    assert alive_both(view, "w1", 35.0)
    assert not alive_both(view, "w1", 36.0)  # 5 s now, not 30
    view.update(paced("w1", interval=10, seq=3), now=40.0)
    assert alive_both(view, "w1", 65.0)


def test_a_claimed_interval_is_capped_so_a_node_cannot_stay_alive_for_ever():
    view = ClusterView(stale_after=5.0)
    view.update(paced("liar", interval=1e9), now=0.0)
    assert alive_both(view, "liar", 3 * MAX_INTERVAL)
    assert not alive_both(view, "liar", 3 * MAX_INTERVAL + 0.01)


def test_a_slow_live_node_is_a_candidate_and_a_stale_one_is_not():
    view = ClusterView(stale_after=5.0)
    view.update(paced("slow", interval=5), now=0.0)
    assert view.decide(Demand(cpu=1.0), now=12.0).node == "slow"
    assert view.decide(Demand(cpu=1.0), now=16.0).node is None
    assert view.describe(now=16.0)[0]["state"] == "stale"


def test_many_nodes_with_mixed_intervals_agree_between_state_and_table():
    view = ClusterView(stale_after=5.0)
    for i in range(40):  # past the first growth of the columns (16)
        view.update(paced(f"n{i:02d}", interval=[None, 1, 2, 4, 8][i % 5]), now=float(i % 3))
    for now in (4.0, 6.0, 7.5, 13.0, 20.0, 26.0, 30.0):
        states = {s.name: s.alive for s in view.nodes(now=now)}
        t = view.table(now=now)
        assert {n: bool(t.alive[t.index[n]]) for n in t.names} == states, now
        assert view.alive(now=now) == sorted(n for n, a in states.items() if a)
