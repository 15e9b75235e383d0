"""Fixed host ports over real ZeroMQ (Manager + Scheduler + Worker actors, FakeRuntime): a bind
the runtime refuses fails the attempt, and the next one goes to another worker."""
from __future__ import annotations

from cube.runtime.base import ContainerSpec
from cube.runtime.fake import FakeRuntime
from tests.actors.helpers import wait_for


def test_a_refused_fixed_port_moves_the_task_to_another_worker(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]), grace=2.0)
    busy = FakeRuntime()
    busy.run(ContainerSpec(task_id="not-cube", attempt=1, name="squatter", image="x", ports=["18081:80/tcp"]))
    actors.worker(manager.config, "w1", busy)
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    wait_for(lambda: [n["name"] for n in actors.client(sched_ep).call("sched.nodes")["nodes"]] == ["w1"],
             what="w1's metrics at the scheduler")

    api.call("task.start", {"task": {"id": "pinned", "image": "x", "ports": ["18081:80"],
                                     "restart": "on-failure", "max_restarts": 5}})

    def failed_on_w1():
        t = api.call("task.inspect", {"id": "pinned"})["task"]
        return t if t["state"] == "Failed" and "w1" in t["port_conflicts"] else None
    failed = wait_for(failed_on_w1, what="the start on w1 to fail on its taken port")
    assert "host port 18081/tcp is taken" in failed["error"]

    actors.worker(manager.config, "w2", FakeRuntime())

    def running():
        t = api.call("task.inspect", {"id": "pinned"})["task"]
        return t if t["state"] == "Running" else None
    t = wait_for(running, timeout=15, what="the task to run on w2")
    assert t["worker"] == "w2" and t["host_ports"] == {"80/tcp": 18081} and t["port_conflicts"] == {}
