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
    etcd_cacert: str = ""  # https etcd: the CA file that signed its certificate (docs/ha.md, "Security")
    etcd_cert: str = ""  # and this manager's client certificate and key for etcd
    etcd_key: str = ""
    etcd_plaintext: bool = False  # plain http:// to an etcd off loopback: the operator trusts that network
    lease_ttl: float = 3.0  # the leader's etcd lease: a dead leader is replaced within about this (docs/ha.md)
    advertise: str = ""  # host workers should publish metrics to; default: the bind host or 127.0.0.1
    heartbeat_interval: float = 1.0
    grace: float = 5.0  # a worker silent this long is lost
    max_reports: float = 200.0  # heartbeats (and metrics samples) a second from all workers at most (pace.py)
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
        self.check_etcd_transport()

    def check_etcd_transport(self) -> None:
        """etcd holds the managers' secret key (docs/ha.md, "Security"): no plain HTTP to it off
        loopback unless the operator says the network is private (--etcd-plaintext), and https
        only with the CA to check etcd against and a client certificate to present."""
        if not self.etcd:
            if self.etcd_cacert or self.etcd_cert or self.etcd_key:
                raise ValueError("--etcd-cacert, --etcd-cert and --etcd-key go with --store etcd --etcd https://...")
            return
        from cube.store.base import StoreError
        from cube.store.etcd import parse_endpoints
        try:
            urls = parse_endpoints(self.etcd)
        except StoreError as e:
            raise ValueError(f"--etcd: {e}") from None
        plain = [f"{s}://{h}:{p}" for s, h, p in urls if s == "http" and not is_loopback(h)]
        if plain and not self.etcd_plaintext:
            raise ValueError(f"--etcd {', '.join(plain)}: plain HTTP to etcd off loopback lets anyone who reaches "
                             f"it take the cluster (etcd holds the managers' secret key); use https:// with "
                             f"--etcd-cacert, --etcd-cert and --etcd-key, or say --etcd-plaintext if etcd is on "
                             f"a private network you trust (docs/ha.md, \"Security\")")
        tls = any(s == "https" for s, _, _ in urls)
        if not tls and (self.etcd_cacert or self.etcd_cert or self.etcd_key):
            raise ValueError("--etcd-cacert, --etcd-cert and --etcd-key need https:// etcd endpoints")
        if tls and not self.etcd_cacert:
            raise ValueError("--etcd https://...: needs --etcd-cacert FILE, the CA that signed etcd's certificate")
        if bool(self.etcd_cert) != bool(self.etcd_key):
            raise ValueError("--etcd-cert and --etcd-key go together (this manager's client certificate and its key)")
        if tls and not self.etcd_cert:
            raise ValueError("--etcd https://...: needs --etcd-cert FILE and --etcd-key FILE, this manager's client "
                             "certificate (run etcd with --client-cert-auth: docs/ha.md, \"Security\")")
        for flag, path in (("--etcd-cacert", self.etcd_cacert), ("--etcd-cert", self.etcd_cert),
                           ("--etcd-key", self.etcd_key)):
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{flag} {path}: no such readable file")

    @property
    def etcd_tls(self):
        """The EtcdTLS every etcd client of this manager uses (cube/store/etcd.py), or None."""
        if not self.etcd_cacert:
            return None
        from cube.store.etcd import EtcdTLS
        return EtcdTLS(os.path.abspath(self.etcd_cacert), os.path.abspath(self.etcd_cert) if self.etcd_cert else "",
                       os.path.abspath(self.etcd_key) if self.etcd_key else "")

    @property
    def ha(self) -> bool:
        """Several managers share the store and elect a leader (docs/ha.md)."""
        return self.store == "etcd"


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _loopback_url(url: str) -> bool:
    host = url.strip().split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return is_loopback(host)
