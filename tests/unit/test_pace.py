"""Pace (cube/manager/pace.py): how often workers report for the size of the cluster, how long one
may be silent, and how a shrinking cluster keeps the longer grace until every worker has heard."""
from __future__ import annotations

import pytest

from cube.manager.pace import Pace


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pace(heartbeat: float = 1.0, grace: float = 5.0, max_rate: float = 200.0, clock: Clock | None = None) -> Pace:
    return Pace(heartbeat, grace, max_rate, clock=clock or Clock())


def test_a_new_pace_is_the_configured_one_with_no_metrics_advice():
    p = pace()
    assert (p.heartbeat, p.grace) == (1.0, 5.0)
    assert p.advice() == {"heartbeat": 1.0}


@pytest.mark.parametrize("workers", [0, 1, 100, 199, 200])
def test_a_small_cluster_keeps_the_configured_heartbeat_and_grace(workers):
    p = pace()
    p.update(workers)
    assert p.heartbeat == 1.0 and p.grace == 5.0
    assert p.advice() == {"heartbeat": 1.0}  # spread <= base heartbeat: no metrics advice


@pytest.mark.parametrize("workers, heartbeat", [(201, 1.005), (400, 2.0), (1000, 5.0), (5000, 25.0)])
def test_past_max_rate_the_heartbeat_is_workers_over_max_rate(workers, heartbeat):
    p = pace()
    p.update(workers)
    assert p.heartbeat == pytest.approx(heartbeat)
    assert p.heartbeat == pytest.approx(max(1.0, workers / 200.0))


@pytest.mark.parametrize("heartbeat, grace, max_rate, workers", [
    (1.0, 5.0, 200.0, 1000),
    (0.2, 2.0, 2.0, 3),  # the actor test's numbers: 1.5 s heartbeat, 15 s grace
    (0.5, 4.0, 10.0, 7),
])
def test_grace_grows_in_proportion_to_the_heartbeat(heartbeat, grace, max_rate, workers):
    p = pace(heartbeat, grace, max_rate)
    p.update(workers)
    interval = max(heartbeat, workers / max_rate)
    assert p.heartbeat == pytest.approx(interval)
    assert p.grace == pytest.approx(grace * interval / heartbeat)
    # the same number of missed heartbeats loses a worker as in a small cluster
    assert p.grace / p.heartbeat == pytest.approx(grace / heartbeat)


def test_the_actor_tests_numbers_exactly():
    p = pace(0.2, 2.0, 2.0)
    p.update(3)
    assert p.heartbeat == pytest.approx(1.5)
    assert p.grace == pytest.approx(15.0)
    assert p.advice() == {"heartbeat": pytest.approx(1.5), "metrics_interval": pytest.approx(1.5)}


def test_metrics_interval_is_advised_only_when_spread_exceeds_the_base_heartbeat():
    p = pace(1.0, 5.0, 200.0)
    p.update(200)  # spread == base heartbeat: not more
    assert "metrics_interval" not in p.advice()
    p.update(300)  # spread 1.5 > 1.0
    assert p.advice() == {"heartbeat": pytest.approx(1.5), "metrics_interval": pytest.approx(1.5)}
    p.update(100)  # back under: the advice goes away (the worker returns to its own interval)
    assert p.advice() == {"heartbeat": 1.0}
    assert p.metrics_interval == 0.0


@pytest.mark.parametrize("max_rate", [0.0, -1.0])
def test_max_rate_zero_or_negative_means_no_scaling(max_rate):
    p = pace(1.0, 5.0, max_rate)
    for workers in (0, 1, 1000, 1_000_000):
        p.update(workers)
        assert p.heartbeat == 1.0 and p.grace == 5.0
        assert p.advice() == {"heartbeat": 1.0}


def test_a_growing_cluster_gets_the_longer_grace_at_once():
    clock = Clock()
    p = pace(clock=clock)
    p.update(100)
    p.update(1000)
    assert p.grace == pytest.approx(25.0)
    p.update(2000)
    assert p.grace == pytest.approx(50.0)


def test_when_the_cluster_shrinks_the_longer_grace_is_held_for_the_old_grace():
    clock = Clock(1000.0)
    p = pace(clock=clock)
    p.update(1000)  # heartbeat 5, grace 25
    assert p.grace == pytest.approx(25.0)
    p.update(100)  # heartbeat 1 at once (told in every answer), grace 5 only after 25 s
    assert p.heartbeat == 1.0 and p.advice() == {"heartbeat": 1.0}
    assert p.grace == pytest.approx(25.0)
    clock.now = 1000.0 + 24.9
    assert p.grace == pytest.approx(25.0)
    clock.now = 1000.0 + 25.0  # until clock + old grace, not including it
    assert p.grace == pytest.approx(5.0)
    clock.now = 2000.0
    assert p.grace == pytest.approx(5.0)


def test_a_shrink_that_stays_above_the_base_holds_the_old_grace_too():
    clock = Clock(0.0)
    p = pace(clock=clock)
    p.update(2000)  # grace 50
    clock.now = 10.0
    p.update(1000)  # grace 25 now, 50 held until 10 + 50
    assert p.grace == pytest.approx(50.0)
    clock.now = 59.9
    assert p.grace == pytest.approx(50.0)
    clock.now = 60.0
    assert p.grace == pytest.approx(25.0)


def test_growing_again_during_a_hold_takes_the_larger_grace():
    clock = Clock(0.0)
    p = pace(clock=clock)
    p.update(1000)  # 25
    p.update(100)  # 5, 25 held until 25
    p.update(4000)  # 100 now
    assert p.grace == pytest.approx(100.0)
    clock.now = 30.0
    assert p.grace == pytest.approx(100.0)


def test_no_change_in_size_does_not_start_or_extend_a_hold():
    clock = Clock(0.0)
    p = pace(clock=clock)
    p.update(1000)
    p.update(100)  # 25 held until 25
    clock.now = 20.0
    p.update(100)  # the same size again: the hold keeps its end
    clock.now = 25.0
    assert p.grace == pytest.approx(5.0)


def test_two_shrinks_in_a_row_keep_the_first_longer_hold():
    # 4,000 workers beat every 20 s (grace 100). The cluster shrinks to 600 (every 3 s, grace 15)
    # and a second later to 200 (every 1 s, grace 5). A worker that beat just before
    # the first shrink next beats 20 s later, when it first hears the shorter interval: until
    # then it must not be lost, so a grace of at least 20 s (the first hold, 100 s) must hold.
    clock = Clock(0.0)
    p = pace(clock=clock)
    p.update(4000)
    assert p.heartbeat == pytest.approx(20.0) and p.grace == pytest.approx(100.0)
    clock.now = 0.0
    p.update(600)
    assert p.grace == pytest.approx(100.0)  # held until 100
    clock.now = 1.0
    p.update(200)
    clock.now = 19.0  # the slow worker has not beaten since 0 yet (it will at 20)
    assert p.grace >= 20.0  # fails: the hold became (15 s, until 16), so grace is 5 at 19 s
