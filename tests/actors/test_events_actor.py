"""The event log over real ZeroMQ: a Manager, a Scheduler and a real Worker on FakeRuntime
(insecure). Every task, service and node change is one numbered, stored event; `events.since`
replays them in pages; the PUB socket carries them live with a heartbeat; numbers continue across
a manager restart; `cube events` (a real process) replays, follows and reports a lost manager."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import zmq

from cube.runtime.fake import FakeRuntime
from cube.wire.envelope import decode
from tests.actors.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cluster(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    metrics_port = int(metrics_ep.rsplit(":", 1)[1])
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=metrics_port, grace=2.0)
    worker = actors.worker(manager.config, "w1", FakeRuntime())

    class Cluster:
        pass
    c = Cluster()
    c.manager, c.worker, c.actors, c.sched_ep, c.metrics_port = manager, worker, actors, sched_ep, metrics_port
    c.api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    wait_for(lambda: c.api.call("manager.ping")["workers"] == 1, what="the worker to register")
    return c


def replay(api, after: int = 0, limit: int = 1000, **filters) -> list[dict]:
    out: list[dict] = []
    while True:
        page = api.call("events.since", {"seq": after, "limit": limit, **filters})
        out += page["events"]
        after = page["next"]
        if not page["more"]:
            return out


def start(c, n: int, prefix: str = "t") -> list[str]:
    ids = [c.api.call("task.start", {"task": {"name": f"{prefix}{i}", "image": "img:1"}})["task"]["id"]
           for i in range(n)]
    for i in ids:
        wait_for(lambda i=i: c.api.call("task.inspect", {"id": i})["task"]["state"] == "Running",
                 what=f"task {i[:8]} Running")
    return ids


def cli(c, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(c, *args), capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          stdin=subprocess.DEVNULL)


def cli_argv(c, *args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "bin", "cube"), "events", *args,
            "--manager", f"127.0.0.1:{c.manager.config.api_port}"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBE_")}
    return {**env, "HOME": "/nonexistent"}  # an insecure manager: no credentials file at all


def test_every_change_is_one_numbered_stored_event(cluster):
    c = cluster
    ids = start(c, 3)
    c.api.call("node.drain", {"name": "w1"})
    c.api.call("node.activate", {"name": "w1"})
    c.api.call("service.create", {"name": "web", "replicas": 1, "task": {"image": "img:1"}})
    wait_for(lambda: any(e.get("service") == "web" and e.get("state") == "Running" for e in replay(c.api)),
             what="the service's task Running")
    events = replay(c.api, limit=2)  # pages of 2
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # every number once, in order, none missing
    kinds = {(e["type"], e.get("node") or e.get("service") or e.get("name"), e.get("action") or e.get("message")
              or e.get("state")) for e in events}
    assert {("node", "w1", "joined"), ("node", "w1", "drained"), ("node", "w1", "activated"),
            ("service", "web", "created with 1 replicas")} <= kinds
    for i in ids:
        mine = [e for e in events if e.get("task_id") == i]
        assert [e["state"] for e in mine][-1] == "Running" and all(e["name"] for e in mine)
    # filters, done by the manager
    assert {e["type"] for e in replay(c.api, type=["node"])} == {"node"}
    assert {e["task_id"] for e in replay(c.api, task=["t1"])} == {ids[1]}
    assert {e["type"] for e in replay(c.api, service=["web"])} == {"task", "service"}
    # a time: the events from then on
    middle = events[len(events) // 2]
    page = c.api.call("events.since", {"time": middle["time"]})
    assert page["events"][0]["time"] >= middle["time"] and page["events"][-1]["seq"] == seqs[-1]
    # from now: nothing, and where now is
    now = c.api.call("events.since", {})
    assert now["events"] == [] and now["next"] == now["last"] == seqs[-1]


def test_live_events_and_heartbeats_on_the_pub_socket(cluster, actors):
    c = cluster
    sub = actors.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{c.manager.config.events_port}")
    seen: list = []

    def heard(kind: str):
        while sub.poll(100):
            env = decode(sub.recv_multipart()[-1])
            seen.append(env)
        return [e for e in seen if e.type == kind]
    wait_for(lambda: heard("events.heartbeat"), what="a heartbeat")
    (t,) = start(c, 1, "live")
    wait_for(lambda: [e for e in heard("task.event") if e.body["task_id"] == t and e.body["state"] == "Running"],
             what="the Running event live")
    live = [e.body for e in seen if e.type == "task.event" and e.body["task_id"] == t]
    stored = [e for e in replay(c.api) if e.get("task_id") == t]
    assert [e["seq"] for e in live] == [e["seq"] for e in stored]
    assert live == stored and live[0]["name"] == "live0"  # a live copy is the stored event
    wait_for(lambda: heard("events.heartbeat")[-1].body["seq"] >= stored[-1]["seq"], what="a heartbeat with the seq")


def test_numbers_continue_across_a_manager_restart(cluster, actors):
    c = cluster
    start(c, 2, "before")
    before = replay(c.api)
    config = c.manager.config
    actors.stop(c.manager)
    m2 = actors.manager(store_endpoint=config.store_endpoint, scheduler_endpoint=c.sched_ep,
                        metrics_port=c.metrics_port, grace=2.0, api_port=config.api_port,
                        worker_port=config.worker_port, events_port=config.events_port)
    api2 = actors.client(f"tcp://127.0.0.1:{m2.config.api_port}")
    wait_for(lambda: api2.call("manager.ping")["workers"] == 1, what="the worker back")
    c.api = api2
    start(c, 2, "after")
    after = replay(api2)
    seqs = [e["seq"] for e in after]
    assert after[:len(before)] == before and seqs == list(range(1, len(seqs) + 1))
    back = [e for e in after[len(before):] if e["type"] == "node"]
    assert back and back[0]["action"] == "back" and "restarted" in back[0]["reason"]


def test_cube_events_replays_follows_and_filters(cluster):
    c = cluster
    ids = start(c, 2, "cli")
    stored = replay(c.api)
    out = cli(c, "--since", "0", "--json", "--count", str(len(stored)))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [e["seq"] for e in lines] == [e["seq"] for e in stored]
    assert {e["name"] for e in lines if e["type"] == "task"} == {"cli0", "cli1"}
    nodes = cli(c, "--since", "0", "--filter", "type=node", "--timeout", "1")
    assert nodes.returncode == 0 and [x.split()[2:5] for x in nodes.stdout.splitlines()] == [["node", "w1", "joined"]]
    one = cli(c, "--since", "0", "--json", "--filter", f"task={ids[1][:8]}", "--timeout", "1")
    assert {json.loads(x)["task_id"] for x in one.stdout.splitlines()} == {ids[1]}
    # Following: replay, then what happens next, each once.
    follow = subprocess.Popen(cli_argv(c, "--since", "0", "--json", "--count", str(len(stored) + 3)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                              stdin=subprocess.DEVNULL)
    try:
        start(c, 1, "later")  # Pending, Scheduled, Running: 3 more
        got, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    seqs = [json.loads(x)["seq"] for x in got.splitlines()]
    assert seqs == list(range(1, len(stored) + 4))


def test_cube_events_reports_a_manager_that_goes_away(cluster, actors):
    c = cluster
    follow = subprocess.Popen(cli_argv(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(), stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # following (nothing to wait for: it prints nothing until something happens)
        assert follow.poll() is None, follow.communicate()
        actors.stop(c.manager)
        _, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 1 and "lost the manager" in err, err


def test_cube_events_without_a_manager_exits_1(cluster):
    c = cluster
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "cube"), "events", "--manager", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30, env=cli_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "cannot reach the manager" in out.stderr
    bad = cli(c, "--since", "0", "--filter", "colour=red")
    assert bad.returncode == 2 and "unknown key" in bad.stderr


def test_a_lost_worker_is_one_node_event_before_its_tasks_move_and_rm_removes_it(cluster, actors):
    c = cluster
    ids = start(c, 2, "lost")
    actors.stop(c.worker)  # silent: lost after the grace period (2 s)
    wait_for(lambda: any(e["type"] == "node" and e["action"] == "lost" for e in replay(c.api)), timeout=15,
             what="the node's lost event")
    wait_for(lambda: all(e["state"] != "Running" for e in replay(c.api, task=ids)[-2:]), timeout=15,
             what="its tasks to move")
    events = replay(c.api)
    (lost,) = [e for e in events if e["type"] == "node" and e["action"] == "lost"]
    assert lost["node"] == "w1" and "silent" in lost["reason"]
    moved = [e for e in events if e.get("task_id") in ids and e["seq"] > lost["seq"]]
    assert moved and all(e["state"] != "Running" for e in moved[:2])
    c.api.call("node.rm", {"name": "w1"})
    wait_for(lambda: replay(c.api, type=["node"])[-1]["action"] == "removed", what="the removed event")


def test_a_since_beyond_the_latest_event_is_refused_with_the_latest_number(cluster):
    c = cluster
    last = c.api.call("events.since", {})["last"]
    from cube.wire.errors import CubeError
    with pytest.raises(CubeError) as refused:  # far beyond: events of the cluster may still come meanwhile
        c.api.call("events.since", {"seq": last + 10_000})
    assert refused.value.code == "bad_request" and "the latest event is #" in refused.value.message
    assert int(refused.value.message.rsplit("#", 1)[1].split()[0].strip(".,;:)")) >= last
    out = cli(c, "--since", "999999", "--timeout", "1")
    assert out.returncode == 2 and "the latest event is #" in out.stderr, out.stderr
