"""Issue 13: the leader's host cut off the network (a real partition on the test bed, cube/testbed):
it loses the etcd majority and steps down, a manager on the majority side leads, the workers
follow it, nothing is restarted, lost or doubled; healed, the old leader follows (docs/ha.md)."""
from __future__ import annotations

import pytest

from cube.harness import BUSYBOX
from cube.ha.etcd_process import EtcdCluster
from cube.ha.harness import HACluster
from cube.testbed.bed import Bed, missing, reap
from cube.testbed.cluster import BedCluster
from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)

MANAGERS = ["m1", "m2", "m3"]  # each with an etcd member
WORKERS = {"w1": "h4"}


@pytest.fixture(scope="module")
def bed():
    why = missing()
    if why:
        pytest.skip(why)
    reap()
    b = Bed(hosts=(*MANAGERS, *WORKERS.values()), docker=tuple(WORKERS.values()))
    b.up()
    yield b
    b.down()


@pytest.fixture
def ha(bed, tmp_path, request):
    etcd = EtcdCluster(str(tmp_path / "etcd"), 3, ips=[bed.address(h) for h in MANAGERS],
                       prefixes=[bed.prefix(h) for h in MANAGERS],
                       probe=lambda i, fn: bed.call_in(MANAGERS[i], fn))
    cluster = None
    try:
        etcd.start()
        cluster = HACluster(etcd.endpoints, managers=3, lease_ttl=2, insecure=False, grace=3.0, heartbeat=0.5,
                            make=lambda i, **kw: BedCluster(bed, manager=MANAGERS[i], **kw))
        cluster.start()
        for short, host in WORKERS.items():
            cluster.start_worker(short, host=host)
        yield cluster
    finally:
        report = getattr(request.node, "rep_call", None)
        if cluster is not None:
            if report is not None and report.failed:
                print(cluster.log_tail(60))
            cluster.close()
        bed.heal()
        etcd.stop()


def test_leader_host_cut_off_steps_down_and_a_majority_manager_takes_over(bed, ha):
    sleep = ["--image", BUSYBOX, "--cmd", "sleep 600"]
    ids = [ha.cli("task", "start", *sleep, "--name", f"s{i}").stdout.strip() for i in range(2)]
    for i in ids:
        wait_for(lambda i=i: ha.task(i)["state"] == "Running", 60, f"task {i[:8]} Running")
    before = {i: (ha.task(i)["attempt"], ha.task(i)["container_id"]) for i in ids}
    old = ha.leader()
    term = ha.ping(old)["term"]

    bed.partition(MANAGERS[old])  # its manager and its etcd member: a minority of one
    new = ha.wait_leader(30, other_than=old)
    assert ha.ping(new)["term"] > term
    wait_for(lambda: "no longer the leader" in ha.nodes[old].log("manager"), 30,
             "the cut-off leader to step down")
    after = ha.cli("task", "start", *sleep, "--name", "after").stdout.strip()
    wait_for(lambda: ha.task(after)["state"] == "Running", 60, "a task Running under the new leader")

    bed.heal()
    wait_for(lambda: (ha.ping(old) or {}).get("role") == "follower", 60, "the healed manager to follow")
    tasks = ha.tasks()
    assert set(tasks) == set(ids) | {after}
    for i in ids:  # adopted by the new leader, not restarted
        assert (tasks[i]["attempt"], tasks[i]["container_id"]) == before[i] and tasks[i]["state"] == "Running"
    running = {}
    for c in ha.first.containers(all_=False):
        running.setdefault(c.labels["cube.task_id"], []).append(c.id)
    assert {i: len(v) for i, v in running.items()} == {i: 1 for i in tasks}  # none doubled
