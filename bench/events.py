"""Events: how fast `cube events --since 0` replays the stored log, and what the log costs a submit.

One real cube-manager (secure, LevelDB, synced writes), no workers: every submitted task stays
Pending, one event each. Then `cube events --since 0 --json --count N` (a real process) reads them
all back, page by page, and the same with a filter that keeps one task (the Manager filters:
every page is read from the Store but few rows travel).

    .venv/bin/python bench/events.py --tasks 20000

(The submit rate falls as Pending tasks pile up with no worker to take them: every placement pass
looks at them; it is the same without the event log.)

Prints one line: RESULT events=… submit_per_s=… replay_events_per_s=… filtered_replay_s=…
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.harness import Cluster  # noqa: E402
from cube.model.task import new_task_id  # noqa: E402
from cube.wire.client import Client  # noqa: E402


def submit(c: Cluster, n: int, clients: int) -> float:
    curve = c.credentials().curve()
    t0 = time.monotonic()

    def one(k: int) -> None:
        client = Client(c.endpoints["api"], name=f"bench-{k}", timeout=30, curve=curve)
        try:
            for i in range(k, n, clients):
                client.call("task.start", {"task": {"id": new_task_id(), "name": f"e{i}", "image": "img:1"}})
        finally:
            client.close()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def timed_cli(c: Cluster, *args: str) -> tuple[float, int]:
    t0 = time.monotonic()
    out = subprocess.run(c.cli_command("events", *args), capture_output=True, text=True, env=c.env, check=True,
                         timeout=600)
    return time.monotonic() - t0, len(out.stdout.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    c = Cluster(prefix="e")
    try:
        c.start_manager(timeout=60)
        took = submit(c, args.tasks, args.clients)
        print(f"{args.tasks} tasks submitted (one stored event each) in {took:.1f}s = {args.tasks / took:.0f}/s")
        replay, lines = timed_cli(c, "--since", "0", "--json", "--count", str(args.tasks))
        print(f"cube events --since 0 --json: {lines} events in {replay:.2f}s = {lines / replay:.0f} events/s "
              f"(a process start included)")
        filtered, lines = timed_cli(c, "--since", "0", "--filter", "task=e7", "--timeout", "0.5")
        print(f"cube events --since 0 --filter task=e7: {lines} events in {filtered:.2f}s (0.5 s of it following)")
        print(f"RESULT events={args.tasks} submit_per_s={args.tasks / took:.0f} "
              f"replay_events_per_s={args.tasks / replay:.0f} filtered_replay_s={filtered - 0.5:.2f}")
    finally:
        c.close()


if __name__ == "__main__":
    main()
