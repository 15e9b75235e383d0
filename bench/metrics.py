"""Metrics: what a /metrics scrape (or a `cube top` refresh) holds the Manager's loop for, at N tasks.

Before the tally (cube/manager/tally.py), the state gauges and `manager.ping {states}` counted the
tasks by state with a walk of every task, and each service's running replicas with a walk of its
tasks; now they read counts kept as tasks change. This measures, in one process, both ways over
the same tasks (a fifth of them replicas of 50 services, most tasks Running), the snapshot the scrape really takes
(`manager_metrics.snapshot`), and what the tally costs each task change.

    .venv/bin/python bench/metrics.py --tasks 100000

Prints one line: RESULT tasks=… walk_ms=… snapshot_ms=… watch_us=…
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import random
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.manager.tally import TaskTally  # noqa: E402
from cube.model.state import State  # noqa: E402
from cube.model.task import DESIRED_RUNNING, Task  # noqa: E402
from cube.observability import manager_metrics  # noqa: E402

SERVICES = 50


def walk(tasks: dict[str, Task], of: dict[str, list[Task]], services: list) -> tuple[dict[str, int], list]:
    """What a scrape did before: every task walked for the states, and each service's tasks (from
    the index the Manager keeps, `of`) sorted and walked for its running replicas."""
    counted = collections.Counter(t.state for t in tasks.values())
    states = {s.value: counted.get(s, 0) for s in State}
    running = [(svc.name, svc.replicas, sum(1 for t in sorted(of[svc.name], key=lambda t: (t.slot, t.created_at))
                                            if t.state == State.RUNNING and t.desired == DESIRED_RUNNING
                                            and 0 < t.slot <= svc.replicas and t.version == svc.version))
               for svc in services]
    return states, running


def best(fn, rounds: int) -> float:
    """The fastest of `rounds` runs, in seconds (the least disturbed by the machine's other work)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rnd = random.Random(1)
    services = [SimpleNamespace(name=f"svc{i}", replicas=args.tasks // 5 // SERVICES, version=1)
                for i in range(SERVICES)]
    tasks: dict[str, Task] = {}
    of: dict[str, list[Task]] = collections.defaultdict(list)
    for i in range(args.tasks):
        t = Task(id=f"{i:08x}", name=f"t{i}", image="img", created_at=float(i))
        t.state = rnd.choice([State.RUNNING] * 6 + [State.PENDING, State.SCHEDULED, State.COMPLETED, State.FAILED])
        if i % 5 == 0:
            svc = services[(i // 5) % SERVICES]
            t.service, t.version, t.slot = svc.name, 1, (i // 5) // SERVICES + 1
            of[svc.name].append(t)
        tasks[t.id] = t
    tally = TaskTally()
    t0 = time.perf_counter()
    for task_id, t in tasks.items():  # as the TaskBook calls its watchers on each adopted change
        tally.watch(task_id, t)
    watch_us = (time.perf_counter() - t0) / args.tasks * 1e6

    manager = SimpleNamespace(tally=tally, registry=SimpleNamespace(workers={}), loading=False,
                              services=SimpleNamespace(services={s.name: s for s in services}),
                              leadership=SimpleNamespace(view=lambda: {"role": "leader", "term": 0}))
    before = walk(tasks, of, services)
    after = manager_metrics.snapshot(manager)
    assert after["tasks"] == before[0] and after["services"] == before[1], "the tally disagrees with the walk"
    walk_s = best(lambda: walk(tasks, of, services), args.rounds)
    states_only_s = best(lambda: collections.Counter(t.state for t in tasks.values()), args.rounds)
    snapshot_s = best(lambda: manager_metrics.snapshot(manager), args.rounds * 20)
    print(f"tasks by state, walking {args.tasks} tasks: {states_only_s * 1e3:.1f} ms; with the services' "
          f"replicas too: {walk_s * 1e3:.1f} ms")
    print(f"the snapshot a scrape takes now (tally): {snapshot_s * 1e3:.3f} ms; "
          f"the tally per task change: {watch_us:.2f} us")
    print(f"RESULT tasks={args.tasks} walk_ms={walk_s * 1e3:.1f} states_walk_ms={states_only_s * 1e3:.1f} "
          f"snapshot_ms={snapshot_s * 1e3:.3f} watch_us={watch_us:.2f}")


if __name__ == "__main__":
    main()
