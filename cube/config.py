"""Defaults for every endpoint and interval, each overridable by flag and `CUBE_…` variable."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

API_PORT = 5555
WORKER_PORT = 5556
METRICS_PORT = 5557
EVENTS_PORT = 5558
PROMETHEUS_PORT = 5559  # cube-manager's /metrics (docs/architecture.md, "Metrics")
WORKER_PROMETHEUS_PORT = 5560  # cube-worker's /metrics
PROMETHEUS_HOST = "127.0.0.1"  # loopback by default, as node exporters usually are


def env(name: str, default):
    """`CUBE_<NAME>` from the environment, converted to the default's type."""
    raw = os.environ.get("CUBE_" + name.upper())
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def default_data_dir(kind: str) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "cube", kind)


@dataclass
class ManagerConfig:
    host: str = "0.0.0.0"
    api_port: int = API_PORT
    worker_port: int = WORKER_PORT
    metrics_port: int = METRICS_PORT
    events_port: int = EVENTS_PORT
    data_dir: str = field(default_factory=lambda: default_data_dir("manager"))
    scheduler: str = "epvm"
    store: str = "leveldb"  # or "etcd" (several managers, docs/ha.md), or "memory" (tests)
    etcd: str = ""  # etcd endpoints, http://H1:2379,http://H2:2379 (with store "etcd")
    lease_ttl: float = 3.0  # the leader's etcd lease: a dead leader is replaced within about this (docs/ha.md)
    advertise: str = ""  # host workers should publish metrics to; default: the bind host or 127.0.0.1
    heartbeat_interval: float = 1.0
    grace: float = 5.0  # a worker silent this long is lost
    command_retry: float = 1.0  # re-send an unacknowledged command to a worker after this
    retention: float = 24 * 3600.0  # finished tasks (and their events) are forgotten after this
    max_tasks: int = 100_000  # tasks the cluster keeps (live and finished); starts beyond are refused
    events_kept: int = 100_000  # the event log keeps this many events at most (and none older than retention)
    insecure: bool = False  # no CURVE: only allowed on a loopback address (in-process tests)
    store_endpoint: str = ""  # default: ipc:// in the data directory
    prometheus_port: int = 0  # /metrics of the Manager actor's process; 0: none (cube-manager's default is 5559)
    prometheus_host: str = PROMETHEUS_HOST
    scheduler_endpoint: str = ""

    def resolved(self) -> "ManagerConfig":
        run = os.path.join(self.data_dir, "run")
        os.makedirs(run, exist_ok=True)
        if not self.store_endpoint:
            self.store_endpoint = f"ipc://{run}/store.sock"
        if not self.scheduler_endpoint:
            self.scheduler_endpoint = f"ipc://{run}/scheduler.sock"
        return self

    def bind(self, port: int) -> str:
        return f"tcp://{self.host}:{port}"

    @property
    def advertised_host(self) -> str:
        return self.advertise or ("127.0.0.1" if self.host in ("0.0.0.0", "*") else self.host)

    @property
    def metrics_advertised(self) -> str:
        return f"tcp://{self.advertised_host}:{self.metrics_port}"

    def check_security(self) -> None:
        """There is no unauthenticated mode on an address other machines can reach."""
        if self.insecure and not is_loopback(self.host):
            raise ValueError(f"--insecure is only allowed on a loopback address, not {self.host!r}")

    def check_store(self) -> None:
        if self.store not in ("leveldb", "memory", "etcd"):
            raise ValueError(f"--store {self.store!r}: use leveldb, etcd or memory")
        if (self.store == "etcd") != bool(self.etcd):
            raise ValueError("--store etcd needs --etcd http://HOST:2379,... (and --etcd needs --store etcd)")
        if not 2 <= self.lease_ttl <= 60:  # etcd leases count whole seconds, at least 2 with its default timing
            raise ValueError(f"--lease-ttl {self.lease_ttl:g}: between 2 and 60 seconds")
        if self.ha and is_loopback(self.advertised_host) and not all(_loopback_url(u) for u in self.etcd.split(",")):
            # Every manager would name itself 127.0.0.1 in the leader key: clients and workers
            # sent to the leader would go to their own machine (docs/ha.md).
            raise ValueError(f"--store etcd with managers on several machines needs the address they are reached at: "
                             f"--host (not {self.host!r}) or --advertise HOST")

    @property
    def ha(self) -> bool:
        """Several managers share the store and elect a leader (docs/ha.md)."""
        return self.store == "etcd"


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _loopback_url(url: str) -> bool:
    host = url.strip().split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return is_loopback(host)
