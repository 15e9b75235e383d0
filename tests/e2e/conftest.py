"""End-to-end fixtures: a real cluster of processes against the real Docker engine."""
from __future__ import annotations

import pytest

from cube.harness import Cluster


@pytest.fixture
def make_cluster(busybox, request):
    """Factory: make_cluster(scheduler=..., grace=...) -> a started manager; closed after the test,
    with the processes' logs printed if the test failed."""
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        c = Cluster(**kw)
        made.append(c)
        c.start_manager()
        return c
    yield make
    for c in made:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.log_tail(lines=60))
        c.close()
