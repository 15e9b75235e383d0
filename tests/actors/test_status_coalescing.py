"""A worker's task.status re-sent while the Manager is still writing the first copy
(cube/manager/lifecycle.py, TaskLife.status): the copy joins the write in flight instead of
queueing one of its own, and both copies get that write's outcome, an error included. A
different report (another state, a newer clock) is written on its own. And the Worker re-sends
a status after 1 s, 2 s, then every 4 s (cube/actors/worker.py, `_status`).

The Manager runs over real ZeroMQ on a Store actor whose loop the test freezes (as a SIGSTOP
would), so the first write stays in flight while the copies arrive; the worker is a raw DEALER
sending the very same envelope twice, as a Worker's retry does (same id)."""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from cube.actors.metrics import Capacity
from cube.actors.worker import Worker, WorkerConfig
from cube.messages import worker as worker_msg
from cube.runtime.fake import FakeRuntime
from cube.store.base import StoreError
from cube.store.memory import MemoryStore
from cube.wire import actor as actor_mod
from cube.wire.envelope import Envelope
from cube.wire.loop import Loop
from tests.actors.helpers import GiB, FakeNodes, GatedStore, envelope, free_ports, freeze_store, recv_env, tcp, wait_for
from tests.unit.fakes import FakeSock

BOOT = 7  # the fake worker's report clock is [BOOT, n]


class RefusingStore(GatedStore):
    """A GatedStore that also refuses (StoreError: the Store actor answers bad_request) every
    batch writing `refuse` (a task id) as Running, while `refuse` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: str | None = None

    def batch(self, ops, term: int = 0):
        ops = list(ops)
        if self.refuse and any(op == "put" and ns == "tasks" and key == self.refuse
                               and isinstance(v, dict) and v.get("state") == "Running"
                               for op, ns, key, v in ops):
            raise StoreError("the disk refused the Running write")
        return super().batch(ops, term)


class Spy:
    """Counts, on the Manager's loop, the task.status copies it has handled and the TaskBook
    changes queued for each task (a re-sent copy that joined a write queues none)."""

    def __init__(self, manager) -> None:
        self.lock = threading.Lock()
        self.handled = 0
        self.commits: dict[str, int] = {}
        life, book = manager.life, manager.book
        status, commit = life.status, book.commit

        def counting_status(worker, b, done):
            status(worker, b, done)
            with self.lock:
                self.handled += 1

        def counting_commit(task_id, *a, **kw):
            with self.lock:
                self.commits[task_id] = self.commits.get(task_id, 0) + 1
            return commit(task_id, *a, **kw)
        life.status = counting_status  # looked up on the instance at each call
        book.commit = counting_commit

    def count(self, task_id: str) -> int:
        with self.lock:
            return self.commits.get(task_id, 0)


class FakeWorker:
    """A raw DEALER whose identity is its name: says hello, acks commands, sends statuses."""

    def __init__(self, actors, endpoint: str, name: str = "fw") -> None:
        self.name = name
        self.sock = actors.dealer(endpoint, identity=name.encode())
        self.inbox: list[Envelope] = []

    def send(self, env: Envelope) -> None:
        self.sock.send(env.encode())

    def replies_to(self, env: Envelope, n: int, timeout: float = 5.0) -> list[Envelope]:
        """The next `n` replies to `env` (other messages are kept in the inbox)."""
        got: list[Envelope] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            m = recv_env(self.sock, max(deadline - time.monotonic(), 0.01))
            if m.re == env.id:
                got.append(m)
            else:
                self.inbox.append(m)
        return got

    def request(self, msg_type: str, body: dict) -> Envelope:
        env = envelope(msg_type, body, sender=self.name)
        self.send(env)
        return self.replies_to(env, 1)[0]

    def no_reply_to(self, env: Envelope) -> bool:
        """Nothing answers `env` in what is waiting now (other messages are kept)."""
        while self.sock.poll(0, zmq.POLLIN):
            m = recv_env(self.sock, 0.1)
            if m.re == env.id:
                return False
            self.inbox.append(m)
        return True

    def next_command(self, msg_type: str, timeout: float = 5.0) -> Envelope:
        deadline = time.monotonic() + timeout
        while True:
            for m in list(self.inbox):
                if m.type == msg_type:
                    self.inbox.remove(m)
                    return m
            self.inbox.append(recv_env(self.sock, max(deadline - time.monotonic(), 0.01)))

    def status(self, task_id: str, n: int, state: str, **kw) -> Envelope:
        """A task.status envelope, not sent yet, stamped [BOOT, n]."""
        return envelope(worker_msg.STATUS, {"task_id": task_id, "attempt": 1, "state": state,
                                            "clock": [BOOT, n], **kw}, sender=self.name)


@pytest.fixture
def rig(actors):
    backend = RefusingStore()
    _, store_ep = actors.store(backend)
    _, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(store_endpoint=store_ep, scheduler_endpoint=sched_ep,
                             metrics_port=int(metrics_ep.rsplit(":", 1)[1]), grace=30.0)
    nodes = FakeNodes(metrics_ep)
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    sched = actors.client(sched_ep)
    w = FakeWorker(actors, f"tcp://127.0.0.1:{manager.config.worker_port}")
    nodes.set(w.name, cpus=2.0)
    hello = w.request("worker.hello", {"name": w.name, "address": "127.0.0.1", "cpus": 2.0,
                                       "memory": 1 << 30, "disk": 1 << 34, "tasks": []})
    assert hello.type == "ok", hello.body
    wait_for(lambda: w.name in {n["name"] for n in sched.call("sched.nodes")["nodes"]}, what="fw's metrics")

    class Rig:
        pass
    r = Rig()
    r.actors, r.backend, r.store_ep, r.manager, r.api, r.worker = actors, backend, store_ep, manager, api, w
    r.spy = Spy(manager)
    yield r
    backend.gate.set()  # never leave the Store's loop hanging at teardown
    nodes.close()


def placed(rig) -> str:
    """A task started and placed on the fake worker (attempt 1), its run acknowledged: its id."""
    t = rig.api.call("task.start", {"task": {"image": "img"}})["task"]
    cmd = rig.worker.next_command("worker.run")
    assert cmd.body["spec"]["task_id"] == t["id"] and cmd.body["attempt"] == 1
    rig.worker.send(cmd.reply({}, rig.worker.name))
    wait_for(lambda: rig.api.call("task.inspect", {"id": t["id"]})["task"]["state"] == "Scheduled",
             what="Scheduled")
    return t["id"]


def states(rig, task_id: str) -> list[str]:
    return [e["state"] for e in rig.api.call("task.inspect", {"id": task_id})["events"]]


class Frozen:
    """The Store's loop hangs (a get from another client blocks in the backend) until `thaw`."""

    def __init__(self, rig) -> None:
        self.rig = rig
        self.reader = freeze_store(rig.backend, rig.store_ep, rig.actors)

    def thaw(self) -> None:
        self.rig.backend.gate.set()
        self.reader.join(5)


def handled(rig, n: int) -> None:
    wait_for(lambda: rig.spy.handled >= n, what=f"{n} task.status copies handled by the manager")


# ---- a re-sent copy joins the write in flight ----------------------------------------------------------

def test_a_copy_resent_during_the_write_joins_it_and_both_are_answered(rig):
    task_id = placed(rig)
    before = rig.spy.count(task_id)
    report = rig.worker.status(task_id, 1, "running", container_id="c1", host_ports={"80/tcp": 31000})

    frozen = Frozen(rig)
    seen = rig.spy.handled
    rig.worker.send(report)
    rig.worker.send(report)  # the worker's retry: the same envelope, the same id
    handled(rig, seen + 2)
    assert rig.spy.count(task_id) - before == 1, "the re-sent copy queued a write of its own"
    assert rig.worker.no_reply_to(report), "a copy was answered before the write's outcome was known"

    frozen.thaw()
    replies = rig.worker.replies_to(report, 2)
    assert [(r.type, r.body) for r in replies] == [("ok", {}), ("ok", {})]
    assert states(rig, task_id).count("Running") == 1
    assert rig.spy.count(task_id) - before == 1
    assert rig.api.call("task.inspect", {"id": task_id})["task"]["container_id"] == "c1"

    # A third copy, after the outcome: nothing is waiting any more, it is answered at once.
    seen = rig.spy.handled
    rig.worker.send(report)
    (late,) = rig.worker.replies_to(report, 1)
    assert late.type == "ok" and "ignored" in late.body  # older than (equal to) the report applied
    handled(rig, seen + 1)  # (counted once status() returned, which can be after its reply went out)
    assert rig.spy.count(task_id) - before == 1


def test_copies_of_a_report_without_a_clock_join_too_and_nothing_stays_waiting(rig):
    task_id = placed(rig)
    before = rig.spy.count(task_id)
    report = envelope(worker_msg.STATUS, {"task_id": task_id, "attempt": 1, "state": "running",
                                          "container_id": "c1"}, sender=rig.worker.name)
    frozen = Frozen(rig)
    seen = rig.spy.handled
    for _ in range(3):
        rig.worker.send(report)
    handled(rig, seen + 3)
    assert rig.spy.count(task_id) - before == 1
    frozen.thaw()
    assert [r.type for r in rig.worker.replies_to(report, 3)] == ["ok"] * 3
    assert states(rig, task_id).count("Running") == 1
    assert not rig.manager.life._reporting  # every waiting reply was let go

    # Without a clock a later copy is not "older": it is handled afresh (a change that finds
    # nothing to do), not left waiting for a write long over.
    rig.worker.send(report)
    (again,) = rig.worker.replies_to(report, 1)
    assert again.type == "ok" and rig.spy.count(task_id) - before == 2
    assert states(rig, task_id).count("Running") == 1


def test_both_copies_get_the_first_writes_error_and_the_next_copy_writes_again(rig):
    task_id = placed(rig)
    before = rig.spy.count(task_id)
    report = rig.worker.status(task_id, 1, "running", container_id="c1")
    rig.backend.refuse = task_id

    frozen = Frozen(rig)
    seen = rig.spy.handled
    rig.worker.send(report)
    rig.worker.send(report)
    handled(rig, seen + 2)
    assert rig.spy.count(task_id) - before == 1
    frozen.thaw()
    first, second = rig.worker.replies_to(report, 2)
    assert first.type == second.type == "error"
    assert first.body["code"] == second.body["code"] == "bad_request"
    assert first.body["message"] == second.body["message"] and "disk refused" in first.body["message"]
    assert "Running" not in states(rig, task_id)

    # The failed write is no longer in flight: the worker's next copy is a new write, which now succeeds.
    rig.backend.refuse = None
    rig.worker.send(report)
    (ok,) = rig.worker.replies_to(report, 1)
    assert (ok.type, ok.body) == ("ok", {})
    assert rig.spy.count(task_id) - before == 2
    assert states(rig, task_id).count("Running") == 1


# ---- a different report is not merged ---------------------------------------------------------------------

def test_a_newer_clock_is_a_report_of_its_own(rig):
    task_id = placed(rig)
    before = rig.spy.count(task_id)
    older = rig.worker.status(task_id, 1, "running", container_id="c1")
    newer = rig.worker.status(task_id, 2, "running", container_id="c1")

    frozen = Frozen(rig)
    seen = rig.spy.handled
    rig.worker.send(older)
    rig.worker.send(newer)
    handled(rig, seen + 2)
    assert rig.spy.count(task_id) - before == 2, "a newer report was merged into an older one's write"
    frozen.thaw()
    assert [(r.type, r.body) for r in rig.worker.replies_to(older, 1)] == [("ok", {})]
    assert [(r.type, r.body) for r in rig.worker.replies_to(newer, 1)] == [("ok", {})]
    assert states(rig, task_id).count("Running") == 1  # the second change found nothing to do


def test_another_state_is_a_report_of_its_own(rig):
    task_id = placed(rig)
    before = rig.spy.count(task_id)
    running = rig.worker.status(task_id, 1, "running", container_id="c1")
    exited = rig.worker.status(task_id, 2, "exited", container_id="c1", exit_code=3)

    frozen = Frozen(rig)
    seen = rig.spy.handled
    rig.worker.send(running)
    rig.worker.send(exited)
    rig.worker.send(running)  # a re-sent copy of the first joins the first, not the exit
    handled(rig, seen + 3)
    assert rig.spy.count(task_id) - before == 2
    frozen.thaw()
    assert [r.type for r in rig.worker.replies_to(running, 2)] == ["ok", "ok"]
    assert [r.type for r in rig.worker.replies_to(exited, 1)] == ["ok"]
    history = states(rig, task_id)
    assert history.count("Running") == 1
    assert history.index("Running") < len(history) - 1 and history[-1] in ("Failed", "Completed", "Pending")
    task = rig.api.call("task.inspect", {"id": task_id})["task"]
    assert task["exit_code"] == 3


# ---- the worker's re-send schedule ---------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_resends_a_status_after_1s_2s_then_every_4s(tmp_path, monkeypatch):
    monkeypatch.setattr(actor_mod.random, "uniform", lambda a, b: 1.0)  # the nominal schedule
    clock = Clock()
    start = clock.now
    config = WorkerConfig(manager=tcp(free_ports(1)[0]), name="w1", address="127.0.0.1",
                          data_dir=str(tmp_path), insecure=True)
    w = Worker(config, FakeRuntime(), MemoryStore(), Capacity(2.0, 2 * GiB, 16 * GiB),
               loop=Loop("w1", clock=clock))
    sock = FakeSock()  # the manager: it never answers
    w.link.sock = sock
    try:
        w._status("t1", 1, {"state": "running", "container_id": "c1"})
        sent_at = [0.0]
        gave_up = None
        step = 0.01
        for turn in range(1, 8001):  # 80 s of the loop's clock
            clock.now = start + turn * step
            w.loop.run_once(0)
            while len(sent_at) < len(sock.sent):
                sent_at.append(clock.now - start)
            if gave_up is None and not w._outstanding:
                gave_up = clock.now - start
        gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
        assert len(sock.sent) == 20
        want = [1.0, 2.0] + [4.0] * 17
        assert gaps == pytest.approx(want, abs=1.5 * step), gaps
        assert gave_up == pytest.approx(75.0, abs=1.5 * step)  # about 75 s after the first
        bodies = sock.replies()
        assert {e.id for e in bodies} == {bodies[0].id} and bodies[0].type == worker_msg.STATUS
        assert bodies[0].body["state"] == "running" and bodies[0].body["container_id"] == "c1"
    finally:
        w.link.sock = None
        w.loop.drain()
        w.loop.close()
        w.loop.ctx.term()


# ---- a later report brings the ports the first one did not know --------------------------------------

def test_a_report_of_the_same_container_with_its_ports_records_them(rig):
    """Found by chaos 28: a new manager adopted a container from a hello that listed it before
    Docker had published its ports; the worker's own report of the start, with the ports, was
    then skipped as "already Running", and the record never got them."""
    task_id = placed(rig)
    first = rig.worker.status(task_id, 1, "running", container_id="c1")
    rig.worker.send(first)
    assert [r.type for r in rig.worker.replies_to(first, 1)] == ["ok"]
    with_ports = rig.worker.status(task_id, 2, "running", container_id="c1", host_ports={"80/tcp": 30080})
    rig.worker.send(with_ports)
    assert [r.type for r in rig.worker.replies_to(with_ports, 1)] == ["ok"]
    task = rig.api.call("task.inspect", {"id": task_id})["task"]
    assert task["state"] == "Running" and task["host_ports"] == {"80/tcp": 30080}
    assert states(rig, task_id).count("Running") == 1  # the same start: no second Running event
    again = rig.worker.status(task_id, 3, "running", container_id="c1", host_ports={"80/tcp": 30080})
    rig.worker.send(again)
    assert [r.type for r in rig.worker.replies_to(again, 1)] == ["ok"]  # nothing new: nothing written
