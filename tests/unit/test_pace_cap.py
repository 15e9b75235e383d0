"""Pace advice past what a worker accepts (cube/wire/link.py's MAX_PACE): found in review."""
from cube.manager.pace import Pace
from cube.wire.link import MAX_PACE


def test_advice_stays_within_what_workers_accept():
    pace = Pace(heartbeat=1.0, grace=5.0, max_rate=10.0)
    pace.update(700)
    advice = pace.advice()
    assert advice["heartbeat"] <= MAX_PACE
    assert advice.get("metrics_interval", 0.0) <= MAX_PACE
    assert pace.grace <= 5.0 * MAX_PACE


def test_a_worker_takes_advice_past_its_limit_as_the_limit():
    """A manager asking for more than MAX_PACE gets MAX_PACE, not the worker's old fast pace."""
    from types import SimpleNamespace

    from cube.wire.link import ManagerLink
    link = object.__new__(ManagerLink)
    link.heartbeat, link._timer, link.on_pace = 1.0, None, lambda body: None
    link.actor = SimpleNamespace(loop=SimpleNamespace(call_every=lambda interval, fn: None))
    link._pace({"heartbeat": 70.0})
    assert link.heartbeat == MAX_PACE
