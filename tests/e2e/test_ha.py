"""Several managers on a three-member etcd (issue 13, docs/ha.md), end to end on real Docker:
the leader SIGKILLed, then the next one frozen past its lease and thawed (fenced), then an etcd
member lost."""
from __future__ import annotations

import signal

import docker
import pytest

from cube.ha.harness import HACluster
from tests.support import started, wait_for

pytestmark = pytest.mark.timeout(240)

SLEEP = ["--cmd", "sleep 600"]


@pytest.fixture
def ha(etcd3, busybox, request):
    cluster = HACluster(etcd3.endpoints, managers=3, lease_ttl=2, grace=3.0, insecure=False)  # one identity
    with started(cluster, request) as cluster:
        yield cluster


def containers_of(task_id: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"cube.task_id={task_id}"})


def running(ha: HACluster, task_id: str) -> bool:
    return ha.task(task_id)["state"] == "Running"


def start(ha: HACluster, busybox: str, name: str) -> str:
    """`cube task start` with every manager in CUBE_MANAGER: the CLI finds the leader."""
    return ha.cli("task", "start", "--image", busybox, "--name", name, *SLEEP).stdout.strip()


def test_leader_killed_then_frozen_a_follower_takes_over_and_nothing_is_lost_or_doubled(ha, etcd3, busybox):
    ha.start_worker("w1")
    ha.start_worker("w2")
    first = ha.leader()
    ids = [start(ha, busybox, f"before{i}") for i in range(3)]
    for i in ids:
        wait_for(lambda i=i: running(ha, i), 30, f"task {i[:8]} Running")
    before = {i: (ha.task(i)["attempt"], ha.task(i)["container_id"]) for i in ids}
    followers_answer_reads_from_etcd(ha, first, ids)

    # 1. The leader's machine crashes: a follower leads, adopts the workers and their containers.
    ha.kill(first)
    second = ha.wait_leader(30, other_than=first)
    assert ha.ping(second)["term"] > 0
    after_kill = start(ha, busybox, "after-kill")
    wait_for(lambda: running(ha, after_kill), 30, "the new task Running under the new leader")
    tasks = ha.tasks()
    assert set(ids) | {after_kill} == set(tasks)  # nothing acknowledged was lost, nothing added
    for i in ids:  # running tasks were adopted, not restarted
        assert (tasks[i]["attempt"], tasks[i]["container_id"]) == before[i] and tasks[i]["state"] == "Running"

    # 2. The new leader freezes past its lease: the third manager leads; thawed, the old one
    #    must not act (its lease is gone, its term is older) and comes back a follower.
    term2 = ha.ping(second)["term"]
    ha.kill(second, signal.SIGSTOP)
    third = ha.wait_leader(30, other_than=second)
    assert third != first
    after_freeze = start(ha, busybox, "after-freeze")
    wait_for(lambda: running(ha, after_freeze), 30, "a task Running under the third leader")
    ha.kill(second, signal.SIGCONT)
    wait_for(lambda: "no longer the leader" in ha.nodes[second].log("manager"), 15,
             "the thawed leader to step down")
    wait_for(lambda: (ha.ping(second) or {}).get("role") == "follower", 30, "the thawed manager to follow")
    assert ha.ping(third)["term"] > term2

    tasks = ha.tasks()
    assert set(tasks) == set(ids) | {after_kill, after_freeze}
    for i in ids:
        assert (tasks[i]["attempt"], tasks[i]["container_id"]) == before[i] and tasks[i]["state"] == "Running"
    for i in tasks:  # no duplicate: one container per task
        assert len(containers_of(i)) == 1, f"task {i[:8]} has {len(containers_of(i))} containers"

    # 3. An etcd member is lost (the first of every manager's list): two of three keep a majority.
    etcd3.kill(0)
    after_etcd = start(ha, busybox, "after-etcd")
    wait_for(lambda: running(ha, after_etcd), 30, "a task Running with an etcd member gone")
    assert set(ha.tasks()) == set(tasks) | {after_etcd}


def ask(ha: HACluster, i: int, msg_type: str, body: dict) -> dict:
    """A request to manager i itself (no following of `not_leader`)."""
    from cube.wire.client import Client
    n = ha.nodes[i]
    client = Client(n.endpoints["api"], name="test", timeout=5.0, ctx=n.zmq_context, curve=n.credentials().curve())
    try:
        return client.call(msg_type, body)
    finally:
        client.close()


def followers_answer_reads_from_etcd(ha: HACluster, leader: int, ids: list[str]) -> None:
    """docs/ha.md, "Reads on followers": task ls/inspect, service ls, node ls from etcd; writes refused."""
    from cube.wire.errors import NOT_LEADER, CubeError
    for j in (j for j in range(len(ha.nodes)) if j != leader):
        listed = ask(ha, j, "task.ls", {"all": True})
        assert listed["served_by"] == "follower" and {t["id"] for t in listed["tasks"]} == set(ids)
        shown = ask(ha, j, "task.inspect", {"id": ids[0][:8]})  # an id prefix
        assert shown["task"]["id"] == ids[0] and shown["task"]["state"] == "Running" and shown["events"]
        assert {n["name"] for n in ask(ha, j, "node.ls", {})["nodes"]} >= {ha.nodes[0].worker_name("w1")}
        assert ask(ha, j, "service.ls", {})["services"] == []
        with pytest.raises(CubeError) as refused:
            ask(ha, j, "task.stop", {"id": ids[0]})
        assert refused.value.code == NOT_LEADER and "the leader is" in refused.value.message
