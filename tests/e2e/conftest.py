"""End-to-end fixtures: a real cluster of processes against the real Docker engine."""
from __future__ import annotations

import pytest

from tests.cluster import Cluster
from tests.docker_support import docker_available, ensure_busybox_image


@pytest.fixture(scope="session")
def busybox() -> str:
    if not docker_available():
        pytest.fail("Docker is not reachable: end-to-end tests need a running dockerd (scripts/setup.sh starts one)")
    return ensure_busybox_image()


@pytest.fixture
def make_cluster(busybox, request):
    """Factory: make_cluster(scheduler=..., grace=...) -> a started manager; closed after the test."""
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        c = Cluster(**kw)
        made.append(c)
        c.start_manager()
        return c
    yield make
    for c in made:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            for name in ["manager", *[f"worker-{s}" for s in c.workers]]:
                print(f"---- {name} log ----\n{c.log(name)[-4000:]}")
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
