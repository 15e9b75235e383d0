"""Helpers for actor tests: actors run on their own Loop thread inside the test process, over real
ZeroMQ sockets (tcp://127.0.0.1 on free ports). Every started actor is stopped, joined and its
sockets closed by `Actors.close()`, which the `actors` fixture calls."""
from __future__ import annotations

import os
import queue
import random
import threading
import time
from typing import Any, Callable

import zmq

import cube.messages  # noqa: F401  (declares every schema)
from cube.actors.metrics import Capacity
from cube.actors.scheduler import SchedulerActor
from cube.actors.store import StoreActor
from cube.actors.worker import Worker, WorkerConfig
from cube.config import ManagerConfig
from cube.manager.storage import AsyncStore
from cube.messages import node as node_msg
from cube.runtime.fake import FakeRuntime
from cube.store.base import StoreError
from cube.store.memory import MemoryStore
from cube.wire import codec, sockets
from cube.harness import free_ports  # noqa: F401  (re-exported for the tests)
from cube.harness import wait_for as poll
from cube.wire.actor import Actor
from cube.wire.client import Client
from cube.wire.envelope import Envelope, decode

GiB = 1 << 30


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy (exceptions count as not yet); return its value."""
    try:
        return poll(predicate, timeout, what, interval)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None



def on_loop(loop: Any, fn: Callable[[], Any], wait: float = 10.0, what: str = "the loop") -> Any:
    """`fn()` on `loop`'s thread; its result (its exception is raised here)."""
    answers: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            answers.put((fn(), None))
        except BaseException as e:  # handed to the test's thread
            answers.put((None, e))
    loop.call_soon_threadsafe(run)
    try:
        result, error = answers.get(timeout=wait)
    except queue.Empty:
        raise AssertionError(f"{what} did not run the call within {wait}s") from None
    if error is not None:
        raise error
    return result

class Running:
    """One actor on its own thread."""

    def __init__(self, actor: Actor, target: Callable[[], None]):
        self.actor = actor
        self.error: BaseException | None = None

        def main() -> None:
            try:
                target()
            except BaseException as e:  # reported at teardown
                self.error = e
        self.thread = threading.Thread(target=main, name=f"actor-{actor.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        loop = self.actor.loop
        loop.stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), f"{self.actor.name}'s loop did not stop"
        stop_events = getattr(self.actor, "_stop_events", None)
        if stop_events is not None:
            stop_events.set()
        loop.drain()  # nothing may write to the wake pipe once it is closed
        loop.close()
        loop.ctx.destroy(linger=0)  # also closes sockets that are not readers (PUB, clients)


class Actors:
    """Starts actors wired together, and tears them all down."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.running: list[Running] = []
        self.ctx = zmq.Context()
        self._clients: list[Client] = []
        self._socks: list[zmq.Socket] = []

    # ---- actors -------------------------------------------------------------------------------
    def start(self, actor: Actor, target: Callable[[], None] | None = None) -> Actor:
        self.running.append(Running(actor, target or actor.loop.run))
        return actor

    def stop(self, actor: Actor) -> None:
        for r in list(self.running):
            if r.actor is actor:
                self.running.remove(r)
                r.stop()

    def store(self, backend=None) -> tuple[StoreActor, str]:
        endpoint = tcp(free_ports(1)[0])
        actor = StoreActor(backend if backend is not None else MemoryStore(), endpoint)
        self.start(actor, actor.run)
        return actor, endpoint

    def scheduler(self, algorithm: str = "roundrobin", stale_after: float = 5.0) -> tuple[SchedulerActor, str, str]:
        api, metrics = (tcp(p) for p in free_ports(2))
        actor = SchedulerActor(api, metrics, algorithm=algorithm, stale_after=stale_after)
        self.start(actor)
        return actor, api, metrics

    def manager(self, store=None, scheduler_endpoint: str = "", metrics_port: int = 0,
                store_endpoint: str = "", **overrides):
        """A Manager with its own Store actor (over `store`, a backend; MemoryStore by default),
        or on the Store actor at `store_endpoint`."""
        from cube.manager import Manager
        if not store_endpoint:
            _, store_endpoint = self.store(store)
        api, workers, events, spare = free_ports(4)
        config = ManagerConfig(host="127.0.0.1", api_port=api, worker_port=workers,
                               metrics_port=metrics_port or spare, events_port=events,
                               data_dir=str(self.tmp_path / "manager"), store="memory",
                               store_endpoint=store_endpoint,
                               scheduler_endpoint=scheduler_endpoint or tcp(free_ports(1)[0]),
                               heartbeat_interval=0.2, grace=2.0, command_retry=0.3,
                               insecure=True)  # security has its own tests (test_security.py)
        for k, v in overrides.items():
            setattr(config, k, v)
        manager = Manager(config)
        self.start(manager, manager.run)  # run = on_start() (load, timers) + loop.run()
        wait_for(lambda: not manager.loading, what="the manager to load its state")
        return manager

    def host(self, store_endpoint: str, timeout: float = 2.0, name: str = "host") -> "Host":
        """A bare actor with an AsyncStore to the Store actor at `store_endpoint`, running."""
        h = Host(store_endpoint, timeout, name)
        self.start(h, h.run)
        return h

    def worker(self, manager_config: ManagerConfig, name: str = "w1", runtime: FakeRuntime | None = None,
               store=None, capacity: Capacity | None = None, manager: str = "",
               wait_connected: bool = True, resync_interval: float = 10.0) -> Worker:
        data_dir = self.tmp_path / f"worker-{name}"
        data_dir.mkdir(exist_ok=True)
        config = WorkerConfig(manager=manager or f"127.0.0.1:{manager_config.worker_port}", name=name,
                              address="127.0.0.1", data_dir=str(data_dir), metrics_interval=0.2,
                              stop_timeout=0.5, resync_interval=resync_interval, insecure=True)
        w = Worker(config, runtime or FakeRuntime(), store if store is not None else MemoryStore(),
                   capacity or Capacity(2.0, 2 * GiB, 16 * GiB))
        if wait_connected:
            # The worker's DEALER is IMMEDIATE: a hello sent before the TCP connection is up is
            # dropped and only retried after a 2 s timeout. Wait for the connection (POLLOUT) so
            # tests do not pay that. Before run() the socket is still ours to touch.
            wait_for(lambda: w.manager_sock.poll(0, zmq.POLLOUT), timeout=5, what="worker connected")
        self.start(w, w.run)
        return w

    # ---- peers --------------------------------------------------------------------------------
    def client(self, endpoint: str, timeout: float = 3.0, name: str = "test") -> Client:
        c = Client(endpoint, name=name, timeout=timeout, ctx=self.ctx)
        self._clients.append(c)
        return c

    def dealer(self, endpoint: str, identity: bytes | None = None) -> zmq.Socket:
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if identity:
            s.setsockopt(zmq.IDENTITY, identity)
        s.connect(endpoint)
        self._socks.append(s)
        return s

    def socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self._socks.append(s)
        return s

    def close(self) -> None:
        errors = []
        for r in reversed(self.running):
            r.stop()
            if r.error is not None:
                errors.append(f"{r.actor.name}: {r.error!r}")
        self.running.clear()
        for c in self._clients:
            c.close()
        for s in self._socks:
            s.close(linger=0)
        self.ctx.term()
        assert not errors, f"actor threads died: {errors}"


# ---- an actor to run the Manager's asynchronous parts on ---------------------------------------

class Host(Actor):
    """A bare actor whose loop owns an AsyncStore, as the Manager's does. The test runs code on
    that loop (`on_loop`, `later`, `call`) and waits for the `done` callbacks there."""

    def __init__(self, store_endpoint: str, timeout: float = 2.0, name: str = "host"):
        super().__init__(name)
        self.store_sock = sockets.dealer(self.loop.ctx, store_endpoint)
        self.store = AsyncStore(self, self.store_sock, timeout)
        self.serve(self.store_sock, accept=set())

    def on_loop(self, fn: Callable[[], Any], wait: float = 10.0) -> Any:
        """`fn()` on the loop thread; its result (its exception is raised here)."""
        return on_loop(self.loop, fn, wait, f"{self.name}'s loop")

    def later(self, start: Callable[[Callable[..., None]], Any]) -> "Later":
        """`start(done)` on the loop thread; what `done` gets can be waited for."""
        answer = Later()
        self.loop.call_soon_threadsafe(lambda: start(answer))
        return answer

    def call(self, start: Callable[[Callable[..., None]], Any], wait: float = 10.0) -> tuple:
        """`start(done)` on the loop thread; the arguments `done` was called with."""
        return self.later(start).get(wait)


class Later:
    """A `done` callback whose arguments another thread waits for."""

    def __init__(self) -> None:
        self._answers: queue.Queue = queue.Queue()

    def __call__(self, *args: Any) -> None:
        self._answers.put(args)

    def get(self, wait: float = 10.0) -> tuple:
        try:
            return self._answers.get(timeout=wait)
        except queue.Empty:
            raise AssertionError(f"no answer within {wait}s") from None

    def done(self) -> bool:
        return not self._answers.empty()


class GatedStore(MemoryStore):
    """A MemoryStore whose next `get` (or next `batch`, once entered) hangs until `gate` is set:
    the Store actor's loop hangs with it, like a frozen process. Counts backend batches, records
    every write of the event sequence number, and fails (StoreError) a batch putting "poison"."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hang_get = False
        self.hang_batch = False
        self.batches = 0
        self.seq_writes: list[int] = []

    def _hang(self) -> None:
        self.entered.set()
        self.gate.wait(10)

    def get(self, ns, key):
        if self.hang_get:
            self.hang_get = False
            self._hang()
        return super().get(ns, key)

    def batch(self, ops, term: int = 0):
        ops = list(ops)
        if self.hang_batch:  # the deadline was checked already: this is the residual window
            self.hang_batch = False
            self._hang()
        if any(op == "put" and v == "poison" for op, _, _, v in ops):
            raise StoreError("the disk refused a poisoned value")
        super().batch(ops, term)
        self.batches += 1
        self.seq_writes += [v for op, ns, key, v in ops if (op, ns, key) == ("put", "meta", "event_seq")]


def freeze_store(backend: GatedStore, endpoint: str, actors: "Actors") -> threading.Thread:
    """Hang the Store's loop on a get from another client, so what follows queues behind it.
    Set `backend.gate` to let it go on; join the returned thread then."""
    backend.gate.clear()
    backend.entered.clear()
    backend.hang_get = True
    other = Client(endpoint, name="other", timeout=10.0, ctx=actors.ctx)

    def read() -> None:
        try:
            other.call("store.get", {"ns": "tasks", "key": "anything"})
        except Exception:  # (not_found, or no answer: either way the freeze is over)
            pass
        finally:
            other.close()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert backend.entered.wait(5), "the Store never started the hanging get"
    return t


# ---- raw frames ---------------------------------------------------------------------------------

def envelope(msg_type: str, body: dict | None = None, sender: str = "raw", **kw) -> Envelope:
    return Envelope(msg_type, body or {}, sender=sender, **kw)


def recv_env(sock: zmq.Socket, timeout: float = 3.0) -> Envelope:
    if not sock.poll(timeout * 1000, zmq.POLLIN):
        raise AssertionError(f"no message within {timeout}s")
    return decode(sock.recv_multipart()[-1])


def expect_error(sock: zmq.Socket, code: str, re: str | None = None, timeout: float = 3.0) -> Envelope:
    reply = recv_env(sock, timeout)
    assert reply.type == "error", reply
    assert reply.body["code"] == code, reply.body
    assert reply.re == re
    return reply


def garbage_cases(known_type: str, bad_body: dict) -> list[tuple[str, list[bytes], str, str | None]]:
    """(label, frames, expected error code, expected `re`) for one ROUTER endpoint."""
    rnd = random.Random(7)
    unknown = envelope("no.such.type", {})
    wrong = envelope(known_type, bad_body)
    return [
        ("random bytes", [bytes(rnd.getrandbits(8) for _ in range(64)) + b"\xc1"], "bad_frame", None),
        ("empty frame", [b""], "bad_frame", None),
        ("msgpack list", [codec.pack([1, "two", {"three": 3}])], "bad_frame", None),
        ("msgpack int", [codec.pack(42)], "bad_frame", None),
        ("wrong version", [codec.pack({**envelope(known_type, {}).to_map(), "v": 99, "id": "v99"})],
         "bad_envelope", "v99"),
        ("unknown type", [unknown.encode()], "unknown_type", unknown.id),
        ("wrong field types", [wrong.encode()], "bad_body", wrong.id),
        ("oversize", [b"\x00" * (codec.MAX_FRAME + 1)], "bad_frame", None),
    ]


# ---- fake metrics publishers --------------------------------------------------------------------

def metrics_sample(name: str, seq: int, cpus: float = 2.0, memory: int = 2 * GiB, disk: int = 16 * GiB,
                   task_ids: list[str] | None = None, **kw) -> dict:
    task_ids = task_ids or []
    sample = {"name": name, "address": "127.0.0.1", "ts": time.time(), "seq": seq, "cpus": cpus,
              "memory": memory, "disk": disk, "cpu_usage": 0.05, "memory_total": 8 * GiB,
              "memory_available": 6 * GiB, "memory_used": 2 * GiB, "memory_percent": 25.0,
              "disk_total": 100 * GiB, "disk_free": 80 * GiB, "disk_used": 20 * GiB,
              "load_avg": [0.1, 0.2, 0.3], "task_count": len(task_ids),
              "reserved": {"cpu": 0.0, "memory": 0, "disk": 0}, "task_ids": task_ids}
    sample.update(kw)
    return sample


class FakeNodes:
    """A thread publishing node.metrics for each node in `nodes` every `every` seconds, like workers.

    Each node publishes from its own PUB socket connected to the scheduler's bound SUB socket.
    Remove a node from `nodes` to make it fall silent."""

    def __init__(self, metrics_endpoint: str, every: float = 0.05):
        self.endpoint = metrics_endpoint
        self.every = every
        self.nodes: dict[str, dict] = {}  # name -> extra sample fields
        self.raw: list[list[bytes]] = []  # frames to publish once, from the first socket
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-nodes", daemon=True)
        self._thread.start()

    def set(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.nodes[name] = fields

    def silence(self, name: str) -> None:
        with self._lock:
            self.nodes.pop(name, None)

    def publish_raw(self, frames: list[bytes]) -> None:
        with self._lock:
            self.raw.append(frames)

    def _run(self) -> None:
        ctx = zmq.Context()
        socks: dict[str, zmq.Socket] = {}
        any_sock = ctx.socket(zmq.PUB)
        any_sock.setsockopt(zmq.LINGER, 0)
        any_sock.connect(self.endpoint)
        seq = 0
        try:
            while not self._stop.is_set():
                seq += 1
                with self._lock:
                    nodes = dict(self.nodes)
                    raw, self.raw = self.raw, []
                for frames in raw:
                    any_sock.send_multipart(frames)
                for name, fields in nodes.items():
                    sock = socks.get(name)
                    if sock is None:
                        sock = socks[name] = ctx.socket(zmq.PUB)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.connect(self.endpoint)
                    env = Envelope(node_msg.METRICS, metrics_sample(name, seq, **fields), sender=name)
                    sock.send_multipart([node_msg.METRICS.encode(), env.encode()])
                time.sleep(self.every)
        finally:
            for s in [any_sock, *socks.values()]:
                s.close(linger=0)
            ctx.term()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def tmp_ipc(tmp_path, name: str) -> str:
    path = os.path.join(str(tmp_path), name)
    return f"ipc://{path}"
