"""Scale: one real cube-manager (Store, Scheduler, Manager processes, LevelDB with synced writes)
and up to thousands of simulated workers (the real Worker actor on FakeRuntime, each with its own
CURVE connection, all on one event loop in this process), fed by concurrent clients.

    .venv/bin/python bench/scale.py --workers 1000 --tasks 10000              # 128 clients
    .venv/bin/python bench/scale.py --workers 1000 --tasks 10000 --clients 4  # latency-bound
    .venv/bin/python bench/scale.py --ls-tasks 100000     # `cube task ls --json --all` over 100k tasks

Everything shares this machine: the simulated workers and the clients take about as much CPU as
the three manager processes, so they are kept lean where their cost is the harness's, not Cube's
(one epoll loop for their 2,000+ sockets, FakeRuntime called inline, clients in one thread).
`--profile DIR` writes cProfiles of the measured run; `--count-messages` shows re-sent requests.

Prints what it measures and ends with one line:
    RESULT workers=… tasks=… submit_per_s=… running_per_s=… p99_submit_ms=… manager_rss_mib=…
`running_per_s` is tasks / (time from the first submit until the last task is Running), counted
from the Manager's own event stream, so watching costs the Manager nothing extra. LevelDB writes
are synced, as always: durability is never traded for the figure.
"""
from __future__ import annotations

import argparse
import itertools
import os
import json
import pathlib
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import zmq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.actors.metrics import Capacity  # noqa: E402
from cube.actors.worker import Worker, WorkerConfig  # noqa: E402
from cube.harness import Cluster, RunningWatch, wait_for  # noqa: E402
from cube.model.task import new_task_id, task_from_spec  # noqa: E402
from cube.runtime.fake import FakeRuntime  # noqa: E402
from cube.store.leveldb import LevelDBStore  # noqa: E402
from cube.store.memory import MemoryStore  # noqa: E402
from cube.wire import sockets  # noqa: E402
from cube.wire.envelope import REPLY_ERROR, Envelope, decode  # noqa: E402
from cube.wire.actor import tune_gc  # noqa: E402
from cube.wire.loop import Loop  # noqa: E402


def manager_rss_mib(c: Cluster) -> float:
    root = psutil.Process(c.manager.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def cpu_seconds(c: Cluster) -> dict[str, float]:
    """CPU time used so far by each manager process and by this one (the clients and workers)."""
    pids = {name: pid for name, pid in c.actor_pids().items() if name in ("manager", "store", "scheduler")}
    out = {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}
    out["bench (clients, workers)"] = sum(psutil.Process().cpu_times()[:2])
    return out


class LoopProfile:
    """cProfile of one Loop's thread over the measured run only (with --profile)."""

    def __init__(self, loop: Loop, path: str):
        import cProfile
        self.loop, self.path = loop, path
        self.profile = cProfile.Profile(time.thread_time)  # CPU, not waits

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self.profile.enable)  # enabled on the loop's own thread

    def stop(self) -> None:
        done = threading.Event()

        def dump() -> None:
            self.profile.disable()
            self.profile.dump_stats(self.path)
            done.set()
        self.loop.call_soon_threadsafe(dump)
        done.wait(10)


def profile_actors(c: Cluster) -> None:
    """Start, or stop and write, the manager processes' profiles (CUBE_PROFILE: SIGUSR2)."""
    for name, pid in c.actor_pids().items():
        if name in ("manager", "store", "scheduler"):
            os.kill(pid, signal.SIGUSR2)
    time.sleep(0.2)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def submit_all(endpoint: str, ids: list[str], clients: int, curve: Any = None,
               connections: int = 8) -> tuple[float, list[float]]:
    """`clients` concurrent clients, each sending its next `task.start` once the previous one is
    acknowledged, over `connections` connections (a client's requests all on one), all driven
    from one thread so the clients' own cost stays small next to Cube's on this machine.
    Returns (seconds, per-request latencies)."""
    ctx = zmq.Context.instance()
    socks = [sockets.dealer(ctx, endpoint, curve=curve) for _ in range(min(clients, connections))]
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    queues = [ids[k::clients] for k in range(clients)]
    sent: dict[str, tuple[int, float]] = {}  # request id -> (client, when sent)
    latencies: list[float] = []
    errors: list[str] = []
    names = itertools.count()

    def send_next(k: int) -> None:
        if queues[k]:
            task_id = queues[k].pop()
            env = Envelope("task.start", {"task": {"id": task_id, "image": "fake", "name": f"t{next(names)}",
                                                   "cpu": 0.01, "memory": 8 << 20}}, sender=f"bench-{k}")
            sent[env.id] = (k, time.perf_counter())
            socks[k % len(socks)].send(env.encode())

    t0 = time.perf_counter()
    try:
        for k in range(clients):
            send_next(k)
        while sent and not errors:
            ready = poller.poll(30_000)
            if not ready:
                errors.append(f"no answer within 30 s ({len(sent)} requests outstanding)")
            for sock, _ in ready:
                while True:
                    try:
                        reply = decode(sock.recv_multipart(zmq.NOBLOCK)[-1])
                    except zmq.Again:
                        break
                    request = sent.pop(reply.re or "", None)
                    if request is None:
                        continue
                    if reply.type == REPLY_ERROR:
                        errors.append(f"{reply.body.get('code')}: {reply.body.get('message')}")
                    latencies.append(time.perf_counter() - request[1])
                    send_next(request[0])
    finally:
        for sock in socks:
            sock.close(linger=0)
    if errors:  # a benchmark that lost requests has no figure
        raise SystemExit("submits failed: " + "; ".join(errors[:3]))
    return time.perf_counter() - t0, latencies


def scale(n_workers: int, n_tasks: int, n_clients: int, profile: str = "", count_messages: bool = False) -> None:
    raise_fd_limit()
    tune_gc()  # this process hosts 1,000 Worker actors: collect as an actor's process does
    c = Cluster(scheduler="epvm", grace=30.0, heartbeat=2.0, prefix="b", prometheus=count_messages)
    if profile:  # each manager process dumps its cProfile there when it stops
        c.env["CUBE_PROFILE"] = os.path.abspath(profile)
    # 2,000+ sockets on one loop: epoll; FakeRuntime's calls return at once: no thread hop each.
    loop = Loop("fake-workers", threads=8, many_sockets=True, inline_blocking=True)
    loop.ctx.set(zmq.MAX_SOCKETS, 4 * n_workers + 64)  # two sockets per worker; libzmq's default is 1,023
    workers: list[Worker] = []
    watch = None
    try:
        c.start_manager(timeout=60)
        rss_idle = manager_rss_mib(c)
        tmp = str(c.tmp)  # removed with the cluster
        token = c.join_token()  # each simulated worker joins with its own key, as real ones do
        curve = c.credentials().curve()
        for i in range(n_workers):
            data_dir = os.path.join(tmp, f"f{i:04d}")
            os.makedirs(data_dir, exist_ok=True)
            conf = WorkerConfig(manager=f"127.0.0.1:{c.worker_port}", name=c.worker_name(f"f{i:04d}"),
                                data_dir=data_dir, heartbeat=2.0, metrics_interval=2.0, join=token)
            workers.append(Worker(conf, FakeRuntime(), MemoryStore(), Capacity(16.0, 64 << 30, 1 << 40), loop=loop))
        threading.Thread(target=loop.run, daemon=True).start()
        loop.call_soon_threadsafe(lambda: [w.on_start() for w in workers])
        t0 = time.perf_counter()
        wait_for(lambda: sum(1 for n in c.nodes(timeout=30).values()
                             if n["state"] == "ready" and (n.get("metrics") or {}).get("state") == "alive") == n_workers,
                 300, f"all {n_workers} workers registered with metrics", interval=1.0)
        print(f"{n_workers} simulated workers registered and publishing metrics in {time.perf_counter() - t0:.1f}s")

        ids = [new_task_id() for _ in range(n_tasks)]
        expected = set(ids)
        watch = RunningWatch(c.endpoints["events"], len(ids), lambda body: body["task_id"] in expected, curve)
        loop_profile = LoopProfile(loop, os.path.join(profile, "fake-workers.prof")) if profile else None
        if loop_profile:
            loop_profile.start()
            profile_actors(c)
        cpu0 = cpu_seconds(c)
        t0 = time.perf_counter()
        submit_s, latencies = submit_all(c.endpoints["api"], ids, n_clients, curve)
        if not watch.done.wait(600):
            raise SystemExit(f"only {len(watch.running)} of {n_tasks} tasks Running after 600 s")
        all_running = watch.last - t0
        if loop_profile:
            loop_profile.stop()
            profile_actors(c)
        cpu1 = cpu_seconds(c)
        latencies.sort()
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
        rss = manager_rss_mib(c)
        tasks = c.tasks(timeout=30)
        spread = {t["worker"] for t in tasks.values() if t["state"] == "Running"}
        print(f"{n_tasks} tasks acknowledged (durable) in {submit_s:.1f}s = {n_tasks / submit_s:.0f} submits/s "
              f"from {n_clients} clients; p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99:.1f} ms")
        print(f"all {n_tasks} Running {all_running:.1f}s after the first submit = {n_tasks / all_running:.0f} tasks/s; "
              f"spread over {len(spread)} workers")
        print("CPU seconds during the run: " + ", ".join(f"{k} {cpu1[k] - cpu0[k]:.1f}" for k in cpu1)
              + f" (of {2 * all_running:.1f} on 2 cores)")
        print(f"manager processes RSS: {rss_idle:.0f} MiB idle -> {rss:.0f} MiB with {n_workers} workers and {n_tasks} tasks")
        if count_messages:  # re-sent requests show here: more worker.run or task.status than tasks
            import urllib.request
            text = urllib.request.urlopen(f"http://127.0.0.1:{c.prometheus_port}/metrics", timeout=10).read().decode()
            print("manager messages: " + ", ".join(
                line.split("{", 1)[1].replace('socket="', "").replace('",type="', " ").replace('"} ', " ")
                for line in text.splitlines() if line.startswith(("cube_messages_sent_total", "cube_messages_received_total"))
                and not line.endswith(" 0.0")))
        print(f"RESULT workers={n_workers} tasks={n_tasks} submit_per_s={n_tasks / submit_s:.0f} "
              f"running_per_s={n_tasks / all_running:.0f} p99_submit_ms={p99:.1f} manager_rss_mib={rss:.0f}")
    finally:
        if watch is not None:
            watch.close()
        loop.stop()
        c.close()


def ls_many(n_tasks: int) -> None:
    """`cube task ls --json --all` against a manager whose Store holds `n_tasks` finished tasks."""
    c = Cluster(prefix="b")
    try:
        db = LevelDBStore(str(c.data_dir / "db"))
        now = time.time()
        batch = []
        for i in range(n_tasks):
            t = task_from_spec({"id": new_task_id(), "name": f"t{i}", "image": "fake"})
            t.created_at = t.updated_at = t.finished_at = now
            t.desired = "stopped"
            t.state = t.state.__class__("Completed")
            batch.append(("put", "tasks", t.id, t.to_dict()))
            if len(batch) == 5000:
                db.batch(batch)
                batch = []
        db.batch(batch)
        db.close()
        t0 = time.perf_counter()
        c.start_manager(timeout=300)
        print(f"manager loaded {n_tasks} tasks and answers in {time.perf_counter() - t0:.1f}s; "
              f"RSS {manager_rss_mib(c):.0f} MiB")
        t0 = time.perf_counter()
        out = subprocess.run(c.cli_command("task", "ls", "--json", "--all"), capture_output=True, text=True,
                             env=c.env, timeout=300, check=True).stdout
        took = time.perf_counter() - t0
        listed = len(json.loads(out))
        print(f"cube task ls --json --all: {listed} tasks in {took:.1f}s ({len(out) >> 20} MiB of JSON)")
        t0 = time.perf_counter()
        subprocess.run(c.cli_command("task", "ls"), capture_output=True, text=True, env=c.env, timeout=60, check=True)
        print(f"cube task ls (live tasks only: none): {time.perf_counter() - t0:.2f}s")
        print(f"RESULT ls_tasks={n_tasks} ls_json_all_s={took:.1f}")
    finally:
        c.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--clients", type=int, default=128,
                   help="concurrent clients, each submitting its next task once the last is acknowledged")
    p.add_argument("--ls-tasks", type=int, default=0, help="instead: time `task ls` over this many stored tasks")
    p.add_argument("--count-messages", action="store_true",
                   help="print the manager's messages by socket and type (its Prometheus counters)")
    p.add_argument("--profile", default="", metavar="DIR", help="write each manager process's cProfile to DIR")
    a = p.parse_args()
    if a.ls_tasks:
        ls_many(a.ls_tasks)
    else:
        scale(a.workers, a.tasks, a.clients, a.profile, a.count_messages)


if __name__ == "__main__":
    main()
