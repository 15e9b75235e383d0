"""Every manager of a cluster gets one identity from the Store (cube/ha/security.py)."""
from __future__ import annotations

import pytest

from cube.config import ManagerConfig
from cube.ha.etcd_process import EtcdCluster
from cube.ha.security import CHANGING, IDENTITY, bootstrap, read_files


@pytest.fixture
def etcd(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd"), 1).start()
    yield cluster.endpoints
    cluster.stop()


def config(tmp_path, name: str, port: int, etcd: str) -> ManagerConfig:
    return ManagerConfig(host="127.0.0.1", api_port=port, worker_port=port + 1, store="etcd", etcd=etcd,
                         data_dir=str(tmp_path / name))


def test_the_second_manager_takes_the_first_ones_identity(tmp_path, etcd):
    a, b = config(tmp_path, "a", 7000, etcd), config(tmp_path, "b", 7100, etcd)
    bootstrap(a)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keyring.json").write_text("{}")  # whatever it had is replaced
    creds = bootstrap(b)
    mine, theirs = read_files(a.data_dir, IDENTITY + CHANGING), read_files(b.data_dir, IDENTITY + CHANGING)
    assert set(mine) == set(IDENTITY + CHANGING) and mine == theirs
    assert creds == str(tmp_path / "b" / "admin.credentials")
    bootstrap(b)  # again (a restart): nothing changes
    assert read_files(b.data_dir, IDENTITY + CHANGING) == mine


def test_no_etcd_is_a_clear_error_after_waiting():
    from cube.ha.etcd_process import free_port
    from cube.ha.security import _wait_for_etcd
    from cube.store.etcd import EtcdStore
    store = EtcdStore(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError, match="did not answer for 0.5s"):
        _wait_for_etcd(lambda: store.get("meta", "security"), "there", patience=0.5)
