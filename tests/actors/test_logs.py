"""task.logs over ZeroMQ: Manager + Scheduler + a Worker with FakeRuntime containers. Output that
outlives its container, earlier attempts, cursors for following, bounded pages, a worker gone."""
from __future__ import annotations

import pytest

from cube.runtime.fake import FakeRuntime
from cube.wire.errors import CubeError
from tests.actors.helpers import wait_for
from tests.actors.test_manager_worker import cluster, start, task, wait_state  # noqa: F401  (cluster: a fixture)


@pytest.fixture
def c(cluster):  # noqa: F811  (the fixture above, under a short name)
    return cluster


def logs(c, ref, **body) -> dict:
    return c.api.call("task.logs", {"id": ref, **body})


def logs_error(c, ref, **body) -> CubeError:
    with pytest.raises(CubeError) as e:
        logs(c, ref, **body)
    return e.value


def gone(c, container_id: str) -> bool:
    return c.runtime.inspect(container_id) is None


def test_a_failed_tasks_output_outlives_its_container_and_shows_in_inspect(c):
    t = start(c, restart="no")
    running = wait_state(c, t["id"], "Running")
    c.runtime.write_log(running["container_id"], "starting")
    c.runtime.write_log(running["container_id"], "boom")
    c.runtime.kill(running["container_id"], exit_code=3)
    failed = wait_state(c, t["id"], "Failed")
    wait_for(lambda: gone(c, running["container_id"]), what="the dead container to be removed")
    reply = logs(c, t["id"])
    assert reply["logs"] == "starting\nboom\n" and reply["source"] == "retained"
    assert reply["attempt"] == 1 and reply["ended"] and not reply["more"] and reply["worker"] == "w1"
    assert failed["output"] == "starting\nboom" and failed["output_attempt"] == 1 and failed["error"] == "boom"
    assert logs(c, t["id"], tail=1)["logs"] == "boom\n"


def test_an_earlier_attempt_after_a_restart(c):
    t = start(c)
    first = wait_state(c, t["id"], "Running")
    c.runtime.write_log(first["container_id"], "first run")
    c.api.call("task.restart", {"id": t["id"]})
    second = wait_state(c, t["id"], "Running", attempt=2)
    c.runtime.write_log(second["container_id"], "second run")
    wait_for(lambda: gone(c, first["container_id"]), what="the first container to be removed")
    assert logs(c, t["id"])["logs"] == "second run\n"
    one = logs(c, t["id"], attempt=1)
    assert one["logs"] == "first run\n" and one["ended"] and one["source"] == "retained"
    assert logs_error(c, t["id"], attempt=3).code == "not_found"
    assert task(c, t["id"])["ran_on"] == {"1": "w1", "2": "w1"}


def test_following_with_a_cursor_gets_each_line_once_then_the_end(c):
    t = start(c, restart="no")
    running = wait_state(c, t["id"], "Running")
    cid = running["container_id"]
    c.runtime.write_log(cid, "old")
    first = logs(c, t["id"], tail=0)  # follow from now on
    assert first["logs"] == "" and not first["ended"]
    c.runtime.write_log(cid, "new 1")
    second = logs(c, t["id"], cursor=first["cursor"])
    assert second["logs"] == "new 1\n" and not second["ended"]
    assert logs(c, t["id"], cursor=second["cursor"])["logs"] == ""  # nothing new yet
    c.runtime.write_log(cid, "new 2")
    c.runtime.kill(cid, exit_code=0)
    wait_state(c, t["id"], "Completed")
    wait_for(lambda: gone(c, cid), what="the container to be removed")
    last = logs(c, t["id"], cursor=second["cursor"])  # now from the retained copy
    assert last["logs"] == "new 2\n" and last["ended"] and last["source"] == "retained"


def test_replies_are_bounded_pages(c):
    t = start(c)
    running = wait_state(c, t["id"], "Running")
    line = "x" * 999
    for _ in range(600):  # 600 KB: more than one reply may carry
        c.runtime.write_log(running["container_id"], line)
    text, cursor, pages = "", "", 0
    while True:
        reply = logs(c, t["id"], **({"cursor": cursor} if cursor else {"tail": 10**6}))
        assert len(reply["logs"].encode()) <= 256 << 10
        text, cursor, pages = text + reply["logs"], reply["cursor"], pages + 1
        if not reply["more"]:
            break
    assert pages == 3 and text == (line + "\n") * 600


def test_a_pending_task_and_a_bad_cursor(c):
    t = start(c, cpu=64)  # fits nowhere
    assert "has not run yet" in logs_error(c, t["id"]).message
    waiting = logs(c, t["id"], follow=True)  # a follower waits for the first attempt
    assert waiting["attempt"] == 0 and waiting["logs"] == "" and waiting["waiting"].startswith("Pending")
    assert not waiting["ended"]
    ok = start(c)
    wait_state(c, ok["id"], "Running")
    assert logs_error(c, ok["id"], cursor="nonsense").code == "bad_request"


def test_a_worker_that_is_gone_is_named(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]), grace=1.0)
    runtime = FakeRuntime()
    worker = actors.worker(manager.config, "w1", runtime)
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    wait_for(lambda: api.call("manager.ping")["workers"] == 1, what="the worker to register")
    t = api.call("task.start", {"task": {"image": "img:1", "restart": "no"}})["task"]
    wait_for(lambda: api.call("task.inspect", {"id": t["id"]})["task"]["state"] == "Running", what="running")
    cid = api.call("task.inspect", {"id": t["id"]})["task"]["container_id"]
    runtime.write_log(cid, "boom")
    runtime.kill(cid, exit_code=3)
    wait_for(lambda: api.call("task.inspect", {"id": t["id"]})["task"]["state"] == "Failed", what="failed")
    worker.stop()
    wait_for(lambda: api.call("manager.ping")["workers"] == 0, what="the worker to be lost")
    with pytest.raises(CubeError) as e:
        api.call("task.logs", {"id": t["id"]})
    assert e.value.code == "unavailable" and "worker w1, which ran attempt 1" in e.value.message
    assert "cube task inspect" in e.value.message  # where its last lines still are
    assert api.call("task.inspect", {"id": t["id"]})["task"]["output"] == "boom"
