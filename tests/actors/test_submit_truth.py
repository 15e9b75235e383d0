"""Submit-time truth (issue 10, manager side): a re-sent start is idempotent only for the same
spec, a stopped task starts again only by restart, names are unique among live tasks; over real
ZeroMQ with a Worker actor on FakeRuntime."""
from __future__ import annotations

import pytest

from cube.wire.errors import CubeError
from tests.actors.test_manager_worker import cluster, containers, start, wait_state  # noqa: F401
from tests.actors.helpers import wait_for


def err(c, msg_type, body) -> CubeError:
    with pytest.raises(CubeError) as e:
        c.api.call(msg_type, body)
    return e.value


def test_the_same_start_twice_is_one_task_and_a_different_spec_is_refused(cluster):
    spec = {"id": "same-1", "image": "img:1", "name": "same", "env": {"A": "1"}}
    first = cluster.api.call("task.start", {"task": spec})
    again = cluster.api.call("task.start", {"task": spec})
    assert again["existing"] is True and again["task"]["created_at"] == first["task"]["created_at"]
    e = err(cluster, "task.start", {"task": {**spec, "env": {"A": "2"}, "memory": "64m"}})
    assert e.code == "conflict" and "different env, memory" in e.message


def test_a_stopped_task_starts_again_only_by_restart(cluster):
    t = start(cluster, id="r-1", name="again")
    running = wait_state(cluster, t["id"], "Running")
    cluster.api.call("task.stop", {"id": t["id"]})
    wait_state(cluster, t["id"], "Completed")
    e = err(cluster, "task.start", {"task": {"id": "r-1", "image": "img:1", "name": "again"}})
    assert e.code == "conflict" and f"cube task restart {t['id'][:12]}" in e.message
    cluster.api.call("task.restart", {"id": "again"})  # by name
    back = wait_state(cluster, t["id"], "Running")
    assert back["attempt"] == running["attempt"] + 1 and back["desired"] == "running"
    assert back["restart_count"] == 0
    wait_for(lambda: [x.attempt for x in containers(cluster, t["id"]) if x.running] == [back["attempt"]],
             what="only the new attempt's container")


def test_restarting_a_running_task_replaces_its_container(cluster):
    t = start(cluster, name="bounce")
    first = wait_state(cluster, t["id"], "Running")
    reply = cluster.api.call("task.restart", {"id": t["id"]})
    assert reply["task"]["reason"] == "restart requested"
    second = wait_state(cluster, t["id"], "Running", attempt=first["attempt"] + 1)
    assert second["container_id"] != first["container_id"]
    wait_for(lambda: [x.container_id for x in containers(cluster, t["id"])] == [second["container_id"]],
             what="the old container to be stopped and removed")
    states = [e["state"] for e in cluster.api.call("task.inspect", {"id": t["id"]})["events"]]
    assert states[-3:] == ["Pending", "Scheduled", "Running"]


def test_names_are_unique_among_live_tasks(cluster):
    a = start(cluster, name="web")
    e = err(cluster, "task.start", {"task": {"image": "img:1", "name": "web"}})
    assert e.code == "conflict" and "already named 'web'" in e.message and a["id"][:12] in e.message
    cluster.api.call("task.stop", {"id": "web"})
    wait_state(cluster, a["id"], "Completed")
    b = start(cluster, name="web")  # free again once the first one is stopped
    assert cluster.api.call("task.inspect", {"id": "web"})["task"]["id"] == b["id"]  # the live one
    e = err(cluster, "task.restart", {"id": a["id"]})  # its name is taken now
    assert e.code == "conflict" and "already named 'web'" in e.message


def test_unnamed_tasks_get_names_of_their_own(cluster):
    a, b = start(cluster), start(cluster)
    assert a["name"] != b["name"] and a["name"].startswith("img-")


def test_a_read_only_restart_is_checked_like_a_start(cluster):
    e = err(cluster, "task.restart", {"id": "no-such-task"})
    assert e.code == "not_found"


def test_an_always_task_out_of_restarts_that_exits_0_says_so(cluster):
    t = start(cluster, restart={"name": "always", "max_restarts": 1, "backoff": 0.1})
    first = wait_state(cluster, t["id"], "Running")
    cluster.runtime.kill(first["container_id"], exit_code=0)
    second = wait_state(cluster, t["id"], "Running", restart_count=1)
    cluster.runtime.kill(second["container_id"], exit_code=0)
    done = wait_state(cluster, t["id"], "Completed")
    assert "no restart left (1 of 1 under 'always')" in done["reason"] and "on-failure" not in done["reason"]
