"""`cube-manager`: a supervisor that runs the Store, Scheduler and Manager actors as processes.

It restarts an actor that dies (with backoff), and on SIGTERM/SIGINT stops them all, in reverse
order, within a few seconds. Children die with it even when it is SIGKILLed (PR_SET_PDEATHSIG),
so a restarted cube-manager never finds its ports held by orphans.
"""
from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from cube import config as cfg
from cube import logs
from cube.config import ManagerConfig

log = logging.getLogger("cube.supervisor")

STABLE_AFTER = 10.0  # an actor that lived this long has its restart backoff reset
MAX_BACKOFF = 5.0


@dataclass
class Child:
    name: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    process: mp.Process | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    restarts: int = 0


def _child_main(name: str, target: Callable[..., None], args: tuple[Any, ...], level: str,
                parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor handles Ctrl-C for everyone
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind, so LevelDB closes cleanly
    logs.setup(name, level)
    target(*args)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # it died before the prctl took effect (it may itself be PID 1)
        os._exit(1)


class Supervisor:
    def __init__(self, config: ManagerConfig, log_level: str = "INFO"):
        from cube.manager import run_manager
        from cube.actors.scheduler import run_scheduler
        from cube.actors.store import run_store
        self.config = config.resolved()
        self.level = log_level
        self.ctx = mp.get_context("fork")
        self.stopping = False
        self.children = [
            Child("store", run_store, (config.store_endpoint, config.store, os.path.join(config.data_dir, "db"),
                                       config.etcd, config.etcd_tls)),
            Child("scheduler", run_scheduler, (config.scheduler_endpoint, config.bind(config.metrics_port),
                                               config.scheduler, config.grace,
                                               "" if config.insecure else config.data_dir)),
            Child("manager", run_manager, (config,)),
        ]
        self.pidfile = os.path.join(config.data_dir, "run", "actors.json")

    def _start(self, child: Child) -> None:
        child.process = self.ctx.Process(target=_child_main, name=f"cube-{child.name}",
                                         args=(child.name, child.target, child.args, self.level, os.getpid()))
        child.process.start()
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)
        self._write_pids()

    def _write_pids(self) -> None:
        pids = {c.name: c.process.pid for c in self.children if c.process}
        pids["supervisor"] = os.getpid()
        tmp = self.pidfile + ".tmp"
        with open(tmp, "w") as f:
            json.dump(pids, f)
        os.replace(tmp, self.pidfile)

    def prepare_security(self) -> None:
        """Keys, join token, keyring and admin credentials exist before any actor starts (the
        Scheduler needs them too); the operator is told how to join workers and where the
        credentials are (docs/security.md)."""
        from cube.security.authority import Authority, addresses
        if self.config.insecure:
            log.warning("running WITHOUT security (--insecure, loopback only): anyone on this machine "
                        "can use this cluster")
            return
        if self.config.ha:  # every manager of the cluster: one key, token, keyring (docs/ha.md)
            from cube.ha.security import bootstrap
            creds = bootstrap(self.config)
            authority = Authority(self.config.data_dir, addresses(self.config))
        else:
            authority = Authority(self.config.data_dir, addresses(self.config))
            creds = authority.ensure_admin()
        log.info("admin credentials: %s (export CUBE_CREDENTIALS=%s)", creds, creds)
        log.info("join workers with: %s", authority.join_command())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.prepare_security()
        except RuntimeError as e:  # etcd never answered (docs/ha.md)
            log.error("cube-manager: %s", e)
            return 2
        for child in self.children:
            self._start(child)
        log.info("cube-manager up: api %s, workers %s, metrics %s, events %s, scheduler %s, data %s",
                 self.config.bind(self.config.api_port), self.config.bind(self.config.worker_port),
                 self.config.bind(self.config.metrics_port), self.config.bind(self.config.events_port),
                 self.config.scheduler, self.config.data_dir)
        # Prometheus metrics: the Manager process serves them, and logs their address once served,
        # or an error if it cannot (it runs on without them: docs/architecture.md, "Metrics").
        while not self.stopping:
            sentinels = [c.process.sentinel for c in self.children if c.process]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            self._reap_and_restart()
        self._stop_all()
        return 0

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for child in self.children:
            p = child.process
            if p is not None and not p.is_alive() and not self.stopping:
                p.join(0)
                lived = now - child.started
                child.failures = 0 if lived > STABLE_AFTER else child.failures + 1
                delay = min(0.1 * (2 ** child.failures), MAX_BACKOFF) if child.failures else 0.0
                log.warning("%s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                            child.name, p.pid, p.exitcode, lived, delay)
                child.process = None
                child.restart_at = now + delay
            if child.process is None and not self.stopping and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("received %s; stopping actors", signal.Signals(signum).name)
        self.stopping = True

    def _stop_all(self, grace: float = 3.0) -> None:
        live = [c.process for c in reversed(self.children) if c.process and c.process.is_alive()]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in live:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("%s did not stop in time; killing it", p.name)
                p.kill()
                p.join(1.0)
        log.info("cube-manager stopped")


def manager(host: str = cfg.env("host", "0.0.0.0"), api_port: int = cfg.env("api_port", cfg.API_PORT),
            worker_port: int = cfg.env("worker_port", cfg.WORKER_PORT),
            metrics_port: int = cfg.env("metrics_port", cfg.METRICS_PORT),
            events_port: int = cfg.env("events_port", cfg.EVENTS_PORT),
            prometheus_port: int = cfg.env("prometheus_port", cfg.PROMETHEUS_PORT),
            prometheus_host: str = cfg.env("prometheus_host", cfg.PROMETHEUS_HOST),
            data_dir: str = cfg.env("data_dir", ""), scheduler: str = cfg.env("scheduler", "epvm"),
            store: str = cfg.env("store", "leveldb"), etcd: str = cfg.env("etcd", ""),
            etcd_cacert: str = cfg.env("etcd_cacert", ""), etcd_cert: str = cfg.env("etcd_cert", ""),
            etcd_key: str = cfg.env("etcd_key", ""), etcd_plaintext: bool = cfg.env("etcd_plaintext", False),
            lease_ttl: float = cfg.env("lease_ttl", 3.0), advertise: str = cfg.env("advertise", ""),
            heartbeat: float = cfg.env("heartbeat", 1.0), grace: float = cfg.env("grace", 5.0),
            max_reports: float = cfg.env("max_reports", 200.0),
            retention: float = cfg.env("retention", 24 * 3600.0),
            max_tasks: int = cfg.env("max_tasks", 100_000), insecure: bool = cfg.env("insecure", False),
            events_kept: int = cfg.env("events_kept", 100_000),
            log_level: str = cfg.env("log_level", "INFO")) -> None:
    """Run the Cube manager: Store, Scheduler and Manager actors under one supervisor.

    Every flag also reads CUBE_<FLAG> (e.g. CUBE_API_PORT, CUBE_DATA_DIR, CUBE_SCHEDULER).
    --prometheus-port serves Prometheus metrics at /metrics (0: off) on --prometheus-host
    (default 127.0.0.1: other machines' scrapers need it set to an address they reach).
    --scheduler is one of roundrobin, greedy, epvm, epvm-book; --store is leveldb, memory, or etcd
    with --etcd http://H1:2379,http://H2:2379,... (several managers share it and elect a leader;
    --lease-ttl seconds bounds how long a dead leader goes unreplaced: docs/ha.md); https://
    endpoints need --etcd-cacert FILE (etcd's CA), --etcd-cert FILE and --etcd-key FILE (this
    manager's client certificate); plain http:// off loopback needs --etcd-plaintext (a private
    network you trust: etcd holds the manager's secret key);
    --heartbeat and --grace are for a small cluster: past --max-reports workers per heartbeat
    (200 a second by default) each reports less often and may be silent longer, in proportion;
    --retention is how long (seconds) finished tasks and events are kept (--events-kept: the
    event log's most events), --max-tasks how
    many tasks (live and finished) the cluster keeps at most; --insecure turns CURVE off and is
    only allowed on a loopback --host.
    """
    from cube import hardening
    from cube.scheduling import ALGORITHMS
    logs.setup("supervisor", log_level)
    hardening.secure_umask()  # the store, keys and sockets: this user's only
    hardening.raise_fd_limit()
    if scheduler not in ALGORITHMS:
        print(f"cube-manager: unknown scheduler {scheduler!r}; use one of {', '.join(sorted(ALGORITHMS))}",
              file=sys.stderr)
        sys.exit(2)
    config = ManagerConfig(host=str(host), api_port=int(api_port), worker_port=int(worker_port),
                           metrics_port=int(metrics_port), events_port=int(events_port),
                           scheduler=scheduler, store=store, etcd=str(etcd), lease_ttl=float(lease_ttl),
                           advertise=str(advertise), etcd_cacert=str(etcd_cacert), etcd_cert=str(etcd_cert),
                           etcd_key=str(etcd_key), etcd_plaintext=bool(etcd_plaintext),
                           heartbeat_interval=float(heartbeat), grace=float(grace), retention=float(retention),
                           max_reports=float(max_reports),
                           max_tasks=int(max_tasks), insecure=bool(insecure), events_kept=int(events_kept))
    if data_dir:
        config.data_dir = os.path.abspath(str(data_dir))
    config.prometheus_port, config.prometheus_host = int(prometheus_port), str(prometheus_host)
    if not 0 <= config.prometheus_port < 65536:
        print(f"cube-manager: --prometheus-port {prometheus_port}: a port (1-65535), or 0 for none", file=sys.stderr)
        sys.exit(2)
    try:
        config.check_security()
        config.check_store()
        if config.ha:  # an etcd that would refuse our group commits: say so now, not on every write
            from cube.store.etcd import EtcdStore
            EtcdStore(config.etcd, tls=config.etcd_tls).check_limits()
        hardening.ensure_private_dir(config.data_dir)
        hardening.tighten(config.data_dir)  # data written before the umask (an older Cube)
    except (ValueError, OSError) as e:
        print(f"cube-manager: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(Supervisor(config, log_level).run())


def main() -> None:
    import fire
    fire.Fire(manager, name="cube-manager")
