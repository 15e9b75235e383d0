"""Fixtures of the multi-host tests: one test bed and one Cube on it per module (docs/chaos.md,
"Multi-host test bed"). Skipped, with the reason, where the bed cannot be made (not root, no
network namespaces); CI runs as root, so there they run."""
from __future__ import annotations

import pytest

from cube.testbed.bed import Bed, missing, reap
from cube.testbed.cluster import BedCluster

WORKERS = {"w1": "h2", "w2": "h3"}  # short name -> bed host; the manager (and CLI) on h1


@pytest.fixture(scope="module")
def bed():
    why = missing()
    if why:
        pytest.skip(why)
    reap()  # beds left by a killed run (their owner process is gone)
    b = Bed(hosts=("h1", "h2", "h3"), docker=tuple(WORKERS.values()))
    b.up()
    print("bed up: " + ", ".join(f"{k} {v:.2f}s" for k, v in b.timings.items()))
    yield b
    b.down()


@pytest.fixture(scope="module")
def cluster(bed):
    c = BedCluster(bed, manager="h1", grace=3.0, heartbeat=0.5, stop_timeout=1.0)
    try:
        c.start_manager()
        for short, host in WORKERS.items():
            c.start_worker(short, host=host, wait=False)
        for short in WORKERS:
            c.wait_worker_ready(short)
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def logs_on_failure(request):
    """The cluster's logs when a test failed (its cluster fixture is shared by the module)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "cluster" in request.fixturenames:
        print(request.getfixturevalue("cluster").log_tail(lines=60))
