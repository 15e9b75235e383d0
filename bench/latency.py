"""End-to-end latency on a real local cluster (real processes, ZeroMQ, LevelDB, Docker).

Prints: submit -> Running for one task (median of 5), and the time for 10 tasks submitted at
once to all be Running. Submissions go straight to the manager's API (no CLI start-up cost).
Run: .venv/bin/python bench/latency.py
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.model.task import new_task_id  # noqa: E402
from cube.harness import Cluster, ensure_busybox_image, wait_for  # noqa: E402


def submit(c: Cluster, image: str, name: str) -> str:
    task_id = new_task_id()
    c.call("task.start", {"task": {"id": task_id, "image": image, "name": name, "command": ["sleep", "600"]}})
    return task_id


def running(c: Cluster, ids: list[str]) -> bool:
    tasks = c.tasks()
    return all(tasks[i]["state"] == "Running" for i in ids)


def main() -> None:
    image = ensure_busybox_image()
    c = Cluster(scheduler="epvm")
    try:
        c.start_manager()
        c.start_worker("w1")
        c.start_worker("w2")
        singles = []
        for n in range(5):
            t0 = time.perf_counter()
            task_id = submit(c, image, f"one-{n}")
            wait_for(lambda: running(c, [task_id]), 20, interval=0.005)
            singles.append(time.perf_counter() - t0)
            c.call("task.stop", {"id": task_id})
        t0 = time.perf_counter()
        ids = [submit(c, image, f"ten-{n}") for n in range(10)]
        wait_for(lambda: running(c, ids), 60, interval=0.01)
        ten = time.perf_counter() - t0
        print(f"submit -> Running, one task: median {statistics.median(singles) * 1000:.0f} ms "
              f"(min {min(singles) * 1000:.0f}, max {max(singles) * 1000:.0f}; 5 runs)")
        print(f"10 tasks submitted at once -> all Running: {ten * 1000:.0f} ms on 2 workers")
        print("note: Docker's own create+start of a busybox container is most of this")
    finally:
        c.close()


if __name__ == "__main__":
    main()
