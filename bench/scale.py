"""Scale: one real cube-manager (Store, Scheduler, Manager processes, LevelDB) and hundreds of
simulated workers (the real Worker actor on FakeRuntime, all on one event loop in this process).

Measures how long it takes for a burst of tasks to be accepted, placed and reported Running,
and how big the manager's processes grow. Run: .venv/bin/python bench/scale.py [workers] [tasks]
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.actors.metrics import Capacity  # noqa: E402
from cube.actors.worker import Worker, WorkerConfig  # noqa: E402
from cube.model.task import new_task_id  # noqa: E402
from cube.runtime.fake import FakeRuntime  # noqa: E402
from cube.store.memory import MemoryStore  # noqa: E402
from cube.wire.client import Client  # noqa: E402
from cube.wire.loop import Loop  # noqa: E402
from tests.cluster import Cluster, wait_for  # noqa: E402


def manager_rss_mib(c: Cluster) -> float:
    root = psutil.Process(c.manager.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def main(n_workers: int = 200, n_tasks: int = 1000) -> None:
    c = Cluster(scheduler="epvm", grace=10.0)
    loop = Loop("fake-workers", threads=8)
    workers = []
    try:
        c.start_manager()
        rss_idle = manager_rss_mib(c)
        for i in range(n_workers):
            conf = WorkerConfig(manager=f"127.0.0.1:{c.worker_port}", name=c.worker_name(f"f{i:04d}"),
                                data_dir=tempfile.gettempdir())
            w = Worker(conf, FakeRuntime(), MemoryStore(), Capacity(4.0, 8 << 30, 100 << 30), loop=loop)
            workers.append(w)
        threading.Thread(target=loop.run, daemon=True).start()
        loop.call_soon_threadsafe(lambda: [w.start() for w in workers])
        t0 = time.perf_counter()
        wait_for(lambda: sum(1 for n in c.call("node.ls", timeout=10)["nodes"]
                             if n.get("metrics") and n["metrics"]["state"] == "alive") == n_workers,
                 120, interval=0.5, what="all workers registered with metrics")
        joined = time.perf_counter() - t0

        client = Client(f"tcp://127.0.0.1:{c.api_port}", name="bench", timeout=10)
        t0 = time.perf_counter()
        for i in range(n_tasks):
            client.call("task.start", {"task": {"id": new_task_id(), "image": "fake", "name": f"t{i}",
                                                "cpu": 0.1, "memory": 32 << 20}})
        accepted = time.perf_counter() - t0
        wait_for(lambda: sum(t["state"] == "Running" for t in c.call("task.ls", timeout=30)["tasks"]) == n_tasks,
                 300, interval=0.5, what="all tasks Running")
        all_running = time.perf_counter() - t0
        tasks = c.call("task.ls", timeout=30)["tasks"]
        per_node: dict[str, int] = {}
        for t in tasks:
            per_node[t["worker"]] = per_node.get(t["worker"], 0) + 1
        print(f"{n_workers} simulated workers registered and publishing metrics in {joined:.1f}s")
        print(f"{n_tasks} tasks accepted (persisted, acknowledged) in {accepted:.1f}s "
              f"= {n_tasks / accepted:.0f} submits/s, one client, sequential")
        print(f"all {n_tasks} Running after {all_running:.1f}s = {n_tasks / all_running:.0f} tasks/s end to end")
        print(f"spread: {len(per_node)} workers used, {min(per_node.values())}-{max(per_node.values())} tasks each")
        print(f"manager processes RSS: {rss_idle:.0f} MiB idle -> {manager_rss_mib(c):.0f} MiB "
              f"with {n_workers} workers and {n_tasks} tasks")
    finally:
        loop.stop()
        c.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
