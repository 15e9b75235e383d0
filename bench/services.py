"""30 replicas to Running, side by side on this machine: one Cube `service.create`, raw Docker SDK
starts on 8 threads, and (where Docker Swarm can be initialised) `docker service create`.

    .venv/bin/python bench/services.py                 # 30 replicas, one round
    .venv/bin/python bench/services.py --replicas 30 --rounds 3

All three run the same local image (cube-busybox, no registry) with the same command
(`sleep 600`), on the same Docker daemon, one after the other, and each is cleaned up before the
next starts (its containers removed), so none pays for another's leftovers:

- raw: 30 `containers.run(detach=True)` (create + start) from 8 threads, one Docker client each;
  the time until the last call returned (each returns once its container is started).
- cube: a real local cluster (cube-manager + 2 cube-workers as processes, CURVE on, LevelDB with
  synced writes), one `service.create` request for 30 replicas through the API; the time until
  the Manager published the 30th Running event (its own task.event stream). Also, as a user
  would: `cube service create` (the CLI, following until every replica runs), timed until it
  exits.
- swarm: `docker swarm init --advertise-addr 127.0.0.1` (left again afterwards, unless this
  machine was already in a swarm), one service create request for 30 replicas through the
  Docker API (what `docker service create --detach --replicas 30 --no-resolve-image` sends,
  without the CLI's process start), timed until 30 of its tasks are running (the task list is
  polled every 20 ms once the daemon has started the 30 containers, so the polling neither
  loads the daemon while it works nor delays the answer).

Each is timed until the system itself says the replicas run: a start call returned (raw), the
Manager's Running event (Cube, written to its Store first), the task state (Swarm). The same
yardstick for all three is also printed: the time of the daemon's `start` event of the 30th
container (`start:` figures), so a difference in how each reports cannot hide in the result.

Prints each time and ends with one line:
    RESULT replicas=30 raw_s=… cube_s=… cube_cli_s=… swarm_s=… swarm_over_cube=… cube_over_raw=…
           raw_start_s=… cube_start_s=… swarm_start_s=…
Targets (issue 11): swarm/cube >= 2.0, cube/raw <= 1.25.
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
from docker.types import ServiceMode

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.harness import Cluster, RunningWatch, ensure_busybox_image, force_remove, wait_for
from cube.runtime.base import LABEL_WORKER
from cube.wire.client import Client

COMMAND = ["sleep", "600"]
LABEL = "cube.bench"  # raw containers carry it, so they are found and removed whatever happens


# ---- waiting until containers are gone (between measurements) ------------------------------------

def wait_gone(find: Callable[[], list[Any]], what: str, timeout: float = 120.0) -> None:
    wait_for(lambda: not find(), timeout, f"{what} to be removed", interval=0.2)


# ---- the daemon's own account: container start events -----------------------------------------------

class DaemonStarts:
    """Follows the daemon's container `start` events for containers with `label`, whose labels
    pass `keep` (wall-clock times from the daemon, so no delivery delay is counted)."""

    def __init__(self, label: str, keep: Callable[[dict[str, str]], bool] = lambda labels: True):
        self.keep = keep
        self.starts: dict[str, float] = {}  # container id -> daemon time of its (first) start
        self._cond = threading.Condition()
        self._client = docker.from_env(timeout=None)
        self._stream = self._client.events(decode=True, filters={"type": "container", "event": "start",
                                                                 "label": label})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for e in self._stream:
                if not self.keep((e.get("Actor") or {}).get("Attributes") or {}):
                    continue
                with self._cond:
                    self.starts.setdefault(e.get("id", ""), e["timeNano"] / 1e9)
                    self._cond.notify_all()
        except Exception:  # the stream closed by close()
            pass

    def wait(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.starts) >= n, timeout)

    def nth(self, n: int, t0_wall: float) -> float | None:
        """Seconds from t0_wall to the n-th start (None if fewer than n were seen)."""
        with self._cond:
            times = sorted(self.starts.values())
        return times[n - 1] - t0_wall if len(times) >= n else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        self._client.close()
        self._thread.join(2)


# ---- raw Docker SDK ----------------------------------------------------------------------------------

def raw(image: str, n: int, threads: int, token: str, round_: int) -> tuple[float, float | None]:
    """n containers created and started on `threads` threads; seconds until all started (and
    until the daemon's n-th start event)."""
    local = threading.local()
    clients: list[docker.DockerClient] = []
    lock = threading.Lock()

    def client() -> docker.DockerClient:
        if not hasattr(local, "client"):
            local.client = docker.from_env(timeout=60)
            with lock:
                clients.append(local.client)
        return local.client

    def one(i: int) -> str:
        c = client().containers.run(image, COMMAND, detach=True, name=f"{token}-raw{round_}-{i}", labels={LABEL: token})
        return c.id

    starts = DaemonStarts(f"{LABEL}={token}")
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: client(), range(threads)))  # connections made before the clock starts
            t0, t0_wall = time.perf_counter(), time.time()
            started = list(pool.map(one, range(n)))
            took = time.perf_counter() - t0
        starts.wait(n, 10)
        check = docker.from_env(timeout=60)
        try:
            running = check.containers.list(filters={"label": f"{LABEL}={token}", "status": "running"})
            if len(running) != n or len(set(started)) != n:
                raise SystemExit(f"raw: {len(running)} of {n} containers running")
        finally:
            check.close()
        return took, starts.nth(n, t0_wall)
    finally:
        starts.close()
        for c in clients:
            c.close()
        remove_raw(token)  # before the next measurement


def remove_raw(token: str) -> None:
    client = docker.from_env(timeout=120)
    try:
        find = lambda: client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={token}"})
        force_remove(find())
        wait_gone(find, "the raw containers")
    finally:
        client.close()


# ---- Cube ----------------------------------------------------------------------------------------------

def cube_api(c: Cluster, image: str, n: int, name: str) -> tuple[float, float | None]:
    """One service.create for n replicas; seconds until the n-th Running event (and until the
    daemon's n-th start event of the cluster's containers)."""
    curve = c.credentials().curve()
    workers = {c.worker_name("w1"), c.worker_name("w2")}
    starts = DaemonStarts(LABEL_WORKER, keep=lambda labels: labels.get(LABEL_WORKER) in workers)
    watch = RunningWatch(c.endpoints["events"], n, lambda body: (body.get("task") or {}).get("service") == name, curve)
    client = Client(c.endpoints["api"], name="bench", timeout=30, curve=curve)
    try:
        client.call("manager.ping")  # the CURVE handshake is made before the clock starts
        t0, t0_wall = time.perf_counter(), time.time()
        client.call("service.create", {"name": name, "replicas": n, "task": {"image": image, "command": COMMAND}})
        if not watch.done.wait(300):
            raise SystemExit(f"cube: only {len(watch.running)} of {n} replicas Running after 300 s")
        starts.wait(n, 10)
        return watch.last - t0, starts.nth(n, t0_wall)
    finally:
        client.close()
        watch.close()
        starts.close()


def cube_cli(c: Cluster, image: str, n: int, name: str) -> float:
    """`cube service create` as a user types it (it follows until every replica runs)."""
    t0 = time.perf_counter()
    result = subprocess.run(c.cli_command("service", "create", "--name", name, "--replicas", str(n),
                                          "--image", image, "--cmd", " ".join(COMMAND), "--timeout", "300"),
                            capture_output=True, text=True, env=c.env, cwd=c.tmp, timeout=330,
                            stdin=subprocess.DEVNULL, check=False)
    took = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-300:]}")
    up = [t for t in c.call("service.ps", {"name": name})["tasks"] if t["state"] == "Running"]
    if len(up) != n:
        raise RuntimeError(f"the CLI returned with {len(up)} of {n} replicas Running")
    return took


def cube_remove(c: Cluster, name: str) -> None:
    c.call("service.rm", {"name": name}, timeout=30)
    wait_gone(lambda: c.containers(all_=True), f"service {name}'s containers")


# ---- Docker Swarm --------------------------------------------------------------------------------------

def swarm_state(client: docker.DockerClient) -> str:
    return (client.info().get("Swarm") or {}).get("LocalNodeState", "")


def swarm_init(client: docker.DockerClient) -> tuple[bool, str]:
    """(usable, why not); joins nothing: a one-node swarm on 127.0.0.1."""
    if swarm_state(client) == "active":
        return True, "already active"
    r = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                       text=True, timeout=60, check=False)
    if r.returncode != 0:
        return False, (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else "failed"
    return True, ""


def swarm_leave() -> None:
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, text=True, timeout=120, check=False)


def swarm(client: docker.DockerClient, image: str, n: int, name: str) -> tuple[float, float | None]:
    """One service create request (as the CLI sends it with --no-resolve-image: the API itself
    never asks a registry); seconds until n of its tasks are running (and until the daemon's
    n-th start event of its containers)."""
    starts = DaemonStarts(f"com.docker.swarm.service.name={name}")
    try:
        t0, t0_wall = time.perf_counter(), time.time()
        try:
            client.services.create(image, command=COMMAND, name=name, mode=ServiceMode("replicated", replicas=n))
        except docker.errors.APIError as e:
            raise RuntimeError(f"docker service create: {e.explanation or e}") from None

        def running() -> bool:
            tasks = client.api.tasks(filters={"service": name, "desired-state": "running"})
            return sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running") >= n
        try:
            # Polling from the start would load the daemon while it starts the containers; a
            # task runs once its container started, so the polling starts with the n-th start.
            starts.wait(n, 300)
            wait_for(running, 300, f"{n} swarm tasks running", interval=0.02)
        except TimeoutError as e:
            raise RuntimeError(str(e)) from None
        return time.perf_counter() - t0, starts.nth(n, t0_wall)
    finally:
        starts.close()


def swarm_remove(client: docker.DockerClient, name: str) -> None:
    subprocess.run(["docker", "service", "rm", name], capture_output=True, text=True, timeout=120, check=False)
    find = lambda: client.containers.list(all=True, sparse=True,
                                          filters={"label": f"com.docker.swarm.service.name={name}"})
    wait_gone(find, f"swarm service {name}'s containers")


# ---- the run ----------------------------------------------------------------------------------------------

def fmt(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}s"
    return f"median {statistics.median(xs):.2f}s (" + ", ".join(f"{x:.2f}" for x in xs) + ")"


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=30)
    p.add_argument("--threads", type=int, default=8, help="raw Docker SDK threads")
    p.add_argument("--rounds", type=int, default=1, help="measurements of each (the median is reported)")
    p.add_argument("--scheduler", default="roundrobin")
    p.add_argument("--no-swarm", action="store_true", help="skip Docker Swarm")
    p.add_argument("--no-cli", action="store_true", help="skip the `cube service create` CLI figure")
    args = p.parse_args()
    n = args.replicas
    image = ensure_busybox_image()
    token = f"bsvc{uuid.uuid4().hex[:6]}"
    client = docker.from_env(timeout=120)
    times: dict[str, list[float]] = {"raw": [], "cube": [], "cube_cli": [], "swarm": []}
    starts: dict[str, list[float]] = {"raw": [], "cube": [], "swarm": []}  # the daemon's n-th start event

    def started(what: str, at: float | None) -> str:
        if at is None:
            return " (start: n/a)"
        starts[what].append(at)
        return f" (start: {at:.2f}s)"
    notes: list[str] = []
    c = Cluster(scheduler=args.scheduler, prefix="b", stop_timeout=1.0, log_level="WARNING")
    swarm_ok, we_made_swarm = False, False
    try:
        c.start_manager()
        c.start_worker("w1")
        c.start_worker("w2")
        print(f"cube: cube-manager + 2 cube-workers ({c.worker_name('w1')}, {c.worker_name('w2')}), "
              f"scheduler {args.scheduler}; image {image}; command {' '.join(COMMAND)}; "
              f"Docker {client.version().get('Version')}")
        if not args.no_swarm:
            before = swarm_state(client)
            swarm_ok, why = swarm_init(client)
            we_made_swarm = swarm_ok and before != "active"
            print("swarm: " + (f"one-node swarm {'initialised' if we_made_swarm else 'in use (already active)'}"
                               if swarm_ok else f"cannot be initialised here: {why}"))
            if not swarm_ok:
                notes.append(f"swarm unavailable: {why}")
        for r in range(args.rounds):
            t, at = raw(image, n, args.threads, token, r)
            times["raw"].append(t)
            print(f"round {r + 1}: raw Docker SDK, {n} containers on {args.threads} threads: {t:.2f}s"
                  + started("raw", at))

            name = f"bench{r}"
            t, at = cube_api(c, image, n, name)
            times["cube"].append(t)
            print(f"round {r + 1}: cube, one service.create of {n} replicas -> all Running: {t:.2f}s"
                  + started("cube", at))
            cube_remove(c, name)

            if not args.no_cli:
                name = f"benchcli{r}"
                try:
                    t = cube_cli(c, image, n, name)
                    times["cube_cli"].append(t)
                    print(f"round {r + 1}: cube, `cube service create --replicas {n}` (CLI, follows) -> exit: {t:.2f}s")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    notes.append(f"CLI figure skipped: {e}")
                    print(f"round {r + 1}: cube CLI: skipped ({e})")
                if name in {row["name"] for row in c.call("service.ls")["services"]}:
                    cube_remove(c, name)  # (the CLI may not have created it)

            if swarm_ok:
                name = f"{token}-swarm{r}"
                try:
                    t, at = swarm(client, image, n, name)
                    times["swarm"].append(t)
                    print(f"round {r + 1}: swarm, service create --replicas {n} -> {n} running: {t:.2f}s"
                          + started("swarm", at))
                finally:
                    swarm_remove(client, name)
    finally:
        c.close()
        remove_raw(token)  # whatever a failed round left
        if we_made_swarm:
            swarm_leave()
        client.close()

    raw_s, cube_s, cli_s, swarm_s = (med(times[k]) for k in ("raw", "cube", "cube_cli", "swarm"))
    print()
    print(f"raw Docker SDK ({args.threads} threads): {fmt(times['raw'])}")
    print(f"cube service.create (API):        {fmt(times['cube'])}")
    print(f"cube service create (CLI):        {fmt(times['cube_cli'])}")
    print(f"docker service create (Swarm):    {fmt(times['swarm'])}")
    print(f"the daemon's {n}th start event, raw / cube / swarm: "
          + " / ".join(fmt(starts[k]) for k in ("raw", "cube", "swarm")))
    swarm_over_cube = swarm_s / cube_s if swarm_s and cube_s else None
    cube_over_raw = cube_s / raw_s if cube_s and raw_s else None
    if swarm_over_cube is not None:
        print(f"swarm/cube = {swarm_over_cube:.2f} (target >= 2.0: {'met' if swarm_over_cube >= 2.0 else 'NOT met'})")
    if cube_over_raw is not None:
        print(f"cube/raw   = {cube_over_raw:.2f} (target <= 1.25: {'met' if cube_over_raw <= 1.25 else 'NOT met'})")
    for note in notes:
        print(f"note: {note}")

    def show(x: float | None) -> str:
        return "na" if x is None else f"{x:.2f}"
    print(f"RESULT replicas={n} raw_s={show(raw_s)} cube_s={show(cube_s)} cube_cli_s={show(cli_s)} "
          f"swarm_s={show(swarm_s)} swarm_over_cube={show(swarm_over_cube)} cube_over_raw={show(cube_over_raw)} "
          + " ".join(f"{k}_start_s={show(med(starts[k]))}" for k in ("raw", "cube", "swarm")))


if __name__ == "__main__":
    main()
