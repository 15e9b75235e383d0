"""Issue 4, end to end: lost workers, restart policies, health checks, reconciliation, recovery."""
from __future__ import annotations

import os
import signal
import time

import docker
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)

HTTPD = ["--cmd", "httpd -f -p 8080 -h /www", "--port", "8080"]


def containers_of(task_id: str, all_: bool = False) -> list:
    return docker.from_env().containers.list(all=all_, filters={"label": f"cube.task_id={task_id}"})


def test_lost_worker_tasks_move_and_old_containers_are_removed_on_return(make_cluster, busybox):
    c = make_cluster(grace=2.0)
    c.start_worker("w1")
    c.start_worker("w2")
    ids = [c.start_task("--image", busybox, "--name", f"s{i}", "--cmd", "sleep 600") for i in range(4)]
    for i in ids:
        c.wait_state(i, "Running")
    victim = c.worker_name("w1")
    moved = [i for i in ids if c.task(i)["worker"] == victim]
    assert moved, "round-robin put nothing on w1"
    old = {i: c.task(i)["container_id"] for i in moved}

    t0 = time.monotonic()
    c.signal("w1", signal.SIGKILL, wait=True)
    for i in moved:
        c.wait_state(i, "Running", timeout=20, worker=c.worker_name("w2"))
    print(f"worker SIGKILL -> its {len(moved)} tasks Running elsewhere: {time.monotonic() - t0:.2f}s (grace 2s)")
    for i in moved:
        assert "lost" in " ".join(e["reason"] for e in c.events(i))

    # the old containers are still in Docker (the worker was killed, not its containers) ...
    assert all(len(containers_of(i)) == 2 for i in moved)
    c.start_worker("w1")  # ... until it comes back: reconciliation stops them, nothing duplicates
    for i in moved:
        wait_for(lambda i=i: [x.id for x in containers_of(i, all_=True)] == [c.task(i)["container_id"]], 15,
                 what="stale container removed")
        assert c.task(i)["container_id"] != old[i]
    for i in ids:
        assert len(containers_of(i)) == 1


def test_killed_container_restarts_per_policy_until_the_maximum(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    on_failure = c.start_task("--image", busybox, "--name", "flaky", "--cmd", "sleep 600",
                              "--restart", "on-failure", "--max-restarts", "2")
    never = c.start_task("--image", busybox, "--name", "once", "--cmd", "sleep 600", "--restart", "no")
    c.wait_state(on_failure, "Running")
    c.wait_state(never, "Running")

    docker.from_env().containers.get(c.task(never)["container_id"]).kill()
    t = c.wait_state(never, "Failed")
    assert "restart policy is 'no'" in t["reason"] and t["restart_count"] == 0

    for n in (1, 2):
        first = c.task(on_failure)["container_id"]
        t0 = time.monotonic()
        docker.from_env().containers.get(first).kill()
        t = c.wait_state(on_failure, "Running", timeout=20, restart_count=n)
        print(f"container kill -> Running again (restart {n}): {time.monotonic() - t0:.2f}s")
        assert t["container_id"] != first
    reasons = [e["reason"] for e in c.events(on_failure)]
    assert any("restart 1 of 2 in 1s" in r for r in reasons) and any("restart 2 of 2 in 2s" in r for r in reasons)

    docker.from_env().containers.get(c.task(on_failure)["container_id"]).kill()
    t = c.wait_state(on_failure, "Failed")
    assert "gave up after 2 restarts" in t["reason"] and t["restart_count"] == 2
    time.sleep(1.5)
    assert c.task(on_failure)["state"] == "Failed"
    wait_for(lambda: not containers_of(on_failure, all_=True), 10, what="dead container cleaned up")


def test_exit_zero_under_on_failure_completes(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    ok = c.start_task("--image", busybox, "--name", "batch", "--cmd", "sh -c 'sleep 0.5; exit 0'")
    bad = c.start_task("--image", busybox, "--name", "crash", "--cmd", "sh -c 'sleep 0.5; exit 3'",
                       "--max-restarts", "1")
    t = c.wait_state(ok, "Completed", timeout=15)
    assert t["exit_code"] == 0 and t["restart_count"] == 0
    t = c.wait_state(bad, "Failed", timeout=20, restart_count=1)
    wait_for(lambda: "gave up" in c.task(bad)["reason"], 10, what="give up")
    assert c.task(bad)["exit_code"] == 3


def test_failing_health_check_restarts_the_task(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    spec = os.path.join(c.tmp, "web.json")
    with open(spec, "w") as f:
        f.write('{"name": "healthy", "image": "%s", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],'
                ' "ports": [8080], "health": {"path": "/health", "interval": 0.5, "timeout": 1, "threshold": 2}}'
                % busybox)
    task_id = c.start_task(spec)
    first = c.wait_state(task_id, "Running")["container_id"]
    time.sleep(2)  # several good probes
    assert c.task(task_id)["restart_count"] == 0
    docker.from_env().containers.get(first).exec_run(["rm", "/www/health"])
    t = c.wait_state(task_id, "Running", timeout=20, restart_count=1)
    assert t["container_id"] != first
    assert any("health check failed" in e["reason"] for e in c.events(task_id))


def test_manager_sigkill_loses_nothing_and_adopts_running_containers(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1", "--cpus", "1")
    running = [c.start_task("--image", busybox, "--name", f"r{i}", "--cmd", "sleep 600", "--cpu", "0.25")
               for i in range(3)]
    for i in running:
        c.wait_state(i, "Running")
    pending = c.start_task("--image", busybox, "--name", "big", "--cmd", "sleep 600", "--cpu", "4")
    wait_for(lambda: "cpu" in c.task(pending)["reason"], 10, what="pending reason")
    before = {i: c.task(i)["container_id"] for i in running}

    c.kill_manager(signal.SIGKILL)
    c.start_manager()
    c.wait_worker_ready("w1")
    time.sleep(1.0)
    tasks = c.tasks()
    assert set(running + [pending]) <= set(tasks)
    assert tasks[pending]["state"] == "Pending"
    for i in running:
        assert tasks[i]["state"] == "Running" and tasks[i]["container_id"] == before[i]
        assert [x.id for x in containers_of(i)] == [before[i]]
    # queued work is still queued: capacity appears, it runs
    c.start_worker("w2", "--cpus", "8")
    c.wait_state(pending, "Running", worker=c.worker_name("w2"))


def test_each_child_actor_is_restarted_by_the_supervisor(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    first = c.start_task("--image", busybox, "--name", "keep", "--cmd", "sleep 600")
    c.wait_state(first, "Running")
    for actor in ("store", "scheduler", "manager"):
        old = c.actor_pids()[actor]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: c.actor_pids()[actor] != old, 10, what=f"{actor} restarted")
        c.wait_worker_ready("w1")
        t = wait_for(lambda: c.start_task("--image", busybox, "--name", f"after-{actor}", "--cmd", "sleep 600"),
                     20, what=f"a task accepted after {actor} restart")
        c.wait_state(t, "Running", timeout=20)
        assert c.task(first)["state"] == "Running"
        assert len(containers_of(first)) == 1


def test_stop_a_pending_task_never_starts_it(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1", "--cpus", "1")
    task_id = c.start_task("--image", busybox, "--name", "huge", "--cmd", "sleep 600", "--cpu", "16")
    t = wait_for(lambda: (lambda t: t if "cpu" in t["reason"] else None)(c.task(task_id)), 10, what="reason")
    assert t["state"] == "Pending" and "16" in t["reason"]
    c.cli("task", "stop", task_id)
    assert c.task(task_id)["state"] == "Completed"
    c.start_worker("w2", "--cpus", "32")
    time.sleep(2)
    assert c.task(task_id)["state"] == "Completed" and not containers_of(task_id, all_=True)


def test_stop_while_restarting_stops_for_good(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    task_id = c.start_task("--image", busybox, "--name", "crashy", "--cmd", "sh -c 'exit 1'",
                           "--max-restarts", "10")
    wait_for(lambda: c.task(task_id)["restart_count"] >= 1, 15, what="a restart")
    c.cli("task", "stop", task_id)
    time.sleep(3)
    t = c.task(task_id)
    assert t["desired"] == "stopped" and t["state"] in ("Completed", "Failed")
    n = t["restart_count"]
    time.sleep(2)
    assert c.task(task_id)["restart_count"] == n
    wait_for(lambda: not containers_of(task_id, all_=True), 10, what="containers removed")


def test_restarted_worker_adopts_its_containers(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    task_id = c.start_task("--image", busybox, "--name", "steady", "--cmd", "sleep 600")
    before = c.wait_state(task_id, "Running")["container_id"]
    c.signal("w1", signal.SIGTERM, wait=True)  # a worker restart leaves its containers running
    assert [x.id for x in containers_of(task_id)] == [before]
    c.start_worker("w1")
    time.sleep(1.0)
    t = c.task(task_id)
    assert t["state"] == "Running" and t["container_id"] == before and t["restart_count"] == 0
    assert [x.id for x in containers_of(task_id)] == [before]
    c.cli("task", "stop", task_id)  # and it still obeys commands for what it adopted
    c.wait_state(task_id, "Completed")
    wait_for(lambda: not containers_of(task_id, all_=True), 10, what="container removed")
