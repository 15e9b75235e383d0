"""Failover: three cube-managers on a three-member etcd (docs/ha.md), two workers on real Docker.

    .venv/bin/python bench/failover.py --rounds 3 --tasks 6 --lease-ttl 2

Each round SIGKILLs the leader's whole cube-manager (a machine crash) while `--tasks` tasks run,
then submits a new task (the same id, re-sent until a manager takes it) and measures the time from
the SIGKILL to that task Running under the new leader. Then it checks that every acknowledged task
is still there (lost), that no task has more than one container (duplicates), and that the running
ones were adopted, not restarted (attempt and container unchanged). The killed manager is started
again as a follower for the next round.

Prints one line per round and ends with:
    RESULT rounds=… lease_ttl=… placed_s_max=… failover_s_max=… failover_s_mean=… lost=… duplicates=… restarted=…
`placed_s`: from the SIGKILL until the new leader placed the new task (Scheduled); `failover_s`:
until it is Running (adds Docker's start). A figure, not a test: the target is a new leader
placing new work within 5 s (docs/ha.md).
"""
from __future__ import annotations

import argparse
import shutil
import pathlib
import sys
import tempfile
import time

import docker

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.ha.etcd_process import EtcdCluster  # noqa: E402
from cube.ha.harness import HACluster  # noqa: E402
from cube.harness import ensure_busybox_image, wait_for  # noqa: E402
from cube.model.task import new_task_id  # noqa: E402
from cube.wire.errors import CubeError  # noqa: E402


def spec(image: str, name: str) -> dict:
    return {"id": new_task_id(), "name": name, "image": image, "command": ["sleep", "600"], "cpu": 0.01,
            "memory": 8 << 20}


def submit(ha: HACluster, task: dict, deadline: float) -> None:
    """task.start, re-sent (same id: the same task) until a leader acknowledges it."""
    while True:
        try:
            ha.call("task.start", {"task": task}, timeout=1.0, retry_for=0.0)
            return
        except CubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def state(ha: HACluster, task_id: str) -> str:
    try:
        return ha.call("task.inspect", {"id": task_id}, timeout=1.0, retry_for=0.0)["task"]["state"]
    except CubeError:
        return ""


def logged_at(text: str, needle: str) -> float | None:
    """Wall-clock time of the last log line containing `needle` (the logs' local-time stamps)."""
    import datetime
    lines = [ln for ln in text.splitlines() if needle in ln]
    if not lines:
        return None
    return datetime.datetime.strptime(lines[-1][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=6, help="tasks running when the leader dies")
    ap.add_argument("--lease-ttl", type=float, default=3.0)
    args = ap.parse_args()
    image = ensure_busybox_image()
    root = tempfile.mkdtemp(prefix="cube-failover-")
    etcd = EtcdCluster(root, 3).start()
    ha = HACluster(etcd.endpoints, managers=3, lease_ttl=args.lease_ttl, grace=5.0)
    dock = docker.from_env()
    failovers: list[float] = []
    lost = duplicates = restarted = 0
    try:
        ha.start()
        ha.start_worker("w1")
        ha.start_worker("w2")
        placed: list[float] = []  # kill -> the new task Scheduled by the new leader
        acknowledged: dict[str, tuple[int, str]] = {}
        for r in range(args.rounds):
            while len(acknowledged) < args.tasks * (r + 1):
                t = spec(image, f"r{r}-{len(acknowledged)}")
                submit(ha, t, time.monotonic() + 30)
                acknowledged[t["id"]] = (0, "")
            for tid in acknowledged:
                wait_for(lambda tid=tid: state(ha, tid) == "Running", 60, f"task {tid[:8]} Running")
                t = ha.task(tid)
                acknowledged[tid] = (t["attempt"], t["container_id"])
            leader = ha.leader()
            new = spec(image, f"after-kill-{r}")
            t0, wall0 = time.monotonic(), time.time()
            ha.kill(leader)
            submit(ha, new, t0 + 60)
            wait_for(lambda: state(ha, new["id"]) == "Running", 60, "the new task Running")
            failover = time.monotonic() - t0
            elected = ha.wait_leader(30)
            failovers.append(failover)
            log = ha.nodes[elected].log("manager")
            steps = {what: (at - wall0 if at else float("nan")) for what, at in (
                ("elected", logged_at(log, "elected leader")), ("loaded", logged_at(log, "manager: loaded")),
                ("first hello", logged_at(log, "says hello")))}
            events = ha.call("task.inspect", {"id": new["id"]})["events"]
            print("   events:", ", ".join(f"{e.get('state')} {e.get('time', 0) - wall0:.2f}s" for e in events))
            placed.append(min((e["time"] - wall0 for e in events if e.get("state") == "Scheduled"), default=failover))
            t = ha.task(new["id"])
            acknowledged[new["id"]] = (t["attempt"], t["container_id"])
            tasks = ha.tasks()
            lost_now = [i for i in acknowledged if i not in tasks]
            restarted_now = [i for i, (a, c) in acknowledged.items()
                             if i in tasks and (tasks[i]["attempt"], tasks[i]["container_id"]) != (a, c)]
            dup_now = [i for i in tasks
                       if len(dock.containers.list(all=True, filters={"label": f"cube.task_id={i}"})) > 1]
            lost, restarted, duplicates = lost + len(lost_now), restarted + len(restarted_now), duplicates + len(dup_now)
            print(f"round {r + 1}: leader {leader} SIGKILLed -> manager {elected} leads; new task Running "
                  f"{failover:.2f}s after the kill ({', '.join(f'{k} {v:.2f}s' for k, v in steps.items())}); "
                  f"{len(tasks)} tasks, lost {len(lost_now)}, "
                  f"restarted {len(restarted_now)}, duplicates {len(dup_now)}", flush=True)
            ha.nodes[leader].start_manager(wait=False)  # back, as a follower
            wait_for(lambda: (ha.ping(leader) or {}).get("role") == "follower", 30, "the old leader to follow")
    finally:
        ha.close()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
    mean = sum(failovers) / len(failovers) if failovers else float("nan")
    print(f"RESULT rounds={len(failovers)} lease_ttl={args.lease_ttl:g} placed_s_max={max(placed):.2f} "
          f"failover_s_max={max(failovers):.2f} failover_s_mean={mean:.2f} lost={lost} duplicates={duplicates} "
          f"restarted={restarted}")


if __name__ == "__main__":
    main()
