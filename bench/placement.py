"""Placement decisions per second of the pure scheduler (no sockets), per algorithm and size.

Each cluster gets seeded random capacities and usages; each decision is a full
`ClusterView.place()` (feasibility -> score -> pick -> reserve) with a realistic mix of demands.
To keep the cluster from filling up, tasks are short-lived: every `min(2 * nodes, 2000)`
decisions each node sends a fresh sample listing the tasks placed on it since (which clears
them from the ledger) with its usage unchanged, as if they had already finished. Those sample
updates are included in the timing, as they are in the real Scheduler.
Run: .venv/bin/python bench/placement.py
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cube.scheduling import ALGORITHMS, ClusterView, Demand  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20
SIZES = (10, 100, 1_000, 10_000)
BUDGET_S = 1.2  # time spent measuring each cell
MAX_DECISIONS_PER_ROUND = 2_000  # decisions between two rounds of samples

# (cpu, memory, disk, weight): small web tasks dominate, a few big batch jobs
DEMANDS = [(0.1, 64 * MiB, 0, 30), (0.25, 256 * MiB, 1 * GiB, 30), (0.5, 512 * MiB, 2 * GiB, 20),
           (1.0, 1 * GiB, 5 * GiB, 12), (2.0, 4 * GiB, 10 * GiB, 6), (4.0, 8 * GiB, 20 * GiB, 2)]


def make_cluster(n: int, seed: int) -> tuple[ClusterView, list[dict]]:
    rng = np.random.default_rng(seed)
    view = ClusterView(stale_after=1e9)
    samples = []
    for i in range(n):
        cpus = float(rng.choice([2, 4, 8, 16, 32]))
        mem = int(cpus * rng.choice([2, 4, 8]) * GiB)
        total = mem + 2 * GiB
        used = int(total * rng.uniform(0.1, 0.7))
        s = {"name": f"w{i:05d}", "address": f"10.0.{i // 256}.{i % 256}", "ts": 0.0, "seq": 0,
             "cpus": cpus, "memory": mem, "disk": int(rng.choice([50, 100, 500]) * GiB),
             "cpu_usage": float(rng.uniform(0.0, 0.9)), "memory_total": total,
             "memory_available": total - used, "memory_used": used,
             "memory_percent": 100 * used / total, "disk_total": 1000 * GiB,
             "disk_free": 800 * GiB, "disk_used": 200 * GiB, "load_avg": [0.5, 0.5, 0.5],
             "task_count": int(rng.integers(0, 8)),
             "reserved": {"cpu": 0.0, "memory": 0, "disk": 0}, "task_ids": []}
        view.update(s, now=0.0)
        samples.append(s)
    return view, samples


def run(n: int, algorithm: str, seed: int = 7) -> tuple[float, int]:
    view, samples = make_cluster(n, seed)
    rng = np.random.default_rng(seed + 1)
    weights = np.array([d[3] for d in DEMANDS], dtype=float)
    choice = rng.choice(len(DEMANDS), size=200_000, p=weights / weights.sum())
    demands = [Demand(*DEMANDS[k][:3]) for k in choice]
    per_round = min(2 * n, MAX_DECISIONS_PER_ROUND)
    placed: dict[str, list[str]] = {s["name"]: [] for s in samples}
    done = unplaced = 0
    now, seq = 0.0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < BUDGET_S:
        for _ in range(per_round):
            task_id = f"t{done}"
            p = view.place(task_id, demands[done % len(demands)], algorithm, now=now)
            if p.node is None:
                unplaced += 1
            else:
                placed[p.node].append(task_id)
            done += 1
        now += 0.1
        seq += 1
        for s in samples:  # a round of samples: the tasks placed since show up (and are done)
            s["seq"], s["ts"], s["task_ids"] = seq, now, placed[s["name"]]
            placed[s["name"]] = []
            view.update(s, now=now)
    return done / (time.perf_counter() - start), unplaced


def main() -> None:
    names = list(ALGORITHMS)
    print(f"decisions/s (place = feasibility + score + pick + reserve; {BUDGET_S:g} s per cell)")
    print(f"{'nodes':>7} " + " ".join(f"{a:>11}" for a in names))
    unplaced_total = 0
    for n in SIZES:
        cells = []
        for a in names:
            rate, unplaced = run(n, a)
            unplaced_total += unplaced
            cells.append(f"{rate:>11,.0f}")
        print(f"{n:>7,} " + " ".join(cells))
    print(f"note: numpy {np.__version__}, {os.cpu_count()} cpus visible, one thread; a round of "
          f"samples from every node each min(2*nodes, {MAX_DECISIONS_PER_ROUND}) decisions is "
          f"included; {unplaced_total} decisions found no room; target: >= 5,000 epvm "
          f"decisions/s at 1,000 nodes")


if __name__ == "__main__":
    main()
