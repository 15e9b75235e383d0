"""A real local Cube cluster in processes: the one harness of the end-to-end tests, the chaos
runner and the benchmarks.

It lives in the package (not in tests/) so `cube chaos run` and bench/ can use it without
importing the test suite. Each Cluster has its own temp dir, free loopback ports and a unique
worker-name token, so its containers (label cube.worker=<token>-<short>) can be found and removed
however a run ends. Every process runs in its own session, so `cube-manager` can be killed or
paused as a whole (its process group: the supervisor and its three actors).
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal as signals
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

import docker
import docker.errors
import requests.exceptions

from cube.runtime.base import LABEL_TASK, LABEL_WORKER
from cube.wire.client import Client, all_pages

#: The directory holding the `cube` package: put on PYTHONPATH so every process runs this code.
ROOT = pathlib.Path(__file__).resolve().parent.parent
ACTORS = ("store", "scheduler", "manager")
BUSYBOX = "cube-busybox:latest"
_LAUNCH = "import sys; from {module} import main; sys.argv[0] = {name!r}; main()"


# ---- ports, polling, teardown -----------------------------------------------------------------

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


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "", interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy and return it; exceptions count as "not yet" (the cluster
    may be restarting). Raises TimeoutError naming `what` and the last value or exception."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate} (last: {last!r})")
        time.sleep(interval)


def stop_process_groups(procs: list[subprocess.Popen], grace: float = 8.0) -> None:
    """SIGTERM each process group (SIGCONT first: a paused group cannot act on it), then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            for sig in (signals.SIGCONT, signals.SIGTERM):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signals.SIGKILL)
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


# ---- Docker -----------------------------------------------------------------------------------

_built = False
_build_lock = threading.Lock()


def docker_available() -> bool:
    """True when the local Docker daemon answers a ping."""
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def ensure_busybox_image() -> str:
    """Build BUSYBOX once per process (there is no registry to pull from; the script skips an
    existing image)."""
    global _built
    with _build_lock:
        if not _built:
            script = ROOT / "scripts" / "busybox-image.sh"
            result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"building {BUSYBOX} failed: {result.stderr.strip() or result.stdout.strip()}")
            _built = True
    return BUSYBOX


def remove_containers(label_filter: str | list[str]) -> int:
    """Force-remove every container matching a label filter such as "cube.worker=t1"; returns count."""
    client = docker.from_env(timeout=30)
    try:
        return force_remove(client.containers.list(all=True, sparse=True, filters={"label": label_filter}))
    finally:
        client.close()


# ---- the cluster ------------------------------------------------------------------------------

class Cluster:
    """cube-manager and cube-workers as real processes on real ports against real Docker.

    `chaos=True` turns the fault injector on in every process (CUBE_CHAOS=1) with an empty rules
    file in the temp dir (`rules`). `stop_timeout` and `worker_args` go to every worker.
    `prometheus=True` serves /metrics from cube-manager (`prometheus_port`) and every worker
    (`worker_prometheus[short]`) on free loopback ports; otherwise they serve none (their default
    ports would collide between clusters).
    """

    def __init__(self, scheduler: str = "roundrobin", grace: float = 3.0, heartbeat: float = 0.5,
                 store: str = "leveldb", worker_args: list[str] | tuple[str, ...] = (),
                 stop_timeout: float | None = None, chaos: bool = False, log_level: str = "INFO",
                 prefix: str = "t", keep: bool = False, insecure: bool = False, prometheus: bool = False,
                 manager_args: list[str] | tuple[str, ...] = ()):
        self.scheduler, self.grace, self.heartbeat, self.store = scheduler, grace, heartbeat, store
        self.worker_args = list(worker_args)
        self.manager_args = list(manager_args)  # more cube-manager flags (e.g. --prometheus-host)
        self.stop_timeout = stop_timeout
        self.keep = keep
        self.insecure = insecure  # secure (CURVE, join token, credentials) unless asked otherwise
        self._creds: Any = None
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cube-chaos-" if chaos else "cube-cluster-"))
        self.token = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.api_port, self.worker_port, self.metrics_port, self.events_port = free_ports(4)
        # Where the manager listens, and the ZeroMQ context `call` uses: the multi-host test bed
        # (cube/testbed) puts them in the manager's host namespace.
        self.host = "127.0.0.1"
        self.zmq_context: Any = None
        self.prometheus = prometheus
        self.prometheus_port = 0
        self.worker_prometheus: dict[str, int] = {}  # short name -> its /metrics port (kept across restarts)
        if prometheus:
            self.prometheus_port = self._free_port()
        self.data_dir = self.tmp / "manager"
        # Every flag also reads CUBE_<FLAG>: nothing of the caller's environment may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUBE_")}
        self.env = {**env, "PYTHONUNBUFFERED": "1", "CUBE_LOG_LEVEL": log_level,
                    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        self.rules = None
        if chaos:
            from cube.chaos.rules import RuleFile  # only the chaos runner needs the chaos package
            self.rules = RuleFile(str(self.tmp / "chaos-rules.json"))
            self.rules.write()
            self.env.update(CUBE_CHAOS="1", CUBE_CHAOS_RULES=self.rules.path)
        self.manager: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}  # short name -> its latest process
        self.worker_managers = ""  # workers' --manager when not this one (several managers: cube/ha/harness.py)
        self._logs: list[Any] = []

    @property
    def endpoints(self) -> dict[str, str]:
        run = self.data_dir / "run"
        return {"api": f"tcp://{self.host}:{self.api_port}", "workers": f"tcp://{self.host}:{self.worker_port}",
                "metrics": f"tcp://{self.host}:{self.metrics_port}", "events": f"tcp://{self.host}:{self.events_port}",
                "store": f"ipc://{run}/store.sock", "scheduler": f"ipc://{run}/scheduler.sock"}

    def worker_name(self, short: str) -> str:
        return f"{self.token}-{short}"

    def _free_port(self) -> int:
        """A free loopback port none of this cluster's processes uses yet."""
        used = {self.api_port, self.worker_port, self.metrics_port, self.events_port, self.prometheus_port,
                *self.worker_prometheus.values()}
        return next(p for p in free_ports(8) if p not in used)

    # ---- processes ---------------------------------------------------------------------------
    def _command(self, module: str, prog: str, args: list[str], where: str = "cli") -> list[str]:
        """`python -c` importing `module` (from ROOT, by PYTHONPATH): no dependency on bin/ or on
        an installed copy of the package."""
        return [*self.command_prefix(where), sys.executable, "-c", _LAUNCH.format(module=module, name=prog), *args]

    def command_prefix(self, where: str) -> list[str]:
        """argv prefix of process `where` ("manager", "worker-<short>", "cli"): none here; the
        test bed's runs each in its host's network namespace."""
        return []

    def worker_address(self, short: str) -> str:
        """Worker `short`'s --address, where its published ports are."""
        return "127.0.0.1"

    def _spawn(self, log_name: str, module: str, prog: str, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{log_name}.log", "ab")
        self._logs.append(log)
        return subprocess.Popen(self._command(module, prog, args, log_name), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**self.env, **(env or {})}, cwd=self.tmp,
                                start_new_session=True)

    def start_manager(self, wait: bool = True, timeout: float = 20.0) -> None:
        self.manager = self._spawn("manager", "cube.actors.supervisor", "cube-manager", [
            "--host", self.host, "--api-port", str(self.api_port), "--worker-port", str(self.worker_port),
            "--metrics-port", str(self.metrics_port), "--events-port", str(self.events_port),
            "--data-dir", str(self.data_dir), "--scheduler", self.scheduler, "--store", self.store,
            "--grace", str(self.grace), "--heartbeat", str(self.heartbeat),
            "--prometheus-port", str(self.prometheus_port),
            *(["--insecure"] if self.insecure else []), *self.manager_args])
        if not self.insecure:  # the CLI processes this cluster runs use its admin credentials
            self.env["CUBE_CREDENTIALS"] = str(self.credentials_path)
        if wait:
            wait_for(lambda: self.call("manager.ping", timeout=1.0).get("state") == "ready", timeout,
                     "the manager to load its state")

    def start_worker(self, short: str, *flags: str, wait: bool = True) -> str:
        """Start (or restart) worker `short`; returns its full name."""
        name = self.worker_name(short)
        stop = ["--stop-timeout", str(self.stop_timeout)] if self.stop_timeout is not None else []
        # The token in the environment, as `cube join-token` prints it (docs/security.md).
        join = {} if self.insecure else {"CUBE_WORKER_JOIN": self.join_token()}
        if self.prometheus and short not in self.worker_prometheus:
            self.worker_prometheus[short] = self._free_port()
        prometheus = ["--prometheus-port", str(self.worker_prometheus.get(short, 0))]
        self.workers[short] = self._spawn(f"worker-{short}", "cube.actors.worker", "cube-worker", [
            "--manager", self.worker_managers or f"{self.host}:{self.worker_port}", "--name", name,
            "--address", self.worker_address(short),
            "--data-dir", str(self.tmp / f"worker-{short}"), *(["--insecure"] if self.insecure else []),
            *stop, *prometheus, *self.worker_args, *flags], env=join)
        if wait:
            self.wait_worker_ready(short)
        return name

    def wait_worker_ready(self, short: str, timeout: float = 30.0) -> None:
        name = self.worker_name(short)

        def ready() -> bool:
            # "ready" only: a worker a restarted manager merely remembers has not said hello to
            # it yet (docs/chaos.md, actors-answer).
            n = self.nodes(timeout=2.0).get(name)
            return bool(n and n["state"] == "ready" and n.get("metrics") and n["metrics"].get("state") == "alive")
        wait_for(ready, timeout, f"worker {name} to be ready with metrics")

    def actor_pids(self) -> dict[str, int]:
        """The supervisor's actors (store, scheduler, manager) by its actors.json; {} before it is written."""
        try:
            return {k: int(v) for k, v in json.loads((self.data_dir / "run" / "actors.json").read_text()).items()}
        except (OSError, ValueError):
            return {}

    def pids(self) -> dict[str, int]:
        """Live pids: the actors, supervisor (= cube-manager, its process group) and each worker."""
        pids: dict[str, int] = {}
        if self.manager is not None and self.manager.poll() is None:
            pids.update(self.actor_pids())
            pids["supervisor"] = pids["cube-manager"] = self.manager.pid
        for short, p in self.workers.items():
            if p.poll() is None:
                pids[short] = p.pid
        return pids

    def signal(self, target: str, sig: int, wait: bool | None = None, timeout: float = 10.0) -> int:
        """Send `sig` to an actor, the supervisor, the whole cube-manager or a worker (by short
        name; both of those as a process group, like a machine-level crash or freeze); returns the
        pid. `wait` (default: for SIGKILL) waits for the process to exit; never for an actor, as
        the supervisor restarts it."""
        pids = self.pids()
        pid = pids.get(target)
        if pid is None:
            raise LookupError(f"no live process for {target!r} (known: {', '.join(sorted(pids))})")
        proc = self.manager if target in ("cube-manager", "supervisor") else self.workers.get(target)
        if target == "cube-manager" or target in self.workers:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        if proc is not None and (sig == signals.SIGKILL if wait is None else wait):
            proc.wait(timeout)  # the supervisor's actors follow it (PR_SET_PDEATHSIG)
        return pid

    def kill_manager(self, sig: int = signals.SIGKILL) -> None:
        """SIGKILL: the whole cube-manager at once, as a machine crash would; another signal: to
        the supervisor alone (SIGTERM: an orderly shutdown of its actors). Waits for it to exit."""
        self.signal("cube-manager" if sig == signals.SIGKILL else "supervisor", sig, wait=True)

    def alive(self, target: str) -> bool:
        """Whether cube-manager (or "supervisor") or worker `target` is running."""
        proc = self.manager if target in ("cube-manager", "supervisor") else self.workers.get(target)
        return proc is not None and proc.poll() is None

    # ---- security (docs/security.md) ----------------------------------------------------------
    @property
    def credentials_path(self) -> pathlib.Path:
        return self.data_dir / "admin.credentials"

    def credentials(self) -> Any:
        """The admin credentials cube-manager wrote (waits for them), or None when insecure."""
        if self.insecure:
            return None
        if self._creds is None:
            from cube.security.credentials import Credentials
            wait_for(self.credentials_path.exists, 20.0, "cube-manager to write its admin credentials")
            self._creds = Credentials.load(str(self.credentials_path))
        return self._creds

    def worker_curve(self, worker: str) -> Any:
        """CURVE settings speaking with worker `worker`'s own key (short or full name): what a
        second process of that worker, holding its data dir, would present."""
        from cube.security import keys
        from cube.security.curve import CurveClient
        short = worker.removeprefix(self.token + "-")
        pair = keys.load_or_create(str(self.tmp / f"worker-{short}"), "worker")
        return CurveClient(pair, self.credentials().server_key.encode())

    def join_token(self) -> str:
        path = self.data_dir / "join-token"
        wait_for(path.exists, 20.0, "cube-manager to write its join token")
        return path.read_text().strip()

    # ---- talking to it -----------------------------------------------------------------------
    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             endpoint: str = "api") -> dict[str, Any]:
        creds = self.credentials() if endpoint == "api" else None
        client = Client(self.endpoints[endpoint], name="harness", timeout=timeout, ctx=self.zmq_context,
                        curve=creds.curve() if creds else None)
        try:
            return client.call(msg_type, body or {})
        finally:
            client.close()

    def _all_pages(self, msg_type: str, key: str, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return all_pages(lambda t, b: self.call(t, b, timeout), msg_type, {**body, "limit": 5000}, key)

    def tasks(self, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Every task by id, finished ones included (task.ls hides them by default)."""
        return {t["id"]: t for t in self._all_pages("task.ls", "tasks", {"all": True}, timeout)}

    def nodes(self, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self._all_pages("node.ls", "nodes", {}, timeout)}

    def task(self, task_id: str) -> dict[str, Any]:
        return self.call("task.inspect", {"id": task_id})["task"]

    def events(self, task_id: str) -> list[dict[str, Any]]:
        return self.call("task.inspect", {"id": task_id})["events"]

    def wait_state(self, task_id: str, state: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        """Wait for the task to be in `state` with the given field values; returns the task."""
        def reached() -> dict[str, Any] | None:
            t = self.task(task_id)
            if t["state"] == state and all(t.get(k) == v for k, v in match.items()):
                return t
            return None
        return wait_for(reached, timeout, f"task {task_id[:8]} to be {state} {match or ''}")

    def cli_command(self, *args: str) -> list[str]:
        """The argv of `cube ARGS --manager <this cluster>`, to run it in the background."""
        return self._command("cube.cli.main", "cube", [*args, "--manager", f"{self.host}:{self.api_port}"])

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run(self.cli_command(*args), capture_output=True, text=True, timeout=timeout,
                                env=self.env, cwd=self.tmp, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"cube {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def start_task(self, *flags: str) -> str:
        """`cube task start FLAGS`; returns the new task's id."""
        return self.cli("task", "start", *flags).stdout.strip()

    def containers(self, all_: bool = True) -> list[Any]:
        """This cluster's containers: a task's, labelled with one of its workers' names."""
        client = docker.from_env(timeout=30)
        try:
            found = client.containers.list(all=all_, filters={"label": LABEL_TASK}, ignore_removed=True)
            return [c for c in found if (c.labels.get(LABEL_WORKER) or "").startswith(self.token + "-")]
        finally:
            client.close()

    def log(self, name: str) -> str:
        """The output of process `name`: "manager" or "worker-<short>"."""
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 25) -> str:
        out = []
        for name in ["manager", *[f"worker-{s}" for s in self.workers]]:
            tail = self.log(name).splitlines()[-lines:]
            if tail:
                out.append(f"---- {name}.log (last {len(tail)} lines) ----\n" + "\n".join(tail))
        return "\n".join(out)

    # ---- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, remove every container of the cluster, then the temp dir (unless `keep`)."""
        stop_process_groups([p for p in [*self.workers.values(), self.manager] if p is not None])
        for f in self._logs:
            f.close()
        try:
            force_remove(self.containers())
        finally:  # the temp dir goes even when Docker cannot be reached (it said why already)
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)


class RunningWatch:
    """Counts tasks reaching Running on the Manager's task.event stream (PUB/SUB), for the
    benchmarks: `counts(event body)` says which tasks count; `done` is set once `n` did."""

    def __init__(self, endpoint: str, n: int, counts: Callable[[dict[str, Any]], bool], curve: Any = None):
        self.n, self.counts, self.curve = n, counts, curve
        self.running: set[str] = set()
        self.last = 0.0  # perf_counter time of the latest one
        self.done = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.5)  # PUB/SUB: the subscription must reach the publisher before anything is sent

    def _run(self, endpoint: str) -> None:
        import zmq

        from cube.messages import task as task_msg
        from cube.wire import sockets
        from cube.wire.envelope import decode
        ctx = zmq.Context()
        # Running events only, filtered by the Manager's PUB socket (docs/protocol.md, "Events")
        sub = sockets.subscriber(ctx, connect=endpoint, topics=(f"{task_msg.EVENT}.Running".encode(),),
                                 curve=self.curve)
        sub.setsockopt(zmq.RCVHWM, 0)  # never drop an event: they are counted
        self._ready.set()
        try:
            while not self._stop.is_set() and not self.done.is_set():
                if not sub.poll(100):
                    continue
                while True:  # everything that came meanwhile, then poll again
                    try:
                        body = decode(sub.recv_multipart(zmq.NOBLOCK)[-1]).body
                    except zmq.Again:
                        break
                    if body["state"] == "Running" and self.counts(body):
                        self.running.add(body["task_id"])
                        self.last = time.perf_counter()
                        if len(self.running) >= self.n:
                            self.done.set()
        finally:
            sub.close(linger=0)
            ctx.term()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
