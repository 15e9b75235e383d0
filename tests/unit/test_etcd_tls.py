"""etcd holds the managers' secret key (docs/ha.md, "Security"): cube-manager reaches it over TLS
with a client certificate, or over plain HTTP only on loopback or when the operator says the
network is private (--etcd-plaintext). A real etcd member on https with --client-cert-auth."""
from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from cube.config import ManagerConfig
from cube.store.base import StoreError, StoreInDoubt, StoreUnavailable

pytestmark = pytest.mark.timeout(120)


# ---- the checks at start (ManagerConfig.check_store) ---------------------------------------------
def config(etcd: str, **kw) -> ManagerConfig:
    return ManagerConfig(host="10.0.0.5", store="etcd", etcd=etcd, **kw)


def test_plain_http_off_loopback_is_refused_unless_the_operator_trusts_the_network():
    with pytest.raises(ValueError, match="--etcd-plaintext"):
        config("http://10.0.0.1:2379").check_store()
    with pytest.raises(ValueError, match="http://10.0.0.2:2379"):  # one such endpoint is enough
        config("http://127.0.0.1:2379,http://10.0.0.2:2379").check_store()
    config("http://10.0.0.1:2379,10.0.0.2:2379", etcd_plaintext=True).check_store()
    config("http://127.0.0.1:2379,http://localhost:2380").check_store()  # loopback: this machine only


def test_https_needs_the_ca_and_a_client_certificate(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.crt", "c.crt", "c.key"))
    for f in (ca, cert, key):
        f.write_text("pem")
    with pytest.raises(ValueError, match="--etcd-cacert"):
        config("https://10.0.0.1:2379").check_store()
    with pytest.raises(ValueError, match="--etcd-cert FILE and --etcd-key"):
        config("https://10.0.0.1:2379", etcd_cacert=str(ca)).check_store()
    with pytest.raises(ValueError, match="go together"):
        config("https://10.0.0.1:2379", etcd_cacert=str(ca), etcd_cert=str(cert)).check_store()
    with pytest.raises(ValueError, match="no such readable file"):
        config("https://10.0.0.1:2379", etcd_cacert=str(tmp_path / "nope"), etcd_cert=str(cert),
               etcd_key=str(key)).check_store()
    ok = config("https://10.0.0.1:2379", etcd_cacert=str(ca), etcd_cert=str(cert), etcd_key=str(key))
    ok.check_store()
    assert ok.etcd_tls.cacert == str(ca) and ok.etcd_tls.cert == str(cert) and ok.etcd_tls.key == str(key)
    assert config("http://127.0.0.1:2379").etcd_tls is None


def test_tls_files_without_https_endpoints_are_refused(tmp_path):
    (tmp_path / "ca").write_text("pem")
    with pytest.raises(ValueError, match="need https://"):
        config("http://127.0.0.1:2379", etcd_cacert=str(tmp_path / "ca")).check_store()
    with pytest.raises(ValueError, match="go with --store etcd"):
        ManagerConfig(etcd_cacert=str(tmp_path / "ca")).check_store()


def test_cube_manager_exits_2_on_plain_http_etcd_off_loopback(tmp_path):
    """Before it reaches etcd at all (the address is never contacted)."""
    result = subprocess.run([sys.executable, "-c", "from cube.actors.supervisor import main; main()",
                             "--host", "10.0.0.5", "--store", "etcd", "--etcd", "http://10.0.0.1:2379",
                             "--data-dir", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "--etcd-plaintext" in result.stderr and "secret key" in result.stderr


# ---- a real etcd on https, asking for client certificates -----------------------------------------
@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    from cube.ha.etcd_process import EtcdCluster, etcd_available, make_pki
    if not etcd_available():
        pytest.fail("etcd is not installed: these tests need Debian's etcd-server (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("etcd-tls")
    pki = make_pki(str(root / "pki"))
    cluster = EtcdCluster(str(root / "etcd"), 1, tls=pki).start()
    yield cluster, pki
    cluster.stop()


def store(endpoints: str, tls):
    from cube.store.etcd import EtcdStore
    return EtcdStore(endpoints, prefix=f"/test/{uuid.uuid4().hex}/", tls=tls)


def test_a_manager_with_its_certificate_uses_a_tls_etcd(tls_etcd):
    cluster, pki = tls_etcd
    assert cluster.endpoints.startswith("https://127.0.0.1:")
    s = store(cluster.endpoints, pki.client())
    s.batch([("put", "tasks", "t1", {"x": 1}), ("put", "tasks", "t2", 2)])
    assert s.get("tasks", "t1") == {"x": 1} and s.count("tasks") == 2
    assert s.create("meta", "security", {"k": "v"}) and not s.create("meta", "security", {})
    s.check_limits()  # started with Cube's flags: nothing raised


def test_the_ca_given_wins_over_the_environments_ca_bundle(tls_etcd, monkeypatch, tmp_path):
    """requests lets REQUESTS_CA_BUNDLE replace a session's CA; ours must not be replaced."""
    from cube.ha.etcd_process import make_pki
    cluster, pki = tls_etcd
    other = make_pki(str(tmp_path / "other"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", other.ca)
    monkeypatch.setenv("CURL_CA_BUNDLE", other.ca)
    s = store(cluster.endpoints, pki.client())
    s.put("tasks", "t", 1)
    assert s.get("tasks", "t") == 1


def test_a_client_without_a_certificate_is_refused_at_once(tls_etcd):
    from cube.store.etcd import EtcdTLS
    cluster, pki = tls_etcd
    s = store(cluster.endpoints, EtcdTLS(pki.ca))  # checks etcd, presents nothing
    with pytest.raises(StoreUnavailable):
        s.get("tasks", "t")
    with pytest.raises(StoreError):  # (sent under TLS 1.3 before etcd refused it: in doubt, never applied)
        s.put("tasks", "t", 1)
    with pytest.raises(ValueError, match="--etcd-cert"):  # cube-manager's check at start: exit 2
        s.check_limits()
    assert store(cluster.endpoints, pki.client()).get("tasks", "t") is None


def test_an_etcd_whose_certificate_our_ca_did_not_sign_is_refused(tls_etcd, tmp_path):
    """A write that failed the handshake was never sent: StoreUnavailable, not in doubt."""
    from cube.ha.etcd_process import make_pki
    cluster, pki = tls_etcd
    other = make_pki(str(tmp_path / "other"))
    s = store(cluster.endpoints, other.client())
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        s.get("tasks", "t")
    with pytest.raises(StoreUnavailable) as e:
        s.put("tasks", "t", 1)
    assert not isinstance(e.value, StoreInDoubt)
    with pytest.raises(ValueError, match="--etcd-cacert"):
        s.check_limits()


def test_plain_http_to_the_tls_etcd_gets_nothing(tls_etcd):
    cluster, _ = tls_etcd
    s = store(cluster.endpoints.replace("https://", "http://"), None)
    with pytest.raises(StoreError):
        s.get("tasks", "t")


def test_the_election_runs_on_the_tls_etcd(tls_etcd):
    from cube.ha.election import Election, Leader
    from cube.store.etcd import Etcd
    cluster, pki = tls_etcd
    e = Election(Etcd(cluster.endpoints, tls=pki.client()), f"/test/{uuid.uuid4().hex}/leader".encode(),
                 Leader("a", "h:1", "h:2"), 2)
    try:
        e.step()  # a lease, then the leader key
        assert e.term and e.leading()
    finally:
        e.resign()


def test_cube_manager_exits_2_when_etcd_refuses_its_certificate(tls_etcd, tmp_path):
    """A certificate from another CA: said at start, not retried for a minute."""
    from cube.ha.etcd_process import make_pki
    cluster, _ = tls_etcd
    other = make_pki(str(tmp_path / "other"))
    result = subprocess.run([sys.executable, "-c", "from cube.actors.supervisor import main; main()",
                             "--host", "127.0.0.1", "--store", "etcd", "--etcd", cluster.endpoints,
                             "--etcd-cacert", other.ca, "--etcd-cert", other.client_cert, "--etcd-key", other.client_key,
                             "--data-dir", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr and "--etcd-cacert" in result.stderr
