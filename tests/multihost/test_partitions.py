"""Issue 13 part 4: Cube across hosts that are network namespaces with their own Docker engines
(cube/testbed): a worker host cut off the network, published ports at the worker's own address."""
from __future__ import annotations

import contextlib
import time

import pytest

from cube.harness import BUSYBOX
from tests.support import fetch, wait_for

pytestmark = pytest.mark.timeout(180)

HTTPD = ["--cmd", "httpd -f -p 8080 -h /www"]


def stop_all(c, ids) -> None:
    """Stop the test's tasks and wait until their containers are gone from every host: the next
    test of the module starts from an empty cluster."""
    for i in ids:
        c.cli("task", "stop", i, check=False)
    wait_for(lambda: not [x for x in c.containers() if x.labels.get("cube.task_id") in ids], 30,
             what="the test's containers to be removed")


def test_partitioned_worker_keeps_running_and_rejoins_without_duplicates(bed, cluster):
    c = cluster
    w1, w2 = c.worker_name("w1"), c.worker_name("w2")
    sleep = ["--image", BUSYBOX, "--cmd", "sleep 600"]
    # Restart policy `always` moves a lost worker's task; `no` ends it (docs/architecture.md, "Worker
    # liveness and reconciliation"). Round-robin alternates, so each kind gets a task on each worker.
    movers = [c.start_task(*sleep, "--name", f"m{i}", "--restart", "always") for i in range(2)]
    stayers = [c.start_task(*sleep, "--name", f"s{i}", "--restart", "no") for i in range(2)]
    ids = movers + stayers
    try:
        for i in ids:
            c.wait_state(i, "Running")
        cut = {i: c.task(i)["container_id"] for i in ids if c.task(i)["worker"] == w1}
        moved = [i for i in movers if i in cut]
        ended = [i for i in stayers if i in cut]
        assert moved and ended, f"round-robin did not put one task of each policy on w1: {cut}"

        t0 = time.monotonic()
        bed.partition("h2")  # w1's host: its switch port goes down
        try:
            wait_for(lambda: c.nodes()[w1]["state"] == "lost", 20, what="the manager to mark w1 lost")
            t_lost = time.monotonic() - t0
            for i in moved:
                c.wait_state(i, "Running", timeout=20, worker=w2)
            print(f"link cut -> w1 lost {t_lost:.2f}s, its tasks Running on w2 {time.monotonic() - t0:.2f}s (grace 3s)")
            for i in ended:
                c.wait_state(i, "Failed", timeout=20, worker=w1)
            # Behind the cut, the worker and its containers carry on: that host's own engine says so.
            assert c.alive("w1")
            with contextlib.closing(bed.docker("h2")) as d:
                running = {x.id for x in d.containers.list(filters={"label": f"cube.worker={w1}"})}
            assert set(cut.values()) <= running
        finally:
            bed.heal("h2")
        t0 = time.monotonic()
        c.wait_worker_ready("w1")  # it reconnects by itself

        def settled() -> bool:
            """Exactly one running container per live task over both engines, the one the manager
            names; none for the tasks that ended."""
            by_task = c.running_by_task()
            live = [i for i in ids if i not in ended]
            return (all([cid for _, cid in by_task.get(i, [])] == [c.task(i)["container_id"]] for i in live)
                    and not any(by_task.get(i) for i in ended))
        wait_for(settled, 30, what="one running container per live task, none for ended ones, across the hosts")
        print(f"healed -> w1 ready and one container per task {time.monotonic() - t0:.2f}s")
        for i in moved:
            assert c.task(i)["worker"] == w2 and c.task(i)["container_id"] != cut[i]
        for i in [*moved, *ended]:
            assert "lost" in " ".join(e["reason"] for e in c.events(i))
        assert all(c.task(i)["state"] == "Failed" for i in ended)
    finally:
        bed.heal()
        stop_all(c, ids)


def test_published_port_answers_at_the_workers_own_address(bed, cluster):
    c = cluster
    ids = [c.start_task("--image", BUSYBOX, "--name", f"web{i}", *HTTPD, "--port", "8080") for i in range(2)]
    try:
        for i in ids:
            task = c.wait_state(i, "Running")
            short = task["worker"].removeprefix(c.token + "-")
            host = c.placement[short]
            url = f"http://{bed.address(host)}:{task['host_ports']['8080/tcp']}/"
            others = [h for h in bed.hosts if h != host]  # the manager's host and the other worker's
            for other in others:
                assert bed.call_in(other, fetch, url, 10) == b"hello from cube\n", (other, url)
            assert c.nodes()[task["worker"]]["address"] == bed.address(host)
    finally:
        stop_all(c, ids)


def test_fixed_host_port_lands_once_per_worker_and_answers_at_each_address(bed, cluster):
    """Issue 15 on separate hosts: a fixed host port is a per-worker resource, so two tasks asking
    for it land one per worker, each bound at its own worker's address; a third waits for one."""
    c = cluster
    port = 18080
    ids: list[str] = []

    def answers(task: dict) -> bool:
        host = c.placement[task["worker"].removeprefix(c.token + "-")]
        return bed.call_in("h1", fetch, f"http://{bed.address(host)}:{port}/", 10) == b"hello from cube\n"
    try:
        for i in range(3):
            ids.append(c.start_task("--image", BUSYBOX, "--name", f"fixed{i}", *HTTPD, "--port", f"{port}:8080"))
        tasks = [c.wait_state(i, "Running") for i in ids[:2]]
        assert {t["worker"] for t in tasks} == {c.worker_name("w1"), c.worker_name("w2")}
        assert all(answers(t) for t in tasks)
        waiting = c.task(ids[2])
        assert waiting["state"] == "Pending" and str(port) in waiting["reason"], waiting

        c.cli("task", "stop", ids[0])  # its worker's port frees up: the third task goes there
        assert answers(c.wait_state(ids[2], "Running", timeout=30, worker=tasks[0]["worker"]))
    finally:
        stop_all(c, ids)
