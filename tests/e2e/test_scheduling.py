"""Issue 3, end to end: placement from live metrics, with a worker too small for the tasks."""
from __future__ import annotations

import json

import pytest

from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)


def place_six(c, busybox) -> list[str]:
    c.start_worker("big1", "--cpus", "2", "--memory", "1g")
    c.start_worker("big2", "--cpus", "2", "--memory", "1g")
    c.start_worker("tiny", "--cpus", "0.25", "--memory", "32m")
    ids = [c.start_task("--image", busybox, "--name", f"job{i}", "--cmd", "sleep 600",
                        "--cpu", "0.25", "--memory", "64m") for i in range(6)]
    for i in ids:
        c.wait_state(i, "Running")
    return [c.task(i)["worker"] for i in ids]


def test_roundrobin_skips_the_small_worker_and_alternates(make_cluster, busybox):
    c = make_cluster(scheduler="roundrobin")
    workers = place_six(c, busybox)
    print("roundrobin placed:", workers)
    assert c.worker_name("tiny") not in workers
    assert all(a != b for a, b in zip(workers, workers[1:])), workers  # strict alternation
    assert workers.count(c.worker_name("big1")) == 3


def test_epvm_spreads_load_and_skips_the_small_worker(make_cluster, busybox):
    c = make_cluster(scheduler="epvm")
    workers = place_six(c, busybox)
    print("epvm placed:", workers)
    assert c.worker_name("tiny") not in workers
    assert workers.count(c.worker_name("big1")) == 3  # equal nodes, equal share of the opportunity cost

    nodes = {n["name"]: n for n in json.loads(c.cli("node", "ls", "--json").stdout)}
    assert nodes[c.worker_name("big1")]["tasks"] == 3
    table = c.cli("node", "ls").stdout
    for column in ("NAME", "ADDRESS", "STATE", "CPU", "MEMORY", "DISK", "TASKS", "LAST SEEN"):
        assert column in table


def test_unplaceable_task_waits_with_a_reason_and_runs_when_capacity_appears(make_cluster, busybox):
    c = make_cluster(scheduler="epvm")
    c.start_worker("small", "--cpus", "1")
    task_id = c.start_task("--image", busybox, "--name", "needy", "--cmd", "sleep 600", "--cpu", "1.5")
    t = wait_for(lambda: (lambda t: t if "cpu free" in t["reason"] else None)(c.task(task_id)), 10, what="reason")
    assert t["state"] == "Pending" and "1.5" in t["reason"]
    assert "cpu free" in c.cli("task", "ls").stdout
    c.start_worker("large", "--cpus", "2")
    assert c.wait_state(task_id, "Running")["worker"] == c.worker_name("large")
