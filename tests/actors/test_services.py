"""Services over real ZeroMQ: Manager + Scheduler + two Worker actors on FakeRuntime."""
from __future__ import annotations

from collections import Counter

import pytest

from cube.runtime.fake import FakeRuntime
from cube.wire.errors import CubeError
from tests.actors.helpers import wait_for


@pytest.fixture
def two(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]), grace=2.0)
    runtime = FakeRuntime(missing_images={"ghost:1"})
    for name in ("w1", "w2"):
        actors.worker(manager.config, name, runtime)

    class Rig:
        pass
    r = Rig()
    r.manager, r.runtime = manager, runtime
    r.api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    sched_client = actors.client(sched_ep)
    wait_for(lambda: r.api.call("manager.ping")["workers"] == 2, what="two workers")
    wait_for(lambda: len(sched_client.call("sched.nodes")["nodes"]) == 2, what="two workers' metrics")
    return r


def ps(r, name):
    return r.api.call("service.ps", {"name": name})


def running(r, name, version=None):
    return [t for t in ps(r, name)["tasks"] if t["state"] == "Running" and t["desired"] == "running"
            and (version is None or t["version"] == version)]


def wait_running(r, name, n, version=None, timeout=15.0):
    return wait_for(lambda: len(running(r, name, version)) == n and running(r, name, version), timeout=timeout,
                    what=f"{n} replicas of {name} Running" + (f" at version {version}" if version else ""))


def test_replicas_spread_scale_and_remove(two):
    reply = two.api.call("service.create", {"name": "web", "replicas": 4, "task": {"image": "img:1"}})
    assert reply["service"]["replicas"] == 4
    tasks = wait_running(two, "web", 4)
    assert sorted(t["slot"] for t in tasks) == [1, 2, 3, 4]
    assert Counter(t["worker"] for t in tasks) == {"w1": 2, "w2": 2}  # spread
    assert all(t["name"].startswith(f"web.{t['slot']}.") for t in tasks)
    two.api.call("service.scale", {"name": "web", "replicas": 6})
    wait_running(two, "web", 6)
    two.api.call("service.scale", {"name": "web", "replicas": 3})
    wait_for(lambda: sorted(t["slot"] for t in running(two, "web")) == [1, 2, 3], what="scaled down to 3")
    [row] = two.api.call("service.ls")["services"]
    assert (row["name"], row["replicas"], row["running"]) == ("web", 3, 3)
    assert two.api.call("service.rm", {"name": "web"})["stopped"] == 3
    wait_for(lambda: not [c for c in two.runtime.list() if c.running], what="every replica stopped")
    with pytest.raises(CubeError) as e:
        two.api.call("service.ps", {"name": "web"})
    assert e.value.code == "not_found"


def test_a_stopped_replica_is_refilled(two):
    two.api.call("service.create", {"name": "api", "replicas": 2, "task": {"image": "img:1"}})
    [first, _] = wait_running(two, "api", 2)
    two.api.call("task.stop", {"id": first["id"]})
    wait_for(lambda: first["slot"] in [t["slot"] for t in running(two, "api") if t["id"] != first["id"]],
             what="slot refilled")


def test_a_rolling_update_replaces_every_slot(two):
    two.api.call("service.create", {"name": "roll", "replicas": 3, "task": {"image": "img:1", "env": {"V": "1"}},
                                    "update": {"monitor": 0.3}})
    wait_running(two, "roll", 3, version=1)
    reply = two.api.call("service.update", {"name": "roll", "task": {"env": {"V": "2"}}})
    assert reply["service"]["version"] == 2 and reply["service"]["rollout"]["state"] == "updating"
    wait_running(two, "roll", 3, version=2)
    wait_for(lambda: two.api.call("service.inspect", {"name": "roll"})["service"]["rollout"]["state"] == "completed",
             what="the update to complete")
    assert len(running(two, "roll")) == 3  # nothing duplicated
    events = [e["message"] for e in two.api.call("service.inspect", {"name": "roll"})["events"]]
    assert "update completed" in events and any("slot 1: replacing version 1 with 2" in e for e in events)


def test_a_failing_update_rolls_back(two):
    two.api.call("service.create", {"name": "bad", "replicas": 2, "task": {"image": "img:1"},
                                    "update": {"monitor": 0.3}})
    wait_running(two, "bad", 2, version=1)
    two.api.call("service.update", {"name": "bad", "task": {"image": "ghost:1"}})  # cannot be pulled
    wait_for(lambda: two.api.call("service.inspect", {"name": "bad"})["service"]["rollout"]["state"]
             == "rollback_completed", timeout=20, what="the rollback to complete")
    svc = two.api.call("service.inspect", {"name": "bad"})["service"]
    assert svc["spec"]["image"] == "img:1" and svc["version"] == 1
    tasks = wait_running(two, "bad", 2, version=1)
    assert all(t["image"] == "img:1" for t in tasks)


def test_drain_moves_replicas_and_activate_lets_work_back(two):
    two.api.call("service.create", {"name": "d", "replicas": 4, "task": {"image": "img:1"}})
    wait_running(two, "d", 4)
    plain = two.api.call("task.start", {"task": {"image": "img:1", "name": "plain"}})["task"]
    wait_for(lambda: two.api.call("task.inspect", {"id": plain["id"]})["task"]["state"] == "Running", what="plain")
    two.api.call("node.drain", {"name": "w1"})
    wait_for(lambda: len(running(two, "d")) == 4 and all(t["worker"] == "w2" for t in running(two, "d")),
             timeout=20, what="every replica on w2")
    wait_for(lambda: (lambda t: t["state"] == "Running" and t["worker"] == "w2")(
        two.api.call("task.inspect", {"id": plain["id"]})["task"]), what="the plain task moved")
    wait_for(lambda: not [c for c in two.runtime.list() if c.running and c.worker == "w1"],
             what="nothing left running on w1")
    [n1] = [n for n in two.api.call("node.ls")["nodes"] if n["name"] == "w1"]
    assert n1["availability"] == "drain"
    two.api.call("node.activate", {"name": "w1"})
    two.api.call("service.scale", {"name": "d", "replicas": 6})
    wait_for(lambda: any(t["worker"] == "w1" for t in running(two, "d")), what="new work on w1 again")


def test_changes_sent_together_are_all_applied_in_order(two):
    """An update and a scale that arrive together: the second applies to what the first left."""
    import threading
    two.api.call("service.create", {"name": "both", "replicas": 2, "task": {"image": "img:1"},
                                    "update": {"monitor": 0.2}})
    wait_running(two, "both", 2)
    other = two.manager  # a second client, so both requests are in flight at once
    from cube.wire.client import Client
    c2 = Client(f"tcp://127.0.0.1:{other.config.api_port}", timeout=5.0)
    t = threading.Thread(target=lambda: c2.call("service.scale", {"name": "both", "replicas": 3}))
    t.start()
    two.api.call("service.update", {"name": "both", "task": {"env": {"V": "2"}}})
    t.join()
    c2.close()
    svc = two.api.call("service.inspect", {"name": "both"})["service"]
    assert svc["replicas"] == 3 and svc["version"] == 2  # neither change lost the other
    wait_running(two, "both", 3, version=2, timeout=20)


def test_removing_a_service_mid_update_stops_everything_and_it_stays_gone(two):
    two.api.call("service.create", {"name": "gone", "replicas": 3, "task": {"image": "img:1"},
                                    "update": {"monitor": 5.0}})
    wait_running(two, "gone", 3)
    two.api.call("service.update", {"name": "gone", "task": {"env": {"V": "2"}}})
    two.api.call("service.rm", {"name": "gone"})
    wait_for(lambda: not [c for c in two.runtime.list() if c.running], timeout=15, what="every task stopped")
    assert two.api.call("service.ls")["services"] == []
    import time as _time
    _time.sleep(1.0)  # a plan that was under way must not bring it back
    assert two.api.call("service.ls")["services"] == []
    assert not [c for c in two.runtime.list() if c.running]


def test_draining_the_only_worker_warns(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]))
    actors.worker(manager.config, "solo", FakeRuntime())
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    wait_for(lambda: api.call("manager.ping")["workers"] == 1, what="the worker")
    reply = api.call("node.drain", {"name": "solo"})
    assert reply["node"]["availability"] == "drain" and "no other worker" in reply["warning"]
