"""The invariants every chaos script must leave intact (DESIGN.md §4 and §8).

Each check looks at the cluster from outside (the manager's api, the Store and Scheduler
endpoints, Docker) and returns a list of problems, empty when it holds. Most of them are
"eventually" properties: after faults, the cluster needs time to converge, so `settle` re-runs
the checks until they all hold or a bound expires, and reports the last result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from cube.runtime.base import LABEL_TASK
from cube.wire.errors import CubeError

LIVE_STATES = ("Scheduled", "Running")
DONE_STATES = ("Completed", "Failed")


class Target(Protocol):
    """What the checks need of a cluster (LocalCluster provides it)."""

    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             endpoint: str = "api") -> dict[str, Any]: ...
    def containers(self, all_: bool = True) -> list[Any]: ...
    def worker_name(self, short: str) -> str: ...


@dataclass
class Snapshot:
    """One consistent-enough look at the cluster, shared by all checks of a round."""

    tasks: dict[str, dict[str, Any]]
    containers: list[Any]
    acked: dict[str, str]  # task id -> desired state the runner was acknowledged
    workers: list[str]  # full names of the workers that must be alive and ready
    errors: list[str] = field(default_factory=list)

    def running_of(self, task_id: str) -> list[Any]:
        return [c for c in self.containers if c.labels.get(LABEL_TASK) == task_id and c.status == "running"]


def settled(task: dict[str, Any]) -> bool:
    """True when the manager has nothing left to do for the task's desired state."""
    state = task["state"]
    if task["desired"] == "stopped":
        return state in DONE_STATES
    if state == "Running":
        return True
    if state in DONE_STATES:
        r = task.get("restart") or {}
        exit_code = task.get("exit_code")
        may_restart = (task.get("restart_count", 0) < r.get("max_restarts", 0) and r.get("name") != "no"
                       and (r.get("name") == "always" or exit_code != 0))
        return not may_restart  # finished for good: exit 0, or the restart policy gave up
    return False


def desired_state(s: Snapshot) -> tuple[list[str], str]:
    problems = []
    for task_id, desired in s.acked.items():
        t = s.tasks.get(task_id)
        if t is None:
            continue  # reported by nothing_lost
        if t["desired"] != desired:
            problems.append(f"{task_id[:12]}: desired {t['desired']!r} but the manager acknowledged {desired!r}")
        elif not settled(t):
            problems.append(f"{task_id[:12]} ({t['name']}): {t['state']}, desired {desired} ({t.get('reason')})")
        elif t["state"] == "Running":
            running = s.running_of(task_id)
            if not any(c.id == t["container_id"] for c in running):
                problems.append(f"{task_id[:12]}: Running on {t['worker']} but container "
                                f"{t['container_id'][:12] or '-'} is not running in Docker")
    return problems, f"{len(s.acked)} acknowledged tasks at their desired state"


def single_container(s: Snapshot) -> tuple[list[str], str]:
    by_task: dict[str, list[Any]] = {}
    for c in s.containers:
        if c.status == "running":
            by_task.setdefault(c.labels.get(LABEL_TASK, ""), []).append(c)
    problems = [f"{tid[:12]}: {len(cs)} live containers ({', '.join(c.labels.get('cube.worker', '?') for c in cs)})"
                for tid, cs in by_task.items() if len(cs) > 1]
    return problems, f"{len(by_task)} tasks with a live container, none with two"


def nothing_lost(s: Snapshot, target: Target) -> tuple[list[str], str]:
    problems = [f"{tid[:12]}: acknowledged but missing from task.ls" for tid in s.acked if tid not in s.tasks]
    try:
        stored = {k for k, _ in target.call("store.list", {"ns": "tasks"}, timeout=5.0, endpoint="store")["items"]}
    except CubeError as e:
        return problems + [f"store.list failed: {e}"], ""
    problems += [f"{tid[:12]}: acknowledged but not in the Store" for tid in s.acked if tid not in stored]
    for tid in s.acked:
        if tid in s.tasks:
            try:
                target.call("task.inspect", {"id": tid}, timeout=3.0)
            except CubeError as e:
                problems.append(f"{tid[:12]}: task.inspect failed: {e}")
    return problems, f"{len(s.acked)} acknowledged tasks in task.ls, task.inspect and the Store"


def actors_answer(s: Snapshot, target: Target) -> tuple[list[str], str]:
    problems = list(s.errors)
    for what, endpoint, msg_type, body in (("manager", "api", "manager.ping", {}),
                                           ("store", "store", "store.count", {"ns": "tasks"}),
                                           ("scheduler", "scheduler", "sched.nodes", {})):
        try:
            target.call(msg_type, body, timeout=2.0, endpoint=endpoint)
        except CubeError as e:
            problems.append(f"{what} does not answer {msg_type}: {e}")
    try:
        nodes = {n["name"]: n for n in target.call("node.ls", timeout=3.0)["nodes"]}
    except CubeError as e:
        return problems + [f"node.ls failed: {e}"], ""
    for name in s.workers:
        n = nodes.get(name)
        if n is None or n["state"] != "ready":
            problems.append(f"worker {name} is {n['state'] if n else 'unknown'} in node.ls")
        elif not (n.get("metrics") or {}).get("state") == "alive":
            problems.append(f"worker {name} has no live metrics at the scheduler")
    return problems, f"manager, store, scheduler answer; {len(s.workers)} workers ready"


def no_leftovers(s: Snapshot) -> tuple[list[str], str]:
    problems = []
    for c in s.containers:
        tid = c.labels.get(LABEL_TASK, "")
        t = s.tasks.get(tid)
        if t is None:
            problems.append(f"container {c.short_id} ({c.status}) for task {tid[:12]} the manager does not know")
        elif t["desired"] == "stopped":
            problems.append(f"container {c.short_id} ({c.status}) left for stopped task {tid[:12]} ({t['state']})")
    return problems, "no container left for a stopped or unknown task"


CHECKS: dict[str, Callable[..., tuple[list[str], str]]] = {
    "desired-state": desired_state, "single-container": single_container, "nothing-lost": nothing_lost,
    "actors-answer": actors_answer, "no-leftovers": no_leftovers,
}


def snapshot(target: Target, acked: dict[str, str], workers: list[str]) -> Snapshot:
    errors = []
    try:
        tasks = {t["id"]: t for t in target.call("task.ls", timeout=5.0)["tasks"]}
    except CubeError as e:
        tasks, errors = {}, [f"task.ls failed: {e}"]
    return Snapshot(tasks, target.containers(), dict(acked), workers, errors)


def run_checks(target: Target, acked: dict[str, str], workers: list[str],
               names: list[str] | None = None) -> dict[str, tuple[list[str], str]]:
    s = snapshot(target, acked, workers)
    results = {}
    for name in names or list(CHECKS):
        fn = CHECKS[name]
        try:
            results[name] = fn(s, target) if name in ("nothing-lost", "actors-answer") else fn(s)
        except Exception as e:  # a check that cannot run is a failed check, with the reason
            results[name] = ([f"check failed to run: {type(e).__name__}: {e}"], "")
        if s.errors and name != "actors-answer":
            results[name] = (s.errors + results[name][0], results[name][1])
    return results


def settle(target: Target, acked: Callable[[], dict[str, str]], workers: Callable[[], list[str]],
           bound: float, names: list[str] | None = None) -> tuple[dict[str, tuple[list[str], str]], float]:
    """Re-run the checks until all hold or `bound` seconds pass; returns the last results and the time."""
    t0 = time.monotonic()
    while True:
        results = run_checks(target, acked(), workers(), names)
        if all(not problems for problems, _ in results.values()) or time.monotonic() - t0 >= bound:
            return results, time.monotonic() - t0
        time.sleep(0.5)
