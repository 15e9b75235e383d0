"""The Worker actor against a fake manager (a ROUTER the test holds), with FakeRuntime containers."""
from __future__ import annotations

import time

import pytest
import zmq

from cube.config import ManagerConfig
from cube.runtime.fake import FakeRuntime
from cube.store.memory import MemoryStore
from cube.wire.envelope import Envelope, decode
from tests.actors.helpers import envelope, free_ports, wait_for


class FakeManager:
    """Receives what the worker sends; answers heartbeats and statuses on its own while it waits."""

    def __init__(self, actors, port=None):
        self.port = port or free_ports(1)[0]
        self.sock = actors.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the Manager: a restarted worker takes its name back
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.identity = b""
        self.seen: list[Envelope] = []
        self.answer_heartbeats = True
        self.answer_statuses = True
        self.heartbeat_reply: dict | None = None  # None: ok {}; else an error body

    @property
    def config(self) -> ManagerConfig:
        return ManagerConfig(worker_port=self.port)

    def _recv(self, timeout: float) -> Envelope | None:
        if not self.sock.poll(timeout * 1000):
            return None
        frames = self.sock.recv_multipart()
        self.identity = frames[0]
        m = decode(frames[-1])
        self.seen.append(m)
        if m.type == "worker.heartbeat" and self.answer_heartbeats:
            reply = m.reply({}, "fake") if self.heartbeat_reply is None else \
                m.error(self.heartbeat_reply["code"], "say hello", "fake")
            self.send(reply)
        elif m.type == "task.status" and self.answer_statuses:
            self.send(m.reply({}, "fake"))
        return m

    def send(self, env: Envelope) -> Envelope:
        self.sock.send_multipart([self.identity, env.encode()])
        return env

    def expect(self, predicate, timeout: float = 5.0, what: str = "a message") -> Envelope:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self._recv(max(deadline - time.monotonic(), 0.001))
            if m is not None and predicate(m):
                return m
        raise AssertionError(f"no {what} within {timeout}s; saw {[x.type for x in self.seen[-10:]]}")

    def idle(self, seconds: float) -> None:
        """Keep answering for a while (heartbeats, statuses)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._recv(max(deadline - time.monotonic(), 0.001))

    def accept_hello(self, heartbeat: float = 0.2) -> Envelope:
        hello = self.expect(lambda m: m.type == "worker.hello", what="hello")
        self.send(hello.reply({"metrics": "", "heartbeat": heartbeat, "grace": 5.0}, "fake"))
        return hello

    def command(self, msg_type: str, body: dict) -> Envelope:
        """Send a command and return the worker's reply to it."""
        cmd = self.send(envelope(msg_type, body, sender="fake"))
        return self.expect(lambda m: m.re == cmd.id, what=f"reply to {msg_type}")

    def status(self, task_id: str, state: str, timeout: float = 5.0) -> Envelope:
        return self.expect(lambda m: m.type == "task.status" and m.body["task_id"] == task_id
                           and m.body["state"] == state, timeout, f"status {state} of {task_id}")


TASK = {"task_id": "task-1", "name": "web", "image": "img:1", "ports": ["80/tcp"]}  # a worker.run spec


@pytest.fixture
def setup(actors):
    fm = FakeManager(actors)
    runtime = FakeRuntime()
    store = MemoryStore()
    worker = actors.worker(fm.config, "w1", runtime, store)
    hello = fm.accept_hello()
    assert hello.body["name"] == "w1" and hello.body["tasks"] == [] and fm.identity == b"w1"
    return fm, runtime, store, worker


def test_run_acks_reports_running_and_repeats_are_noops(setup):
    fm, runtime, _, _ = setup
    assert fm.command("worker.run", {"spec": TASK, "attempt": 1}).body == {}
    st = fm.status("task-1", "running")
    [box] = runtime.list()
    assert st.body["container_id"] == box.container_id and st.body["attempt"] == 1
    assert st.body["host_ports"] == box.host_ports
    again = fm.command("worker.run", {"spec": TASK, "attempt": 1})
    assert again.type == "ok"  # a repeat converges again: same container, state re-reported
    older = fm.command("worker.run", {"spec": TASK, "attempt": 0})
    assert older.body == {"ignored": "older attempt"}
    fm.idle(0.3)
    assert [c.container_id for c in runtime.list()] == [box.container_id]


def test_a_newer_attempt_replaces_the_container(setup):
    fm, runtime, _, _ = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    first = fm.status("task-1", "running").body["container_id"]
    fm.command("worker.run", {"spec": TASK, "attempt": 2})
    second = fm.expect(lambda m: m.type == "task.status" and m.body["attempt"] == 2).body
    assert second["state"] == "running" and second["container_id"] != first
    assert [(c.attempt, c.container_id) for c in runtime.list()] == [(2, second["container_id"])]


def test_stop_removes_the_container_and_forgets_the_task(setup):
    fm, runtime, store, worker = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    fm.status("task-1", "running")
    assert store.get("slots", "task-1")["desired"] == "running"
    assert fm.command("worker.stop", {"task_id": "task-1", "attempt": 1, "reason": "test"}).body == {}
    fm.status("task-1", "stopped")
    assert runtime.list() == []
    wait_for(lambda: store.get("slots", "task-1") is None, what="the slot forgotten")
    # a stop for something it never knew still answers and reports stopped
    assert fm.command("worker.stop", {"task_id": "unknown"}).type == "ok"
    fm.status("unknown", "stopped")


# Regression: a late worker.run for an attempt just stopped used to start it again.
def test_a_late_run_for_a_stopped_attempt_does_not_start_it_again(setup):
    fm, runtime, _, _ = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    fm.status("task-1", "running")
    fm.command("worker.stop", {"task_id": "task-1", "attempt": 1})
    fm.status("task-1", "stopped")
    fm.command("worker.run", {"spec": TASK, "attempt": 1})  # duplicated/reordered in transit
    fm.idle(0.5)
    assert runtime.list() == []


def test_container_death_is_reported(setup):
    fm, runtime, _, _ = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    cid = fm.status("task-1", "running").body["container_id"]
    runtime.kill(cid, exit_code=42)
    st = fm.status("task-1", "exited").body
    assert st["exit_code"] == 42 and st["container_id"] == cid and st["attempt"] == 1


# Regression: an OOM kill used to be reported twice, first with exit code -1.
def test_an_oom_kill_is_reported_once_with_the_real_exit_code(setup):
    fm, runtime, _, _ = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    cid = fm.status("task-1", "running").body["container_id"]
    runtime.kill(cid, exit_code=137, oom=True)
    first = fm.status("task-1", "exited").body
    fm.idle(0.3)
    exited = [m for m in fm.seen if m.type == "task.status" and m.body["state"] == "exited"]
    assert first["exit_code"] == 137 and "memory" in first["error"]
    assert len(exited) == 1


def test_a_failed_start_is_reported(actors):
    fm = FakeManager(actors)
    runtime = FakeRuntime(missing_images={"ghost:1"})
    actors.worker(fm.config, "w1", runtime)
    fm.accept_hello()
    fm.command("worker.run", {"spec": {**TASK, "image": "ghost:1"}, "attempt": 1})
    st = fm.status("task-1", "failed").body
    assert "ghost:1" in st["error"] and runtime.list() == []


def test_logs(setup):
    fm, runtime, _, _ = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    cid = fm.status("task-1", "running").body["container_id"]
    runtime.write_log(cid, "line one")
    body = fm.command("worker.logs", {"task_id": "task-1", "tail": 5}).body
    assert body["logs"] == "line one\n" and body["source"] == "container" and not body["more"]
    assert fm.command("worker.logs", {"task_id": "nope"}).body["code"] == "not_found"


def test_heartbeats_and_hello_again_when_not_known(setup):
    fm, _, _, _ = setup
    fm.expect(lambda m: m.type == "worker.heartbeat", timeout=2, what="a heartbeat")
    fm.heartbeat_reply = {"code": "not_found"}  # the manager restarted and forgot us
    fm.accept_hello()
    fm.heartbeat_reply = None
    fm.expect(lambda m: m.type == "worker.heartbeat", timeout=2, what="heartbeats again")


def test_a_silent_manager_makes_the_worker_reconnect_and_say_hello(setup):
    fm, _, _, _ = setup
    fm.answer_heartbeats = False
    fm.expect(lambda m: m.type == "worker.hello", timeout=5, what="a new hello")


def test_a_restarted_worker_reports_its_containers(actors, setup):
    fm, runtime, store, worker = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 3})
    cid = fm.status("task-1", "running").body["container_id"]
    actors.stop(worker)  # its containers keep running
    assert [c.container_id for c in runtime.list()] == [cid]
    actors.worker(fm.config, "w1", runtime, store)  # same runtime and local store
    hello = fm.accept_hello()
    [rep] = hello.body["tasks"]
    assert (rep["task_id"], rep["attempt"], rep["state"], rep["container_id"]) == ("task-1", 3, "running", cid)
    again = fm.command("worker.run", {"spec": TASK, "attempt": 3})  # the manager re-sends: no new container
    assert again.type == "ok"
    fm.idle(0.3)
    assert [c.container_id for c in runtime.list()] == [cid]


def test_a_stop_cut_short_by_a_worker_restart_is_finished(actors, setup):
    fm, runtime, store, worker = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    cid = fm.status("task-1", "running").body["container_id"]
    actors.stop(worker)
    # as if the worker died after recording the stop but before Docker removed the container
    store.put("slots", "task-1", {"spec": TASK, "attempt": 1, "desired": "stopped", "container_id": cid,
                                  "started": True})
    actors.worker(fm.config, "w1", runtime, store)
    fm.accept_hello()  # the stop is finished at start-up, even before the manager answers
    wait_for(lambda: any(m.type == "task.status" and m.body["state"] == "stopped" for m in fm.seen)
             or fm.idle(0.1), timeout=5, what="a stopped status")
    assert runtime.list() == []


def test_a_repeated_run_finishes_a_start_cut_short_by_a_restart(actors, setup):
    fm, runtime, store, worker = setup
    actors.stop(worker)
    # recorded as wanted, but the worker died before the container was created
    store.put("slots", "task-1", {"spec": TASK, "attempt": 1, "desired": "running", "container_id": "",
                                  "started": False})
    actors.worker(fm.config, "w1", runtime, store)
    assert fm.accept_hello().body["tasks"] == []
    assert fm.command("worker.run", {"spec": TASK, "attempt": 1}).type == "ok"  # the manager re-sends
    fm.status("task-1", "running")
    assert len(runtime.list()) == 1


@pytest.mark.parametrize("code", ["unavailable", "in_doubt"])
def test_a_status_refused_as_unavailable_is_sent_again(setup, code):
    fm, runtime, _, _ = setup
    fm.answer_statuses = False
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    st = fm.expect(lambda m: m.type == "task.status", what="a status")
    fm.seen.clear()
    # answer the status with "my store is down": the worker must keep it and send it again
    fm.send(st.error(code, "store down, or its write unconfirmed", "fake"))
    again = fm.expect(lambda m: m.type == "task.status" and m.id == st.id, timeout=3, what="the same status again")
    assert again.body == st.body
    fm.send(again.reply({}, "fake"))  # taken now: no more repeats
    fm.seen.clear()
    fm.idle(1.5)
    assert not [m for m in fm.seen if m.type == "task.status"]


class SlowStopRuntime(FakeRuntime):
    """A container that ignores SIGTERM: stopping it takes the whole stop timeout."""

    def __init__(self, stop_seconds: float):
        super().__init__()
        self.stop_seconds = stop_seconds

    def stop(self, container_id: str, timeout: float = 5.0, before_remove=None) -> None:
        time.sleep(self.stop_seconds)
        super().stop(container_id, timeout, before_remove)


# Regression (issue 14, D1): copies of a task's worker.run arriving while its stop was still in
# progress flipped the slot back to running; the container went, but the slot stayed "desired
# running" and kept the task's CPUs reserved for good.
def test_a_late_run_during_a_slow_stop_does_not_resurrect_the_slot(actors):
    fm = FakeManager(actors)
    runtime = SlowStopRuntime(1.0)
    store = MemoryStore()
    worker = actors.worker(fm.config, "w1", runtime, store)
    fm.accept_hello()
    task = {**TASK, "cpu": 1.5}
    fm.command("worker.run", {"spec": task, "attempt": 1})
    fm.status("task-1", "running")
    fm.command("worker.stop", {"task_id": "task-1", "attempt": 1, "reason": "test"})
    late = fm.command("worker.run", {"spec": task, "attempt": 1})  # a delayed copy, mid-stop
    assert late.body == {"ignored": "attempt is being stopped"}
    fm.status("task-1", "stopped", timeout=5)
    fm.idle(0.5)
    assert runtime.list() == []
    assert "task-1" not in worker.slots and store.get("slots", "task-1") is None
    reserved, task_ids = worker.reserved()  # what its metrics samples publish
    assert reserved["cpu"] == 0.0 and task_ids == []


def test_reports_carry_an_increasing_clock_and_the_hello_one_from_before_its_listing(setup):
    fm, runtime, _, worker = setup
    hello_clock = fm.seen[0].body["clock"]
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    first = fm.status("task-1", "running").body["clock"]
    cid = first and runtime.list()[0].container_id
    runtime.kill(cid, exit_code=3)
    second = fm.status("task-1", "exited").body["clock"]
    assert hello_clock < first < second and first[0] == hello_clock[0]


def test_a_hello_reports_a_started_slot_whose_container_is_gone(actors, setup):
    fm, runtime, store, worker = setup
    fm.command("worker.run", {"spec": TASK, "attempt": 2})
    cid = fm.status("task-1", "running").body["container_id"]
    actors.stop(worker)
    runtime.remove_behind_back(cid)  # while the worker was down: no event reaches it
    actors.worker(fm.config, "w1", runtime, store)
    hello = fm.accept_hello()
    assert [(r["task_id"], r["attempt"], r["state"]) for r in hello.body["tasks"]] == [("task-1", 2, "removed")]


# A container death the event stream missed (Docker's can lose events across a reconnect; seen
# once in CI as a task left Running with its container exited) is found by the periodic listing.
def test_a_death_the_event_stream_missed_is_found_and_reported(actors):
    fm = FakeManager(actors)
    runtime = FakeRuntime()
    actors.worker(fm.config, "w1", runtime, MemoryStore(), resync_interval=0.3)
    fm.accept_hello()
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    cid = fm.status("task-1", "running").body["container_id"]
    runtime.kill(cid, exit_code=3, silent=True)
    st = fm.status("task-1", "exited", timeout=5).body
    assert (st["container_id"], st["exit_code"], st["attempt"]) == (cid, 3, 1)
