"""A real local Cube cluster for end-to-end tests: separate processes, real ports, real Docker.

Each Cluster has its own temp dir, free ports and a unique worker-name prefix, so its containers
(labelled cube.worker=<prefix>-…) can be found and removed however a test ends.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Callable

import psutil

from cube.chaos.cluster import free_ports, stop_process_groups  # noqa: F401  (shared by every harness)
from cube.chaos.cluster import wait_for as poll
from cube.wire.client import Client
from tests.docker_support import remove_containers

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail the test naming `what`."""
    try:
        return poll(predicate, timeout, what or str(predicate), interval)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


class Cluster:
    def __init__(self, scheduler: str = "roundrobin", grace: float = 3.0, prefix: str = "t"):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cube-e2e-"))
        self.token = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.api_port, self.worker_port, self.metrics_port, self.events_port = free_ports(4)
        self.scheduler = scheduler
        self.grace = grace
        self.manager: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUBE_LOG_LEVEL": "INFO"}

    # ---- processes --------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        self._logs.append(log)
        return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, cwd=ROOT, start_new_session=True)

    def start_manager(self, wait: bool = True) -> None:
        self.manager = self._spawn("manager", [
            str(BIN / "cube-manager"), "--host", "127.0.0.1", "--api-port", str(self.api_port),
            "--worker-port", str(self.worker_port), "--metrics-port", str(self.metrics_port),
            "--events-port", str(self.events_port), "--data-dir", str(self.tmp / "manager"),
            "--scheduler", self.scheduler, "--grace", str(self.grace), "--heartbeat", "0.5"])
        if wait:
            wait_for(lambda: self.call("manager.ping").get("state") == "ready", 15, what="manager to load its state")

    def worker_name(self, short: str) -> str:
        return f"{self.token}-{short}"

    def start_worker(self, short: str, *flags: str, wait: bool = True) -> str:
        name = self.worker_name(short)
        self.workers[short] = self._spawn(f"worker-{short}", [
            str(BIN / "cube-worker"), "--manager", f"127.0.0.1:{self.worker_port}", "--name", name,
            "--address", "127.0.0.1", "--data-dir", str(self.tmp / f"worker-{short}"), *flags])
        if wait:
            self.wait_node_ready(short)
        return name

    def wait_node_ready(self, short: str, timeout: float = 20.0) -> None:
        name = self.worker_name(short)

        def ready() -> bool:
            nodes = {n["name"]: n for n in self.call("node.ls")["nodes"]}
            n = nodes.get(name)
            return bool(n and n["state"] == "ready" and n.get("metrics") and n["metrics"]["state"] == "alive")
        wait_for(ready, timeout, what=f"worker {name} to be ready with metrics")

    def signal_worker(self, short: str, sig: int) -> None:
        self.workers[short].send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.workers[short].wait(10)

    def kill_manager(self, sig: int = signal.SIGKILL) -> None:
        assert self.manager is not None
        if sig == signal.SIGKILL:  # the whole tree, as a machine crash would
            procs = [psutil.Process(self.manager.pid), *psutil.Process(self.manager.pid).children(recursive=True)]
            for p in procs:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
        else:
            self.manager.send_signal(sig)
        self.manager.wait(10)

    def actor_pids(self) -> dict[str, int]:
        return json.loads((self.tmp / "manager" / "run" / "actors.json").read_text())

    # ---- talking to it -----------------------------------------------------------------------
    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0) -> dict[str, Any]:
        client = Client(f"tcp://127.0.0.1:{self.api_port}", name="test", timeout=timeout)
        try:
            return client.call(msg_type, body or {})
        finally:
            client.close()

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(BIN / "cube"), *args, "--manager", f"127.0.0.1:{self.api_port}"],
                                capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"cube {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.call("task.ls")["tasks"]}

    def task(self, task_id: str) -> dict[str, Any]:
        return self.call("task.inspect", {"id": task_id})["task"]

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return self.call("task.inspect", {"id": task_id})["events"]

    def wait_state(self, task_id: str, state: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            t = self.task(task_id)
            if t["state"] == state and all(t.get(k) == v for k, v in match.items()):
                return t
            return None
        return wait_for(reached, timeout, what=f"task {task_id[:8]} to be {state} {match or ''}")

    def start_task(self, *flags: str) -> str:
        return self.cli("task", "start", *flags).stdout.strip()

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- cleanup ------------------------------------------------------------------------------
    def close(self) -> None:
        stop_process_groups([p for p in [*self.workers.values(), self.manager] if p is not None])
        for f in self._logs:
            f.close()
        for short in list(self.workers):
            remove_containers(f"cube.worker={self.worker_name(short)}")
        shutil.rmtree(self.tmp, ignore_errors=True)
