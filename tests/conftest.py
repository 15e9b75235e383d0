"""Fixtures and hooks shared by every test directory."""
from __future__ import annotations

import pytest

from cube.harness import docker_available, ensure_busybox_image


def pytest_configure(config):
    config.addinivalue_line("markers", "grace(seconds): the Manager's worker grace period in a test")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (item.rep_setup / rep_call / rep_teardown), so a
    fixture's teardown can tell whether its test failed (and, say, print the cluster's logs)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def busybox() -> str:
    """The local test image (no registry to pull from); a test asking for it needs dockerd."""
    if not docker_available():
        pytest.fail("Docker is not reachable: these tests need a running dockerd (scripts/setup.sh starts one)")
    return ensure_busybox_image()


@pytest.fixture(scope="session")
def etcd_endpoints(tmp_path_factory):
    """One throwaway etcd member on loopback for the whole session (Debian's etcd-server); each
    test keeps to its own key prefix. Its data dir is removed with pytest's temp dirs."""
    from cube.ha.etcd_process import EtcdCluster, etcd_available
    if not etcd_available():
        pytest.fail("etcd is not installed: these tests need Debian's etcd-server (scripts/setup.sh installs it)")
    cluster = EtcdCluster(str(tmp_path_factory.mktemp("etcd")), 1).start()
    yield cluster.endpoints
    cluster.stop()


@pytest.fixture
def etcd3(tmp_path):
    """A three-member etcd cluster of its own, for tests that kill members or managers."""
    from cube.ha.etcd_process import EtcdCluster, etcd_available
    if not etcd_available():
        pytest.fail("etcd is not installed: these tests need Debian's etcd-server (scripts/setup.sh installs it)")
    cluster = EtcdCluster(str(tmp_path / "etcd"), 3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
