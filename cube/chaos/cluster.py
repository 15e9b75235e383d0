"""A local Cube cluster for chaos scripts: cube-manager and workers as real processes, chaos on.

Each cluster has its own temp dir, free loopback ports and a unique worker-name prefix (the
token), so its containers (label cube.worker=<token>-<short>) can be found and removed however a
script ends. Every process is started in its own session, so `cube-manager` can be killed or
paused as a whole (its process group: the supervisor and its three actors).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

import docker
import docker.errors

from cube.chaos.rules import RuleFile
from cube.chaos.script import ClusterSpec
from cube.runtime.base import LABEL_TASK, LABEL_WORKER
from cube.wire.client import Client

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTORS = ("store", "scheduler", "manager")
_LAUNCH = "import sys; from {module} import main; sys.argv[0] = {name!r}; main()"


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int) -> list[int]:
    """n bindable loopback ports *below* the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) is in the range it also uses for outgoing
    connections: between our choice and the manager's bind, another cluster's connection can take
    it as its local port, and a worker connecting to a not-yet-bound port in that range can even
    connect to itself. Ports below the range are only ever taken by an explicit bind.
    """
    low, _ = _ephemeral_range()
    rnd = random.Random()
    ports: list[int] = []
    for _ in range(2000):
        if len(ports) == n:
            return ports
        port = rnd.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in ports:
            ports.append(port)
    raise RuntimeError(f"could not find {n} free loopback ports")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy (exceptions count as not yet); return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # the cluster may be restarting: keep polling
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class LocalCluster:
    def __init__(self, spec: ClusterSpec, keep: bool = False, log_level: str = "INFO"):
        self.spec = spec
        self.keep = keep
        self.tmp = tempfile.mkdtemp(prefix="cube-chaos-")
        self.token = f"x{uuid.uuid4().hex[:6]}"
        self.api_port, self.worker_port, self.metrics_port, self.events_port = free_ports(4)
        self.data_dir = os.path.join(self.tmp, "manager")
        self.rules = RuleFile(os.path.join(self.tmp, "chaos-rules.json"))
        self.rules.write()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUBE_LOG_LEVEL": log_level, "CUBE_CHAOS": "1",
                    "CUBE_CHAOS_RULES": self.rules.path,
                    "PYTHONPATH": os.pathsep.join(p for p in (PKG_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self.manager: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.ever_started: set[str] = set()
        self._logs: list[Any] = []

    # ---- endpoints ---------------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, str]:
        run = os.path.join(self.data_dir, "run")
        return {"api": f"tcp://127.0.0.1:{self.api_port}", "workers": f"tcp://127.0.0.1:{self.worker_port}",
                "metrics": f"tcp://127.0.0.1:{self.metrics_port}", "events": f"tcp://127.0.0.1:{self.events_port}",
                "store": f"ipc://{run}/store.sock", "scheduler": f"ipc://{run}/scheduler.sock"}

    def worker_name(self, short: str) -> str:
        return f"{self.token}-{short}"

    @property
    def worker_names(self) -> dict[str, str]:
        return {s: self.worker_name(s) for s in self.spec.workers}

    # ---- processes ---------------------------------------------------------------------------
    def _spawn(self, log_name: str, module: str, prog: str, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.tmp, f"{log_name}.log"), "ab")
        self._logs.append(log)
        code = _LAUNCH.format(module=module, name=prog)
        return subprocess.Popen([sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, cwd=self.tmp, start_new_session=True)

    def start(self) -> None:
        self.start_manager()
        now = [w for w in self.spec.workers if w not in self.spec.later]
        for short in now:
            self.start_worker(short, wait=False)
        for short in now:
            self.wait_worker_ready(short)

    def start_manager(self, wait: bool = True) -> None:
        s = self.spec
        self.manager = self._spawn("manager", "cube.actors.supervisor", "cube-manager", [
            "--host", "127.0.0.1", "--api-port", str(self.api_port), "--worker-port", str(self.worker_port),
            "--metrics-port", str(self.metrics_port), "--events-port", str(self.events_port),
            "--data-dir", self.data_dir, "--scheduler", s.scheduler, "--store", s.store,
            "--grace", str(s.grace), "--heartbeat", str(s.heartbeat)])
        if wait:
            wait_for(lambda: self.call("manager.ping", timeout=1.0).get("state") == "ready", 20,
                     "the manager to load its state")

    def start_worker(self, short: str, wait: bool = True) -> None:
        self.workers[short] = self._spawn(f"worker-{short}", "cube.actors.worker", "cube-worker", [
            "--manager", f"127.0.0.1:{self.worker_port}", "--name", self.worker_name(short),
            "--address", "127.0.0.1", "--data-dir", os.path.join(self.tmp, f"worker-{short}"),
            "--stop-timeout", "2", *self.spec.worker_args])
        self.ever_started.add(short)
        if wait:
            self.wait_worker_ready(short)

    def wait_worker_ready(self, short: str, timeout: float = 30.0) -> None:
        name = self.worker_name(short)

        def ready() -> bool:
            # "ready" only: a worker a restarted manager merely remembers has not said hello to
            # it yet (docs/chaos.md, actors-answer).
            nodes = {n["name"]: n for n in self.call("node.ls", timeout=2.0)["nodes"]}
            n = nodes.get(name)
            return bool(n and n["state"] == "ready" and n.get("metrics") and n["metrics"].get("state") == "alive")
        wait_for(ready, timeout, f"worker {name} to be ready")

    def pids(self) -> dict[str, int]:
        """Live pids: store, scheduler, manager (from actors.json), supervisor, and each worker."""
        path = os.path.join(self.data_dir, "run", "actors.json")
        try:
            with open(path) as f:
                pids = {k: int(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            pids = {}
        if self.manager is not None and self.manager.poll() is None:
            pids["supervisor"] = pids["cube-manager"] = self.manager.pid
        else:
            for k in ("supervisor", "cube-manager", *ACTORS):
                pids.pop(k, None)
        for short, p in self.workers.items():
            if p.poll() is None:
                pids[short] = p.pid
        return pids

    def signal(self, target: str, sig: int) -> int:
        """Send `sig` to an actor, the whole cube-manager (group) or a worker; returns the pid."""
        pid = self.pids().get(target)
        if pid is None:
            raise LookupError(f"no live process for {target!r} (known: {', '.join(sorted(self.pids()))})")
        if target in ("cube-manager", *self.spec.workers):
            os.killpg(pid, sig)  # the whole session: a machine-level crash or freeze
            if sig == signal.SIGKILL:
                proc = self.manager if target == "cube-manager" else self.workers[target]
                proc.wait(10)
        else:
            os.kill(pid, sig)
            if target == "supervisor" and sig == signal.SIGKILL and self.manager is not None:
                self.manager.wait(10)  # its actors follow it (PR_SET_PDEATHSIG)
        return pid

    def alive(self, target: str) -> bool:
        proc = self.manager if target == "cube-manager" else self.workers.get(target)
        return proc is not None and proc.poll() is None

    # ---- talking to it -----------------------------------------------------------------------------
    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             endpoint: str = "api") -> dict[str, Any]:
        client = Client(self.endpoints[endpoint], name="chaos", timeout=timeout)
        try:
            return client.call(msg_type, body or {})
        finally:
            client.close()

    def containers(self, all_: bool = True) -> list[Any]:
        """This cluster's containers (any state): labelled with one of its workers' names."""
        client = docker.from_env(timeout=30)
        try:
            found = client.containers.list(all=all_, filters={"label": LABEL_TASK}, ignore_removed=True)
            return [c for c in found if (c.labels.get(LABEL_WORKER) or "").startswith(self.token + "-")]
        finally:
            client.close()

    def log_tail(self, lines: int = 25) -> str:
        out = []
        for name in ["manager", *[f"worker-{s}" for s in self.ever_started]]:
            path = os.path.join(self.tmp, f"{name}.log")
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
                out.append(f"---- {name}.log (last {len(tail)} lines) ----\n" + "\n".join(tail))
        return "\n".join(out)

    # ---- teardown ------------------------------------------------------------------------------------
    def close(self) -> None:
        stop_process_groups([p for p in [*self.workers.values(), self.manager] if p is not None])
        for f in self._logs:
            f.close()
        self.remove_containers()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def remove_containers(self) -> int:
        return force_remove(self.containers())


def stop_process_groups(procs: list[subprocess.Popen], grace: float = 8.0) -> None:
    """SIGTERM each process group (SIGCONT first: a paused group cannot act on it), then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)


def force_remove(containers: list[Any]) -> int:
    """Remove containers with their volumes, whatever their state; returns how many went."""
    removed = 0
    for c in containers:
        try:
            c.remove(v=True, force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise
    return removed
