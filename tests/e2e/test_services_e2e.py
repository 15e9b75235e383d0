"""Issue 11, end to end: services on a real cluster (cube-manager and two cube-workers as
processes, CURVE on, real Docker): spread, scale, a rolling update whose health check fails and
rolls back, a worker killed and the whole cube-manager SIGKILLed mid-update, node drain.

Every check of "nothing duplicated" looks at Docker itself, by the `cube.task_id` labels of the
cluster's containers, not only at what the manager says.
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from cube.harness import Cluster
from cube.runtime.base import LABEL_TASK
from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)

HEALTH = {"path": "/health", "interval": 0.5, "timeout": 1.0, "threshold": 2}  # the image serves /www/health
LIVE = ("Pending", "Scheduled", "Running")


def web(image: str) -> dict[str, Any]:
    return {"image": image, "command": "httpd -f -p 8080 -h /www", "ports": [8080], "health": HEALTH}


def sleeper(image: str, v: str = "1") -> dict[str, Any]:
    return {"image": image, "command": "sleep 600", "env": {"V": v}}


# ---- looking at a service ---------------------------------------------------------------------------

def ps(c: Cluster, name: str) -> list[dict[str, Any]]:
    return c.call("service.ps", {"name": name})["tasks"]


def inspect(c: Cluster, name: str) -> dict[str, Any]:
    return c.call("service.inspect", {"name": name})


def rollout(c: Cluster, name: str) -> dict[str, Any]:
    return inspect(c, name)["service"]["rollout"]


def running(c: Cluster, name: str, version: int | None = None) -> list[dict[str, Any]]:
    return [t for t in ps(c, name) if t["state"] == "Running" and t["desired"] == "running"
            and (version is None or t["version"] == version)]


def wait_running(c: Cluster, name: str, n: int, version: int | None = None, timeout: float = 30.0,
                 worker: str | None = None) -> list[dict[str, Any]]:
    """Exactly n replicas Running (at `version`, on `worker`), one per slot 1..n, and no other live task."""
    def ok() -> list[dict[str, Any]] | None:
        tasks = ps(c, name)
        live = [t for t in tasks if t["desired"] == "running" and t["state"] in LIVE]
        up = [t for t in live if t["state"] == "Running" and (version is None or t["version"] == version)
              and (worker is None or t["worker"] == worker)]
        if len(live) == n and sorted(t["slot"] for t in up) == list(range(1, n + 1)):
            return up
        return None
    what = f"{n} replicas of {name} Running" + (f" at version {version}" if version else "") + \
           (f" on {worker}" if worker else "")
    return wait_for(ok, timeout, what=what)


def wait_rollout(c: Cluster, name: str, holds: Callable[[dict[str, Any]], bool], timeout: float,
                 what: str) -> dict[str, Any]:
    """The service's rollout record, once `holds(record)`."""
    def check() -> dict[str, Any] | None:
        r = rollout(c, name)
        return r if holds(r) else None
    return wait_for(check, timeout, what=what)


def wait_rollout_over(c: Cluster, name: str, timeout: float = 40.0) -> dict[str, Any]:
    """The rollout record once it is no longer updating (completed, paused, rolling back...)."""
    return wait_rollout(c, name, lambda r: r["state"] != "updating", timeout, f"the update of {name} to end")


def events(c: Cluster, name: str) -> list[str]:
    return [e["message"] for e in inspect(c, name)["events"]]


def docker_running(c: Cluster) -> Counter:
    """Running containers of this cluster, counted by the task they belong to."""
    return Counter(x.labels.get(LABEL_TASK) for x in c.containers(all_=False))


def assert_one_container_each(c: Cluster, name: str, n: int) -> None:
    """Docker runs exactly one container for each Running replica, and nothing else (the stopped
    replicas' containers are gone). Waits a little: a stopped container takes --stop-timeout."""
    def clean() -> str:
        up = {t["id"] for t in running(c, name)}
        have = docker_running(c)
        problems = [f"{tid[:8]} has {k} running containers" for tid, k in have.items() if k != 1]
        problems += [f"{tid[:8]} Running without a container" for tid in up - set(have)]
        problems += [f"container of {tid[:8]} runs, not a Running replica" for tid in set(have) - up]
        if len(up) != n:
            problems.append(f"{len(up)} replicas Running, not {n}")
        return "; ".join(problems)
    wait_for(lambda: not clean(), 20, what=f"one container per replica of {name}")


def assert_one_live_task_per_slot(c: Cluster, name: str) -> None:
    by_slot = Counter(t["slot"] for t in ps(c, name) if t["desired"] == "running" and t["state"] in LIVE)
    assert all(k == 1 for k in by_slot.values()), f"slots with several live tasks: {by_slot}"


@pytest.fixture
def two(make_cluster):
    """A cluster with workers w1 and w2; containers stop within 1 s."""
    c = make_cluster(grace=2.0, stop_timeout=1.0)
    c.start_worker("w1")
    c.start_worker("w2")
    return c


# ---- (a) spread, scale, a failing update rolls back --------------------------------------------------

def test_spread_scale_and_a_failing_health_check_rolls_the_update_back(two, busybox):
    c = two
    w1, w2 = c.worker_name("w1"), c.worker_name("w2")
    t0 = time.monotonic()
    reply = c.call("service.create", {"name": "web", "replicas": 6, "task": web(busybox),
                                      "update": {"monitor": 1.0, "parallelism": 2}})
    assert reply["service"]["replicas"] == 6 and reply["service"]["version"] == 1
    tasks = wait_running(c, "web", 6)
    print(f"service.create 6 replicas -> Running: {time.monotonic() - t0:.2f}s")
    assert Counter(t["worker"] for t in tasks) == {w1: 3, w2: 3}  # spread
    assert all(t["name"].startswith(f"web.{t['slot']}.") for t in tasks)

    c.call("service.scale", {"name": "web", "replicas": 10})
    tasks = wait_running(c, "web", 10)
    assert Counter(t["worker"] for t in tasks) == {w1: 5, w2: 5}
    [row] = c.call("service.ls")["services"]
    assert (row["name"], row["replicas"]) == ("web", 10)
    wait_for(lambda: c.call("service.ls")["services"][0]["running"] == 10, 10, what="service.ls: 10 running")
    assert_one_container_each(c, "web", 10)
    before = {t["slot"]: t["id"] for t in tasks}

    # The new template's health check asks for a path httpd does not serve (404): each
    # replacement is restarted after two failed probes, and the update rolls back.
    t0 = time.monotonic()
    reply = c.call("service.update", {"name": "web", "task": {"health": {**HEALTH, "path": "/nope"}}})
    assert reply["service"]["version"] == 2 and reply["service"]["rollout"]["state"] == "updating"
    wait_for(lambda: rollout(c, "web")["state"] in ("rollback_started", "rollback_completed"), 30,
             what="the update to fail and roll back")
    final = wait_rollout(c, "web", lambda r: r["state"] not in ("updating", "rollback_started"), 40,
                         "the rollback to end")
    print(f"update with a failing health check -> rolled back: {time.monotonic() - t0:.2f}s")
    assert final["state"] == "rollback_completed", final
    said = events(c, "web")
    assert any("the replacement failed" in e for e in said) and any("rolling back" in e for e in said)
    assert said[-1] == "rolled back", said

    svc = inspect(c, "web")["service"]
    assert svc["version"] == 1 and svc["spec"]["health"]["path"] == "/health"
    tasks = wait_running(c, "web", 10, version=1)
    assert all(t["health"]["path"] == "/health" for t in tasks)
    assert not [t for t in ps(c, "web") if t["version"] == 2 and t["desired"] == "running" and t["state"] in LIVE]
    changed = sorted(s for s, tid in before.items() if {t["slot"]: t["id"] for t in tasks}[s] != tid)
    assert 1 <= len(changed) <= 2, f"only the first batch (parallelism 2) was touched: {changed}"
    assert_one_live_task_per_slot(c, "web")
    assert_one_container_each(c, "web", 10)


# ---- (b) a worker killed mid-update --------------------------------------------------------------------

def _kill_the_holder(c: Cluster, name: str) -> str:
    """SIGKILL the worker running the first Running replacement (version 2); returns its short name."""
    holder = running(c, name, version=2)[0]["worker"]
    short = holder.removeprefix(c.token + "-")
    c.signal(short, signal.SIGKILL)
    return short


def _start_sleepers(c: Cluster, image: str, n: int, update: dict[str, Any]) -> None:
    c.call("service.create", {"name": "app", "replicas": n, "task": sleeper(image, "1"), "update": update})
    wait_running(c, "app", n)


def test_a_worker_killed_mid_update_the_update_still_completes(two, busybox):
    """Killed in the delay after the first slot settled (nothing in flight): the settled
    replacement on it is lost; the delay (3.5 s) outlasts the grace period, so the next slot goes
    to the surviving worker."""
    c = two
    _start_sleepers(c, busybox, 3, {"monitor": 1.0, "parallelism": 1, "delay": 3.5})
    c.call("service.update", {"name": "app", "task": {"env": {"V": "2"}}})
    wait_rollout(c, "app", lambda r: r["batches"] >= 1 and r["settled_at"] >= r["updated_at"], 30,
                 "the first slot to settle")
    assert rollout(c, "app")["state"] == "updating"
    killed = _kill_the_holder(c, "app")
    final = wait_rollout_over(c, "app", 40)
    assert final["state"] == "completed", (final, events(c, "app"))
    other = c.worker_name("w2" if killed == "w1" else "w1")
    wait_running(c, "app", 3, version=2, worker=other)
    c.start_worker(killed)  # back: reconciliation stops its stale containers
    assert_one_container_each(c, "app", 3)


def test_a_worker_killed_mid_update_converges_on_the_new_spec_with_failure_action_continue(two, busybox):
    """A worker holding a replacement is SIGKILLed mid-update; with failure_action continue (so
    that what the loss counts as does not matter), every slot ends Running the new spec on the
    surviving worker, the update completes, and nothing runs twice once the killed worker is
    back."""
    c = two
    _start_sleepers(c, busybox, 6, {"monitor": 1.0, "parallelism": 1, "failure_action": "continue"})
    c.call("service.update", {"name": "app", "task": {"env": {"V": "2"}}})
    wait_for(lambda: running(c, "app", version=2), 30, what="a first replacement Running")
    killed = _kill_the_holder(c, "app")
    assert rollout(c, "app")["state"] == "updating", "killed mid-update"
    other = c.worker_name("w2" if killed == "w1" else "w1")
    final = wait_rollout_over(c, "app", 40)
    assert final["state"] == "completed", (final, events(c, "app"))
    wait_running(c, "app", 6, version=2, worker=other)
    c.start_worker(killed)
    assert_one_live_task_per_slot(c, "app")
    assert_one_container_each(c, "app", 6)


# ---- (c) the whole cube-manager SIGKILLed mid-update -------------------------------------------------------

def test_manager_sigkill_mid_update_resumes_and_completes(two, busybox):
    c = two
    _start_sleepers(c, busybox, 6, {"monitor": 1.0, "parallelism": 1})
    c.call("service.update", {"name": "app", "task": {"env": {"V": "2"}}})
    wait_for(lambda: rollout(c, "app")["batches"] >= 3, 30, what="the third batch")
    c.kill_manager(signal.SIGKILL)
    t0 = time.monotonic()
    c.start_manager()
    c.wait_worker_ready("w1")
    c.wait_worker_ready("w2")
    at_restart = rollout(c, "app")
    assert at_restart["state"] == "updating" and at_restart["batches"] >= 3, at_restart
    done_before = {t["slot"]: t["id"] for t in running(c, "app", version=2)}
    final = wait_rollout_over(c, "app", 40)
    print(f"manager SIGKILL + restart -> update completed: {time.monotonic() - t0:.2f}s")
    assert final["state"] == "completed" and final["message"] == "update completed", final
    assert final["batches"] == 6, f"resumed where it was, not started over: {final}"
    tasks = wait_running(c, "app", 6, version=2)
    now = {t["slot"]: t["id"] for t in tasks}
    assert all(now[s] == tid for s, tid in done_before.items()), "slots replaced before the crash kept their tasks"
    assert all(t["restart_count"] == 0 for t in tasks)
    assert_one_live_task_per_slot(c, "app")
    assert_one_container_each(c, "app", 6)


# ---- (d) drain and activate ----------------------------------------------------------------------------------

def test_drain_moves_every_replica_and_activate_lets_new_ones_back(two, busybox):
    """Drained right after the replicas started (before they settle, monitor 5 s by default)."""
    c = two
    w1, w2 = c.worker_name("w1"), c.worker_name("w2")
    c.call("service.create", {"name": "d", "replicas": 4, "task": sleeper(busybox)})
    tasks = wait_running(c, "d", 4)
    assert Counter(t["worker"] for t in tasks) == {w1: 2, w2: 2}
    node = c.call("node.drain", {"name": w1})["node"]
    assert node["availability"] == "drain"
    wait_running(c, "d", 4, worker=w2, timeout=30)
    wait_for(lambda: not [x for x in c.containers(all_=True) if x.labels.get("cube.worker") == w1], 15,
             what="no container left on the drained worker")
    assert c.nodes()[w1]["availability"] == "drain"
    assert_one_container_each(c, "d", 4)

    c.call("node.activate", {"name": w1})
    assert c.nodes()[w1]["availability"] == "active"
    c.call("service.scale", {"name": "d", "replicas": 6})
    tasks = wait_running(c, "d", 6)
    assert Counter(t["worker"] for t in tasks)[w1] >= 1, "new replicas may go to the activated worker"
    assert_one_container_each(c, "d", 6)


def test_drain_of_settled_replicas_moves_them(two, busybox):
    c = two
    w1, w2 = c.worker_name("w1"), c.worker_name("w2")
    c.call("service.create", {"name": "d", "replicas": 4, "task": sleeper(busybox), "update": {"monitor": 1.0}})
    wait_running(c, "d", 4)
    time.sleep(1.5)  # every replica settled
    c.call("node.drain", {"name": w1})
    wait_running(c, "d", 4, worker=w2, timeout=12)
    assert_one_container_each(c, "d", 4)
