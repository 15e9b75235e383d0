"""The Manager over real ZeroMQ with a MemoryStore and a real Scheduler actor; clients on the api
port, and (for the worker protocol) a fake worker speaking raw frames on a DEALER."""
from __future__ import annotations

import time

import pytest

from cube.wire.errors import CubeError
from cube.store.memory import MemoryStore
from tests.actors.helpers import FakeNodes, envelope, recv_env, wait_for


@pytest.fixture
def rig(actors, request):
    """scheduler + manager; `rig.api` is a Client on the manager's api port. The fake workers here do
    not heartbeat on their own, so the grace period is long unless a test asks (mark `grace`)."""
    mark = request.node.get_closest_marker("grace")
    grace = mark.args[0] if mark else 30.0
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    metrics_port = int(metrics_ep.rsplit(":", 1)[1])
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=metrics_port, grace=grace)
    nodes = FakeNodes(metrics_ep)

    class Rig:
        pass
    r = Rig()
    r.manager, r.scheduler, r.nodes, r.actors = manager, sched, nodes, actors
    r.config = manager.config
    r.api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    r.workers_ep = f"tcp://127.0.0.1:{manager.config.worker_port}"
    r.sched = actors.client(sched_ep)
    wait_for(lambda: r.api.call("manager.ping"), what="manager up")
    yield r
    nodes.close()


def call_err(client, msg_type, body) -> CubeError:
    with pytest.raises(CubeError) as e:
        client.call(msg_type, body)
    return e.value


def task_of(rig, ref) -> dict:
    return rig.api.call("task.inspect", {"id": ref})["task"]


# ---- client API, no workers ---------------------------------------------------------------------

def test_ping(rig):
    pong = rig.api.call("manager.ping")
    assert pong["name"] == "manager" and pong["tasks"] == 0 and pong["workers"] == 0


def test_start_returns_the_pending_task_and_a_replay_changes_nothing(rig):
    spec = {"id": "11111111-aaaa", "name": "web", "image": "nginx", "memory": "64m", "ports": [80]}
    first = rig.api.call("task.start", {"task": spec})["task"]
    assert first["id"] == "11111111-aaaa" and first["state"] == "Pending" and first["desired"] == "running"
    assert first["memory"] == 64 << 20 and first["ports"] == ["80/tcp"]
    replay = rig.api.call("task.start", {"task": spec})
    assert replay["existing"] is True and replay["task"]["id"] == first["id"]
    assert replay["task"]["created_at"] == first["created_at"]
    assert [t["id"] for t in rig.api.call("task.ls")["tasks"]] == [first["id"]]
    assert len(rig.api.call("task.inspect", {"id": first["id"]})["events"]) == 1


# Regression: a replayed book-style spec ('ID', or wrapped in 'Task') used to overwrite the task.
@pytest.mark.parametrize("spec", [
    {"ID": "22222222-bbbb", "Name": "web", "Image": "nginx"},
    {"Task": {"ID": "22222222-bbbb", "Name": "web", "Image": "nginx"}},
])
def test_replayed_book_style_start_changes_nothing(rig, spec):
    first = rig.api.call("task.start", {"task": spec})["task"]
    rig.api.call("task.stop", {"id": first["id"]})  # any change the replay must not undo
    e = call_err(rig.api, "task.start", {"task": spec})  # a stopped task starts again only by restart
    assert e.code == "conflict" and "cube task restart" in e.message
    again = rig.api.call("task.inspect", {"id": first["id"]})["task"]
    assert again["state"] == "Completed" and again["created_at"] == first["created_at"]


def test_ls_and_inspect(rig):
    a = rig.api.call("task.start", {"task": {"name": "a", "image": "img"}})["task"]
    b = rig.api.call("task.start", {"task": {"name": "b", "image": "img"}})["task"]
    tasks = rig.api.call("task.ls")["tasks"]
    assert [t["id"] for t in tasks] == [a["id"], b["id"]]
    assert {"id", "name", "state", "worker", "image", "container_id", "host_ports",
            "restart_count"} <= set(tasks[0])
    info = rig.api.call("task.inspect", {"id": "b"})  # by name
    assert info["task"]["id"] == b["id"]
    assert [(e["state"], e["reason"]) for e in info["events"]] == [("Pending", "submitted")]
    assert rig.api.call("task.inspect", {"id": a["id"][:8]})["task"]["id"] == a["id"]  # by prefix


def test_pending_task_gets_a_reason_when_nothing_fits(rig):
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    reason = wait_for(lambda: task_of(rig, t["id"])["reason"] not in ("", "submitted")
                      and task_of(rig, t["id"])["reason"], what="a reason")
    assert task_of(rig, t["id"])["state"] == "Pending" and reason


def test_stop_of_a_pending_task_completes_it(rig):
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    stopped = rig.api.call("task.stop", {"id": t["id"]})["task"]
    assert stopped["state"] == "Completed" and stopped["desired"] == "stopped" and stopped["finished_at"] > 0
    again = rig.api.call("task.stop", {"id": t["id"]})["task"]  # idempotent
    assert again["updated_at"] == stopped["updated_at"]
    events = rig.api.call("task.inspect", {"id": t["id"]})["events"]
    assert [e["state"] for e in events] == ["Pending", "Completed"]
    time.sleep(0.3)
    assert task_of(rig, t["id"])["state"] == "Completed"  # never placed afterwards


@pytest.mark.parametrize("spec,field", [
    ({"name": "x"}, "image"),
    ({"image": "x", "ports": ["http"]}, "ports"),
    ({"image": "x", "cpu": -2}, "cpu"),
    ({"image": "x", "memory": "lots"}, "memory"),
    ({"image": "x", "restart": "sometimes"}, "restart"),
    ({"image": "x", "colour": "red"}, "colour"),
])
def test_bad_spec_is_bad_request_naming_the_field(rig, spec, field):
    e = call_err(rig.api, "task.start", {"task": spec})
    assert e.code == "bad_request" and field in e.message
    assert rig.api.call("task.ls")["tasks"] == []


# Regression: these used to escape task_from_spec as OverflowError/IndexError -> `internal`.
@pytest.mark.parametrize("spec,field", [
    ({"image": "x", "memory": "1e400"}, "memory"),
    ({"image": "x", "memory": "20000000t"}, "memory"),  # > 2**64 bytes: cannot even be stored
    ({"image": "x", "health": {"path": "/h", "port": []}}, "health"),
])
def test_hostile_spec_is_bad_request(rig, spec, field):
    e = call_err(rig.api, "task.start", {"task": spec})
    assert e.code == "bad_request" and field in e.message


def test_unknown_and_ambiguous_ids(rig):
    for msg_type in ("task.stop", "task.inspect", "task.logs"):
        e = call_err(rig.api, msg_type, {"id": "no-such-task"})
        assert e.code == "not_found" and "no-such-task" in e.message
    rig.api.call("task.start", {"task": {"id": "abcd-0001", "image": "x"}})
    rig.api.call("task.start", {"task": {"id": "abcd-0002", "image": "x"}})
    assert call_err(rig.api, "task.inspect", {"id": "abcd"}).code == "conflict"
    # a Pending task has no container: logs say so instead of hanging
    assert call_err(rig.api, "task.logs", {"id": "abcd-0001"}).code == "not_found"


def test_api_refuses_worker_messages(rig):
    e = call_err(rig.api, "worker.hello", {"name": "w", "address": "a", "cpus": 1, "memory": 1,
                                          "disk": 1, "tasks": []})
    assert e.code == "unknown_type"


def test_node_ls_without_workers(rig):
    assert rig.api.call("node.ls") == {"nodes": [], "continue": ""}


def test_tasks_survive_a_manager_restart(rig, actors):
    """A new Manager on the same store reloads every task and its event sequence."""
    t = rig.api.call("task.start", {"task": {"name": "keep", "image": "img"}})["task"]
    rig.api.call("task.stop", {"id": t["id"]})
    actors.stop(rig.manager)
    m2 = actors.manager(store_endpoint=rig.config.store_endpoint, scheduler_endpoint=rig.config.scheduler_endpoint)
    api2 = actors.client(f"tcp://127.0.0.1:{m2.config.api_port}")
    after = api2.call("task.inspect", {"id": t["id"]})
    assert after["task"]["state"] == "Completed" and len(after["events"]) == 2
    t2 = api2.call("task.start", {"task": {"image": "img"}})["task"]
    assert [e["seq"] for e in api2.call("task.inspect", {"id": t2["id"]})["events"]] == [3]


# ---- the worker protocol, with a fake worker ----------------------------------------------------------

class FakeWorker:
    """A worker made of a raw DEALER (identity = name): says hello, acks commands, reports status."""

    def __init__(self, rig, name="fw", cpus=2.0):
        self.rig, self.name = rig, name
        self.sock = rig.actors.dealer(rig.workers_ep, identity=name.encode())
        rig.nodes.set(name, cpus=cpus)  # its metrics reach the scheduler

    def send(self, msg_type, body, **kw):
        env = envelope(msg_type, body, sender=self.name, **kw)
        self.sock.send(env.encode())
        return env

    def request(self, msg_type, body, timeout=3.0):
        env = self.send(msg_type, body)
        deadline = time.monotonic() + timeout
        while True:
            m = recv_env(self.sock, max(deadline - time.monotonic(), 0.01))
            if m.re == env.id:
                return m
            self.inbox.append(m)

    inbox: list

    def hello(self, tasks=()):
        self.inbox = getattr(self, "inbox", [])
        return self.request("worker.hello", {"name": self.name, "address": "127.0.0.1", "cpus": 2.0,
                                             "memory": 1 << 30, "disk": 1 << 34, "tasks": list(tasks)})

    def next_command(self, msg_type=None, timeout=5.0):
        """The next command from the manager (skipping other types when msg_type is given)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.inbox:
                m = self.inbox.pop(0)
            else:
                m = recv_env(self.sock, max(deadline - time.monotonic(), 0.01))
            if msg_type is None or m.type == msg_type:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no {msg_type} within {timeout}s")

    def ack(self, cmd):
        self.sock.send(cmd.reply({}, self.name).encode())

    def status(self, task_id, attempt, state, **kw):
        return self.request("task.status", {"task_id": task_id, "attempt": attempt, "state": state, **kw})

    def heartbeat(self):
        return self.request("worker.heartbeat", {"name": self.name})


@pytest.fixture
def fake_worker(rig):
    w = FakeWorker(rig)
    reply = w.hello()
    assert reply.type == "ok", reply.body
    assert reply.body["metrics"] == f"tcp://127.0.0.1:{rig.config.metrics_port}"
    assert reply.body["heartbeat"] == rig.config.heartbeat_interval and reply.body["grace"] == rig.config.grace
    wait_for(lambda: "fw" in {n["name"] for n in rig.sched.call("sched.nodes")["nodes"]}, what="fw metrics")
    return w


def run_on_fake_worker(rig, w, spec=None):
    """Start a task, take the worker.run, ack it and report it running."""
    t = rig.api.call("task.start", {"task": spec or {"image": "img", "ports": [80]}})["task"]
    cmd = w.next_command("worker.run")
    assert cmd.body["spec"]["task_id"] == t["id"] and cmd.body["attempt"] == 1
    w.ack(cmd)
    assert w.status(t["id"], 1, "running", container_id="c1", host_ports={"80/tcp": 31000}).type == "ok"
    wait_for(lambda: task_of(rig, t["id"])["state"] == "Running", what="Running")
    return t


def test_hello_identity_must_match_the_name(rig):
    sock = rig.actors.dealer(rig.workers_ep, identity=b"someone-else")
    env = envelope("worker.hello", {"name": "fw", "address": "a", "cpus": 1, "memory": 1, "disk": 1, "tasks": []})
    sock.send(env.encode())
    reply = recv_env(sock)
    assert reply.type == "error" and reply.body["code"] == "bad_request" and reply.re == env.id


def test_heartbeat_from_a_stranger_says_say_hello(rig):
    w = FakeWorker(rig, "stranger")
    w.inbox = []
    reply = w.heartbeat()
    assert reply.type == "error" and reply.body["code"] == "not_found"


def test_placement_run_ack_and_running(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    task = task_of(rig, t["id"])
    assert task["worker"] == "fw" and task["attempt"] == 1 and task["container_id"] == "c1"
    assert task["host_ports"] == {"80/tcp": 31000}
    states = [e["state"] for e in rig.api.call("task.inspect", {"id": t["id"]})["events"]]
    assert states == ["Pending", "Scheduled", "Running"]
    nodes = rig.api.call("node.ls")["nodes"]
    assert [(n["name"], n["state"], n["tasks"]) for n in nodes] == [("fw", "ready", 1)]
    assert nodes[0]["metrics"]["name"] == "fw"


def test_an_unacknowledged_command_is_resent_with_the_same_id(rig, fake_worker):
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    first = fake_worker.next_command("worker.run")
    again = fake_worker.next_command("worker.run", timeout=3 * rig.config.command_retry + 1)
    assert again.id == first.id and again.body == first.body
    fake_worker.ack(again)
    fake_worker.ack(first)  # a late duplicate ack is harmless
    time.sleep(2 * rig.config.command_retry)
    leftovers = [m for m in fake_worker.inbox if m.type == "worker.run"]
    while fake_worker.sock.poll(0):
        leftovers.append(recv_env(fake_worker.sock))
    assert len(leftovers) <= 1  # at most one re-send was already in flight
    assert task_of(rig, t["id"])["state"] == "Scheduled"


def test_duplicate_status_reports_change_nothing(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    before = rig.api.call("task.inspect", {"id": t["id"]})
    fake_worker.status(t["id"], 1, "running", container_id="c1", host_ports={"80/tcp": 31000})
    after = rig.api.call("task.inspect", {"id": t["id"]})
    assert after == before


def test_stale_status_is_answered_with_a_stop(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    reply = fake_worker.status(t["id"], 0, "running", container_id="old")
    assert reply.body == {"ignored": "stale"}
    stop = fake_worker.next_command("worker.stop")
    assert stop.body["task_id"] == t["id"] and stop.body["attempt"] == 0
    assert task_of(rig, t["id"])["container_id"] == "c1"


def test_exit_then_restart_with_a_new_attempt(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker, {"image": "img", "restart": {"name": "on-failure", "backoff": 0.1}})
    fake_worker.status(t["id"], 1, "exited", container_id="c1", exit_code=3)
    stop = fake_worker.next_command("worker.stop")  # remove the dead container
    assert stop.body["attempt"] == 1
    fake_worker.ack(stop)
    run = fake_worker.next_command("worker.run")
    assert run.body["attempt"] == 2
    task = task_of(rig, t["id"])
    assert task["state"] == "Scheduled" and task["restart_count"] == 1 and task["exit_code"] is None


def test_stop_of_a_running_task(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    assert rig.api.call("task.stop", {"id": t["id"]})["task"]["desired"] == "stopped"
    stop = fake_worker.next_command("worker.stop")
    assert stop.body == {"task_id": t["id"], "attempt": 1, "reason": "stop requested"}
    fake_worker.ack(stop)
    fake_worker.status(t["id"], 1, "stopped")
    assert task_of(rig, t["id"])["state"] == "Completed"


@pytest.mark.grace(1.0)
def test_a_silent_worker_is_lost_and_its_task_fails(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker, {"image": "img", "restart": "no"})
    rig.nodes.silence("fw")
    task = wait_for(lambda: (x := task_of(rig, t["id"]))["state"] == "Failed" and x,
                    timeout=rig.config.grace + 3, what="the task to fail with its worker")
    assert "lost" in task["reason"]
    assert [n["state"] for n in rig.api.call("node.ls")["nodes"]] == ["lost"]
    reply = fake_worker.heartbeat()  # it must say hello again
    assert reply.type == "error" and reply.body["code"] == "not_found"


def test_reconcile_adopts_and_stops(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    reply = fake_worker.hello(tasks=[
        {"task_id": t["id"], "attempt": 1, "state": "running", "container_id": "c1"},
        {"task_id": "ghost", "attempt": 1, "state": "running", "container_id": "cg"}])
    assert reply.type == "ok"
    stop = fake_worker.next_command("worker.stop")
    assert stop.body["task_id"] == "ghost"
    assert task_of(rig, t["id"])["state"] == "Running"


# Regression: a stop cancelled by the worker's hello, with no container reported, used to leave
# the task Running (desired stopped) forever.
def test_a_stopped_task_whose_container_vanished_while_apart_completes(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    rig.api.call("task.stop", {"id": t["id"]})
    fake_worker.next_command("worker.stop")  # lost: the worker restarts before it acts on it
    fake_worker.hello(tasks=[])  # ... and comes back with no container at all
    wait_for(lambda: task_of(rig, t["id"])["state"] == "Completed", timeout=5, what="Completed")


# Regression: a 'running' report for a Completed task used to be ignored, leaving the container.
def test_a_container_running_for_a_completed_task_is_stopped(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    rig.api.call("task.stop", {"id": t["id"]})
    fake_worker.ack(fake_worker.next_command("worker.stop"))
    fake_worker.status(t["id"], 1, "stopped")
    assert task_of(rig, t["id"])["state"] == "Completed"
    fake_worker.status(t["id"], 1, "running", container_id="c1-again")  # it came back
    stop = fake_worker.next_command("worker.stop", timeout=2)
    assert stop.body["task_id"] == t["id"]


# Regression: task.status used to be attributed to the envelope's self-declared 'from'.
def test_status_is_attributed_to_the_connection_not_the_from_field(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    intruder = rig.actors.dealer(rig.workers_ep, identity=b"intruder")
    env = envelope("task.status", {"task_id": t["id"], "attempt": 1, "state": "exited", "exit_code": 1},
                   sender="fw")
    intruder.send(env.encode())
    recv_env(intruder)
    assert task_of(rig, t["id"])["state"] == "Running"


# Regression: the Manager used to never send sched.release, so a task that ended before its
# worker's next metrics sample listed it kept its reservation for 30 s.
def test_capacity_of_a_stopped_task_is_released(rig):
    w = FakeWorker(rig, "small", cpus=1.0)  # its samples never list the task (it ended before one did)
    assert w.hello().type == "ok"
    wait_for(lambda: "small" in {n["name"] for n in rig.sched.call("sched.nodes")["nodes"]}, what="metrics")
    a = run_on_fake_worker(rig, w, {"image": "img", "cpu": 1})
    rig.api.call("task.stop", {"id": a["id"]})
    w.ack(w.next_command("worker.stop"))
    w.status(a["id"], 1, "stopped")
    assert task_of(rig, a["id"])["state"] == "Completed"
    b = rig.api.call("task.start", {"task": {"image": "img", "cpu": 1}})["task"]
    wait_for(lambda: task_of(rig, b["id"])["state"] == "Scheduled", timeout=2.5, what="b placed")


def test_task_events_are_published(rig, actors):
    import zmq
    sub = actors.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"task.event")
    sub.connect(f"tcp://127.0.0.1:{rig.config.events_port}")
    time.sleep(0.2)  # PUB/SUB slow joiner: let the subscription reach the manager
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    rig.api.call("task.stop", {"id": t["id"]})
    got = []
    while len(got) < 2:
        assert sub.poll(3000), f"only {got}"
        topic, frame = sub.recv_multipart()
        from cube.wire.envelope import decode
        env = decode(frame)
        assert topic == f"task.event.{env.body['state']}".encode() and env.type == "task.event"
        got.append((env.body["task_id"], env.body["state"]))
    assert got == [(t["id"], "Pending"), (t["id"], "Completed")]


def test_a_subscriber_to_one_state_gets_only_those_events(rig, actors):
    """A task event's topic names its state: "task.event.Completed" is filtered at the publisher."""
    import zmq
    from cube.wire.envelope import decode
    sub = actors.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"task.event.Completed")
    sub.connect(f"tcp://127.0.0.1:{rig.config.events_port}")
    time.sleep(0.2)  # PUB/SUB slow joiner
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    rig.api.call("task.stop", {"id": t["id"]})
    assert sub.poll(3000), "no Completed event"
    topic, frame = sub.recv_multipart()
    assert topic == b"task.event.Completed" and decode(frame).body["task_id"] == t["id"]
    assert not sub.poll(300), "only the Completed event: its Pending one was filtered out"


# Regression: an id over 64 chars used to be accepted, then refused by every later message, and its
# refused placement blocked the whole queue.
def test_an_over_long_id_neither_gets_in_nor_blocks_other_tasks(rig, fake_worker):
    try:
        rig.api.call("task.start", {"task": {"id": "L" * 80, "image": "img"}})
    except CubeError as e:  # refusing it is one fix
        assert e.code == "bad_request" and "id" in e.message
    normal = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    cmd = fake_worker.next_command("worker.run", timeout=3)
    assert cmd.body["spec"]["task_id"] == normal["id"]


# Regression: unvalidated ids ('abcd/x') used to mix their events into another task's.
def test_inspect_lists_only_the_tasks_own_events(rig):
    rig.api.call("task.start", {"task": {"id": "abcd", "image": "img"}})
    try:
        rig.api.call("task.start", {"task": {"id": "abcd/x", "image": "img"}})
    except CubeError as e:  # refusing such an id is the other fix
        assert e.code == "bad_request"
    events = rig.api.call("task.inspect", {"id": "abcd"})["events"]
    assert [e["task_id"] for e in events] == ["abcd"]


# Regression (issue 14, D1): a 'removed' or 'exited' report for a task that had already ended was
# dropped, so a worker still holding that attempt's slot was never told to let it go.
@pytest.mark.parametrize("state", ["removed", "exited"])
def test_an_end_report_for_an_ended_task_is_answered_with_a_stop(rig, fake_worker, state):
    t = run_on_fake_worker(rig, fake_worker)
    rig.api.call("task.stop", {"id": t["id"]})
    fake_worker.ack(fake_worker.next_command("worker.stop"))
    fake_worker.status(t["id"], 1, "stopped")
    assert task_of(rig, t["id"])["state"] == "Completed"
    fake_worker.status(t["id"], 1, state, container_id="c1", exit_code=143)
    stop = fake_worker.next_command("worker.stop", timeout=2)
    assert (stop.body["task_id"], stop.body["attempt"]) == (t["id"], 1)
    assert task_of(rig, t["id"])["state"] == "Completed"


# Regression (issue 14, D2): a hello delayed in transit listed the worker's containers as they were
# before new tasks started there; reconciliation took it as current and failed those tasks as
# "container vanished". Reports now carry the worker's clock, and a snapshot older than what
# the manager applied for a task cannot undo it.
def test_a_stale_hello_does_not_fail_tasks_started_after_its_snapshot(rig, fake_worker):
    boot = 1_000
    t = rig.api.call("task.start", {"task": {"image": "img", "restart": "no"}})["task"]
    fake_worker.ack(fake_worker.next_command("worker.run"))
    fake_worker.status(t["id"], 1, "running", container_id="c1", clock=[boot, 5])
    wait_for(lambda: task_of(rig, t["id"])["state"] == "Running", what="Running")
    assert task_of(rig, t["id"])["report_clock"] == [boot, 5]
    # a hello stamped before the container started ([boot, 3]) arrives only now
    reply = fake_worker.request("worker.hello", {"name": "fw", "address": "127.0.0.1", "cpus": 2.0,
                                                 "memory": 1 << 30, "disk": 1 << 34, "tasks": [],
                                                 "clock": [boot, 3]})
    assert reply.type == "ok"
    time.sleep(0.5)
    task = task_of(rig, t["id"])
    assert (task["state"], task["attempt"]) == ("Running", 1), task["reason"]
    # a newer snapshot without the container is believed
    fake_worker.request("worker.hello", {"name": "fw", "address": "127.0.0.1", "cpus": 2.0,
                                         "memory": 1 << 30, "disk": 1 << 34, "tasks": [], "clock": [boot, 9]})
    wait_for(lambda: task_of(rig, t["id"])["state"] == "Failed", what="Failed")
    assert "vanished" in task_of(rig, t["id"])["reason"]


def test_a_status_older_than_one_applied_is_ignored(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker, {"image": "img", "restart": "no"})
    fake_worker.status(t["id"], 1, "running", container_id="c2", clock=[7, 10])
    assert task_of(rig, t["id"])["container_id"] == "c2"
    late = fake_worker.status(t["id"], 1, "exited", container_id="c2", exit_code=1, clock=[7, 8])
    assert late.body == {"ignored": "older than a report already applied"}
    assert task_of(rig, t["id"])["state"] == "Running"


# Regression: a status for an attempt never placed (forged, or corrupt) was answered with a stop
# for that attempt, which the worker applies to every attempt below it: the running one too.
def test_a_status_for_an_attempt_never_placed_changes_nothing(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker)
    reply = fake_worker.status(t["id"], 7, "exited", container_id="forged", exit_code=1)
    assert "never placed" in reply.body["ignored"]
    time.sleep(3 * rig.config.command_retry)
    while fake_worker.sock.poll(0):
        fake_worker.inbox.append(recv_env(fake_worker.sock))
    assert not [m for m in fake_worker.inbox if m.type == "worker.stop"]
    assert task_of(rig, t["id"])["state"] == "Running"


# A hello stamped before the one that made the worker ready is a late copy: it must not
# re-register the worker (it could revive one declared lost, with an old address or pid).
def test_a_hello_older_than_the_accepted_one_is_refused(rig):
    w = FakeWorker(rig, "clocked")
    w.inbox = []
    body = {"name": "clocked", "address": "127.0.0.1", "cpus": 2.0, "memory": 1 << 30, "disk": 1 << 34,
            "tasks": [], "clock": [5, 10]}
    assert w.request("worker.hello", body).type == "ok"
    late = w.request("worker.hello", {**body, "address": "10.9.9.9", "clock": [5, 4]})
    assert late.type == "error" and late.body["code"] == "conflict" and "stale hello" in late.body["message"]
    [node] = [n for n in rig.api.call("node.ls")["nodes"] if n["name"] == "clocked"]
    assert node["address"] == "127.0.0.1"
    assert w.request("worker.hello", {**body, "clock": [6, 1]}).type == "ok"  # a restarted worker: later boot


class FreezingStore(MemoryStore):
    """A backend whose next batch, once armed, is applied only after its client stopped waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze_next = 0.0

    def batch(self, ops, term: int = 0) -> None:
        pause, self.freeze_next = self.freeze_next, 0.0
        if pause:
            time.sleep(pause)  # frozen in the middle of the write
        super().batch(ops, term)


# Regression (review of issue 14): a task's end whose write got no answer, adopted once the Store
# answered, never sent the follow-up stop, so the ended attempt's container stayed on its worker.
def test_an_end_adopted_after_a_write_in_doubt_still_stops_the_old_container(actors):
    backend = FreezingStore()
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(store=backend, scheduler_endpoint=sched_ep,
                             metrics_port=int(metrics_ep.rsplit(":", 1)[1]), grace=30.0)
    nodes = FakeNodes(metrics_ep)
    try:
        class Rig:
            pass
        rig = Rig()
        rig.actors, rig.nodes, rig.config = actors, nodes, manager.config
        rig.api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
        rig.workers_ep = f"tcp://127.0.0.1:{manager.config.worker_port}"
        w = FakeWorker(rig)
        assert w.hello().type == "ok"
        t = run_on_fake_worker(rig, w, {"image": "img", "restart": "no"})
        backend.freeze_next = 3.0  # longer than the manager's 2 s wait for the Store
        reply = w.request("task.status", {"task_id": t["id"], "attempt": 1, "state": "exited",
                                          "container_id": "c1", "exit_code": 3}, timeout=5.0)
        assert reply.type == "error" and reply.body["code"] == "in_doubt"
        stop = w.next_command("worker.stop", timeout=8.0)  # after the doubt is resolved: adopted
        assert (stop.body["task_id"], stop.body["attempt"]) == (t["id"], 1)
        assert task_of(rig, t["id"])["state"] == "Failed"
    finally:
        nodes.close()


def test_finished_tasks_and_their_events_are_pruned_after_the_retention_period(actors):
    backend = MemoryStore()
    sched, sched_ep, _ = actors.scheduler("roundrobin")
    manager = actors.manager(store=backend, scheduler_endpoint=sched_ep, retention=1.0)
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    done = api.call("task.start", {"task": {"name": "old", "image": "img"}})["task"]
    api.call("task.stop", {"id": done["id"]})  # Completed: finished
    live = api.call("task.start", {"task": {"name": "live", "image": "img"}})["task"]  # Pending: kept
    assert backend.list("events", prefix=done["id"] + "/")
    wait_for(lambda: backend.get("tasks", done["id"]) is None, timeout=6, what="the finished task pruned")
    assert backend.list("events", prefix=done["id"] + "/") == []
    assert call_err(api, "task.inspect", {"id": done["id"]}).code == "not_found"
    assert [t["id"] for t in api.call("task.ls", {"all": True})["tasks"]] == [live["id"]]


# Review of issue 8: a restart backoff (up to 30 s) used to hold back every placement pass, new
# tasks included, because a pass already due later was kept over an earlier one.
def test_a_restart_backoff_does_not_hold_back_new_placements(rig, fake_worker):
    t = run_on_fake_worker(rig, fake_worker, {"image": "img", "restart": {"name": "on-failure", "backoff": 30}})
    fake_worker.status(t["id"], 1, "exited", container_id="c1", exit_code=3)  # its restart is 30 s away
    fake_worker.ack(fake_worker.next_command("worker.stop"))
    fresh = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    run = fake_worker.next_command("worker.run", timeout=3.0)
    assert run.body["spec"]["task_id"] == fresh["id"]


# Review of issue 8: a host port a worker reports must be a port: anything else is dropped
# (a huge int from a worker could make the write unencodable).
def test_reported_host_ports_are_checked(rig, fake_worker):
    t = rig.api.call("task.start", {"task": {"image": "img", "ports": [80]}})["task"]
    fake_worker.ack(fake_worker.next_command("worker.run"))
    fake_worker.status(t["id"], 1, "running", container_id="c1",
                       host_ports={"80/tcp": 31000, "81/tcp": 0, "82/tcp": 2**40, "83/tcp": "x"})
    wait_for(lambda: task_of(rig, t["id"])["state"] == "Running", what="Running")
    assert task_of(rig, t["id"])["host_ports"] == {"80/tcp": 31000}
