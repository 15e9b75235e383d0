"""Pace advice past what a worker accepts (cube/wire/link.py's MAX_PACE): found in review."""
import pytest

from cube.manager.pace import Pace
from cube.wire.link import MAX_PACE


@pytest.mark.xfail(strict=True, reason="Pace has no cap: past max_reports * MAX_PACE workers (e.g. "
                   "--max-reports 10 and 700 workers) it advises 70 s, which the worker's link ignores "
                   "(heartbeats stay at the old pace) and Worker._paced drops (samples go back to its own "
                   "fast interval), while the Manager's grace keeps growing (350 s)")
def test_advice_stays_within_what_workers_accept():
    pace = Pace(heartbeat=1.0, grace=5.0, max_rate=10.0)
    pace.update(700)
    advice = pace.advice()
    assert advice["heartbeat"] <= MAX_PACE
    assert advice.get("metrics_interval", 0.0) <= MAX_PACE
    assert pace.grace <= 5.0 * MAX_PACE
