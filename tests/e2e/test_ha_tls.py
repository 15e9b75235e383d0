"""Two cube-managers on an etcd that speaks only TLS and asks for client certificates
(docs/ha.md, "Security"): they share one identity through it and elect a leader."""
from __future__ import annotations

import pytest

from cube.ha.harness import HACluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def tls_etcd(tmp_path):
    from cube.ha.etcd_process import EtcdCluster, etcd_available, make_pki
    if not etcd_available():
        pytest.fail("etcd is not installed: these tests need Debian's etcd-server (scripts/setup.sh installs it)")
    pki = make_pki(str(tmp_path / "pki"))
    cluster = EtcdCluster(str(tmp_path / "etcd"), 1, tls=pki)
    try:
        yield cluster.start(), pki
    finally:
        cluster.stop()


def test_two_managers_elect_a_leader_over_tls_and_share_one_identity(tls_etcd, request):
    from cube.ha.security import KEY, NS
    from cube.security.authority import ADMIN_FILE
    from cube.store.etcd import EtcdStore
    etcd, pki = tls_etcd
    ha = HACluster(etcd.endpoints, managers=2, lease_ttl=2, insecure=False, etcd_tls=pki.client())
    try:
        ha.start()  # the first leads (and published the keys through etcd), the second follows
        assert ha.leader() == 0 and ha.ping(1)["role"] == "follower"
        shared = EtcdStore(etcd.endpoints, tls=pki.client()).get(NS, KEY)
        assert shared and all((n.data_dir / ADMIN_FILE).read_text() == shared[ADMIN_FILE]
                              for n in ha.nodes)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(ha.log_tail(60))
        ha.close()
