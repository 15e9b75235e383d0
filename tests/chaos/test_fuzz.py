"""Fuzzing `Actor.receive` of real actors with generated frames: nothing may escape, nothing may crash.

The actors are real (StoreActor over a MemoryStore, SchedulerActor, Manager (whose Store never answers),
Worker over a FakeRuntime) with real sockets on free loopback ports, but their loops never run:
each generated input goes straight to `receive(sock, frames, accept, replies)` exactly as
`Actor.serve` would call it for that socket. Inputs are random bytes, random msgpack values, and
envelope-shaped maps of every registered message type with random bodies or bodies shaped like
the type's schema (so validation passes and the handler itself is exercised).

Besides "no exception escapes", a handler that fails on a body its schema accepted is a bug
(the base class turns it into an `internal` error reply): that is checked too.

The short run is part of the normal suite. The long run (>= 100,000 inputs) is opt-in:
    CUBE_FUZZ_LONG=1 [CUBE_FUZZ_EXAMPLES=100000] .venv/bin/python -m pytest tests/chaos/test_fuzz.py -s
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cube.messages  # noqa: F401  (declares every schema)
from cube.manager import Manager
from cube.actors.metrics import Capacity
from cube.actors.scheduler import SchedulerActor
from cube.actors.store import StoreActor
from cube.actors.worker import Worker, WorkerConfig
from cube.config import ManagerConfig
from cube.harness import free_ports
from cube.messages import node as node_msg
from cube.messages import sched as sched_msg
from cube.messages import store as store_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.runtime.fake import FakeRuntime
from cube.store.memory import MemoryStore
from cube.wire import schema
from cube.wire.actor import Actor
from cube.wire.envelope import VERSION

LONG = os.environ.get("CUBE_FUZZ_LONG", "") not in ("", "0")
LONG_EXAMPLES = int(os.environ.get("CUBE_FUZZ_EXAMPLES", "100000"))
IDENTITIES = [b"w1", b"w2", b"fuzz", b"\x00\x01\x02"]  # w1/w2 may also say hello, so deeper paths open


@dataclass
class Target:
    """One socket of one actor, with what `serve` would pass for it."""

    name: str
    actor: Actor
    sock: zmq.Socket
    accept: set[str] | None
    replies: bool = True

    @property
    def routed(self) -> bool:
        return self.sock.type == zmq.ROUTER


class LastFailure(logging.Handler):
    """Keeps the traceback of the last handler failure, for the assertion message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.text = record.getMessage() + "\n" + "".join(traceback.format_exception(*record.exc_info))


class Rig:
    def __init__(self, tmp: str):
        ports = free_ports(12)  # one call: distinct ports
        tcp = [f"tcp://127.0.0.1:{p}" for p in ports[:8]]
        self.store = StoreActor(MemoryStore(), tcp[0])
        self.scheduler = SchedulerActor(tcp[1], tcp[2], algorithm="epvm", stale_after=5.0)
        api, workers, events, metrics = ports[8:]
        config = ManagerConfig(host="127.0.0.1", api_port=api, worker_port=workers, metrics_port=metrics,
                               events_port=events, data_dir=os.path.join(tmp, "manager"), store="memory",
                               store_endpoint=tcp[5], scheduler_endpoint=tcp[3], grace=5.0,
                               insecure=True)  # fuzz the handlers; the gate in front has its own tests
        self.manager = Manager(config)  # its Store and Scheduler never answer: requests just wait
        self.manager.loading = False
        wconf = WorkerConfig(manager=tcp[4].removeprefix("tcp://"), name="w1", address="127.0.0.1",
                             data_dir=os.path.join(tmp, "worker"), stop_timeout=0.1, insecure=True)
        os.makedirs(wconf.data_dir, exist_ok=True)
        self.runtime = FakeRuntime()
        self.worker = Worker(wconf, self.runtime, MemoryStore(), Capacity(2.0, 1 << 30, 1 << 34))
        self.targets = [
            Target("store", self.store, self.store.sock, store_msg.ALL),
            Target("scheduler", self.scheduler, self.scheduler.sock, sched_msg.ALL),
            Target("scheduler-metrics", self.scheduler, self.scheduler.metrics, {node_msg.METRICS}, replies=False),
            Target("manager-api", self.manager, self.manager.api, task_msg.API | node_msg.API),
            Target("manager-workers", self.manager, self.manager.workers_sock, worker_msg.FROM_WORKER),
            Target("worker", self.worker, self.worker.manager_sock, worker_msg.TO_WORKER),
        ]
        self.inputs = 0
        self.failures = LastFailure()
        logging.getLogger("cube.wire.actor").addHandler(self.failures)
        self.per_target: dict[str, int] = {t.name: 0 for t in self.targets}

    def feed(self, target: Target, frames: list[bytes]) -> None:
        self.inputs += 1
        self.per_target[target.name] += 1
        target.actor.receive(target.sock, frames, target.accept, target.replies)  # must never raise
        if len(self.manager.book) > 2000:  # keep a long run linear: forget the tasks it made
            self.manager.book.tasks.clear()

    def last_failure(self) -> str:
        return self.failures.text

    def internal_errors(self) -> int:
        return sum(a.stats["handler_errors"] for a in (self.store, self.scheduler, self.manager, self.worker))

    def close(self) -> None:
        for actor in (self.store, self.scheduler, self.manager, self.worker):
            getattr(actor, "_stop_events", None) and actor._stop_events.set()
            actor.loop.drain()
            actor.loop.close()
            actor.loop.ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(str(tmp_path_factory.mktemp("fuzz")))
    ACCEPTS[:] = [tuple(sorted(t.accept or ())) for t in r.targets]
    quiet = logging.getLogger("cube")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every refusal logs a warning: at 100,000 inputs that is the cost
    yield r
    quiet.setLevel(level)
    r.close()


# ---- strategies ----------------------------------------------------------------------------------

ints = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)  # what msgpack can carry
scalars = (st.none() | st.booleans() | ints
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=10)
any_keys = st.dictionaries(st.one_of(st.text(max_size=8), ints, st.binary(max_size=8)), values, max_size=4)

SPEC_KEYS = ["id", "name", "image", "command", "env", "cpu", "memory", "disk", "ports", "restart", "health",
             "max_restarts", "Image", "ExposedPorts", "RestartPolicy", "state"]
task_like = st.dictionaries(st.sampled_from(SPEC_KEYS), values | st.text(max_size=20) | st.integers(-5, 10 ** 6),
                            max_size=8).map(lambda d: {**d, "image": d.get("image", "busybox")})


def of_type(kind: Any, items: Any = None) -> st.SearchStrategy:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    options = []
    for k in kinds:
        if k is str:
            options.append(st.text(max_size=70) | st.sampled_from(["w1", "w2", "tasks", "running", "exited",
                                                                    "removed", "failed", "stopped"]))
        elif k is bool:
            options.append(st.booleans())
        elif k is int:
            options.append(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1) | st.integers(-2, 5))
        elif k is float:
            options.append(st.floats(allow_nan=True, allow_infinity=True))
        elif k is list:
            inner = of_type(items) if items is not None else values
            options.append(st.lists(inner, max_size=4))
        elif k is dict:
            options.append(task_like | st.dictionaries(st.text(max_size=10), values, max_size=5))
        else:  # object: anything
            options.append(values)
    return st.one_of(options)


def schema_body(msg_type: str) -> st.SearchStrategy:
    fields = schema._REGISTRY.get(msg_type, {})  # noqa: SLF001  (the declared schemas are the oracle)
    parts = {name: st.one_of(st.just(None), of_type(f.types, f.items), values) if not f.required
             else of_type(f.types, f.items) for name, f in fields.items()}
    return st.fixed_dictionaries(parts)


TYPES = schema.known_types()
any_type = st.sampled_from(TYPES + ["ok", "error", "no.such.type", ""]) | st.text(max_size=20)


def envelope(msg_type: str, body: dict[str, Any], **fields: Any) -> bytes:
    env = {"v": VERSION, "id": "fuzz-1", "type": msg_type, "from": "w1", "ts": 1.0, "re": None, "body": body}
    env.update(fields)
    return msgpack.packb(env, use_bin_type=True)


@st.composite
def valid_envelopes(draw, accept: tuple[str, ...]) -> bytes:
    """Mostly a type this socket takes, with a body shaped by its schema: the handler runs."""
    msg_type = draw(st.sampled_from(accept) if accept and draw(st.integers(0, 9)) else any_type)
    if msg_type in TYPES and draw(st.integers(0, 4)):
        body = draw(schema_body(msg_type))
    else:
        body = draw(st.dictionaries(st.text(max_size=10), values, max_size=5))
    return envelope(msg_type, body, id=draw(st.text(min_size=1, max_size=12)),
                    **{"from": draw(st.sampled_from(["w1", "w2", "fuzz", ""]) | st.text(max_size=10))})


@st.composite
def broken_envelopes(draw, accept: tuple[str, ...]) -> bytes:
    """Envelope-shaped maps with fields of the wrong type or missing."""
    env = {"v": draw(st.sampled_from([VERSION, 2, "1", None, 1.0])),
           "id": draw(st.text(max_size=20) | ints), "type": draw(st.sampled_from(accept or ("x",)) | any_type),
           "from": draw(st.text(max_size=10) | ints | st.none()),
           "ts": draw(st.floats(allow_nan=True) | ints | st.text(max_size=4) | st.booleans()),
           "re": draw(st.none() | st.text(max_size=10) | ints),
           "body": draw(st.dictionaries(st.text(max_size=10), values, max_size=4) | values)}
    for key in draw(st.lists(st.sampled_from(list(env)), max_size=2)):
        env.pop(key, None)
    return msgpack.packb(env, use_bin_type=True)


def payloads(accept: tuple[str, ...]) -> st.SearchStrategy:
    return st.one_of(
        st.binary(max_size=300),
        values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
        any_keys.map(lambda v: msgpack.packb(v, use_bin_type=True)),
        broken_envelopes(accept),
        valid_envelopes(accept), valid_envelopes(accept), valid_envelopes(accept), valid_envelopes(accept),
    )


ACCEPTS: list[tuple[str, ...]] = []  # per target index, filled by the rig (sorted accept sets)


@st.composite
def inputs(draw, n_targets: int) -> tuple[int, list[bytes]]:
    index = draw(st.integers(0, n_targets - 1))
    extra = draw(st.lists(st.binary(max_size=16), max_size=2)) if not draw(st.integers(0, 3)) else []
    return index, [*extra, draw(payloads(ACCEPTS[index] if index < len(ACCEPTS) else ()))]


def frames_for(target: Target, frames: list[bytes], identity: bytes) -> list[bytes]:
    return [identity, *frames] if target.routed else frames


# ---- the runs -------------------------------------------------------------------------------------

QUICK = settings(max_examples=300, deadline=None, database=None, derandomize=False,
                 suppress_health_check=list(HealthCheck))


@QUICK
@given(inp=inputs(6), identity=st.sampled_from(IDENTITIES))
def test_no_frame_escapes_receive(rig, inp, identity):
    index, frames = inp
    target = rig.targets[index]
    before = rig.internal_errors()
    rig.feed(target, frames_for(target, frames, identity))
    assert rig.internal_errors() == before, f"a handler of {target.name} failed on a validated body: {frames!r}\n{rig.last_failure()}"


@pytest.mark.parametrize("index", range(6), ids=["store", "scheduler", "scheduler-metrics", "manager-api",
                                                 "manager-workers", "worker"])
def test_hello_then_garbage_keeps_each_actor_answering(rig, index):
    """A registered worker identity, then a few known-bad frames, then a real request still works."""
    target = rig.targets[index]
    for frames in ([b"\xc1"], [b""], [msgpack.packb([1, 2])], [b"x" * 100, b"y"]):
        rig.feed(target, frames_for(target, frames, b"w1"))
    assert target.actor.stats["received"] > 0


# ---- what fuzzing found, pinned down (each was an `internal` error from a handler) -------------------

def _frame(msg_type: str, body: dict[str, Any]) -> bytes:
    return envelope(msg_type, body, id="regression")


def test_absurd_metrics_sample_does_not_break_placement(rig):
    """A sample claiming 2^62 tasks made LIEB ** x overflow in every later sched.place (fixed in view.py)."""
    sample = {"name": "absurd", "address": "x", "ts": time.time(), "seq": 1, "cpus": 64.0, "memory": 1 << 36,
              "disk": 1 << 40, "cpu_usage": 0.0, "memory_total": 1 << 36, "memory_available": 1 << 36,
              "memory_used": 0, "memory_percent": 0.0, "disk_total": 1 << 40, "disk_free": 1 << 40,
              "disk_used": 0, "load_avg": [0.0, 0.0, 0.0], "task_count": 1 << 62,
              "reserved": {"cpu": 0.0, "memory": 0, "disk": 0}, "task_ids": []}
    metrics, place = rig.targets[2], rig.targets[1]
    before = rig.internal_errors()
    rig.feed(metrics, [node_msg.METRICS.encode(), _frame(node_msg.METRICS, sample)])
    rig.feed(place, [b"fuzz", _frame(sched_msg.PLACE, {"task_id": "t1", "cpu": 1, "memory": 0, "disk": 0})])
    assert rig.internal_errors() == before, rig.last_failure()
    table = rig.scheduler.view.table()
    assert not table.alive[table.names.index("absurd")], "a node with unscorable numbers must not be a candidate"


def test_nan_scores_do_not_break_placement(rig):
    """cpus = 1e-320 made 1/cpus inf and 0 * inf NaN: E-PVM scored NaN, pick() found no minimum."""
    sample = {"name": "tiny", "address": "x", "ts": 1.0, "seq": 1, "cpus": 1e-320, "memory": 1 << 30,
              "disk": 1 << 30, "cpu_usage": 0.1, "memory_total": 1 << 30, "memory_available": 1 << 29,
              "memory_used": 1 << 29, "memory_percent": 50.0, "disk_total": 1 << 30, "disk_free": 1 << 29,
              "disk_used": 1 << 29, "load_avg": [0.0, 0.0, 0.0], "task_count": 0,
              "reserved": {"cpu": 0.0, "memory": 0, "disk": 0}, "task_ids": []}
    before = rig.internal_errors()
    rig.feed(rig.targets[2], [node_msg.METRICS.encode(), _frame(node_msg.METRICS, sample)])
    rig.feed(rig.targets[1], [b"fuzz", _frame(sched_msg.PLACE, {"task_id": "t2", "cpu": 0.0, "memory": 3, "disk": 0})])
    assert rig.internal_errors() == before, rig.last_failure()


def test_nan_reserved_cpu_does_not_break_the_unplaceable_reason(rig):
    """reserved.cpu = NaN made free_cpu NaN; explaining why nothing fits then failed on round(NaN)."""
    sample = {"name": "nan-cpu", "address": "x", "ts": 1.0, "seq": 1, "cpus": 2.0, "memory": 1 << 30,
              "disk": 1 << 30, "cpu_usage": 0.1, "memory_total": 1 << 30, "memory_available": 1 << 29,
              "memory_used": 1 << 29, "memory_percent": 50.0, "disk_total": 1 << 30, "disk_free": 1 << 29,
              "disk_used": 1 << 29, "load_avg": [0.0, 0.0, 0.0], "task_count": 0,
              "reserved": {"cpu": float("nan"), "memory": 0, "disk": 0}, "task_ids": []}
    before = rig.internal_errors()
    rig.feed(rig.targets[2], [node_msg.METRICS.encode(), _frame(node_msg.METRICS, sample)])
    rig.feed(rig.targets[1], [b"fuzz", _frame(sched_msg.PLACE, {"task_id": "t3", "cpu": 512, "memory": 2, "disk": 2})])
    assert rig.internal_errors() == before, rig.last_failure()


def _sample(name: str, **over: Any) -> dict[str, Any]:
    sample = {"name": name, "address": "x", "ts": time.time(), "seq": 1, "cpus": 2.0, "memory": 1 << 30,
              "disk": 1 << 30, "cpu_usage": 0.1, "memory_total": 1 << 30, "memory_available": 1 << 29,
              "memory_used": 1 << 29, "memory_percent": 50.0, "disk_total": 1 << 30, "disk_free": 1 << 29,
              "disk_used": 1 << 29, "load_avg": [0.0, 0.0, 0.0], "task_count": 0,
              "reserved": {"cpu": 0.0, "memory": 0, "disk": 0}, "task_ids": []}
    sample.update(over)
    return sample


def test_a_huge_cpu_demand_is_explained_not_crashed_on(rig):
    """cpu = 1.8e308 fits nowhere; formatting the reason (round(x * 10)) overflowed."""
    rig.feed(rig.targets[2], [node_msg.METRICS.encode(), _frame(node_msg.METRICS, _sample("live-node"))])
    before = rig.internal_errors()
    rig.feed(rig.targets[1], [b"fuzz", _frame(sched_msg.PLACE, {"task_id": "t4", "cpu": 1.7976931348623157e308,
                                                                "memory": 1, "disk": 3})])
    assert rig.internal_errors() == before, rig.last_failure()


def test_task_id_the_worker_cannot_store_is_refused_cleanly(rig):
    """A NUL in a task id failed in the worker's store after the slot was created (fixed in worker.py)."""
    worker = rig.targets[5]
    before = rig.internal_errors()
    rig.feed(worker, [_frame(worker_msg.RUN, {"spec": {"task_id": "a\x00b", "name": "x", "image": "x"},
                                              "attempt": 1})])
    rig.feed(worker, [_frame(worker_msg.STOP, {"task_id": "c\x00d"})])
    assert rig.internal_errors() == before, rig.last_failure()
    assert "a\x00b" not in rig.worker.slots and "c\x00d" not in rig.worker.slots


@pytest.mark.skipif(not LONG, reason="long fuzz run: set CUBE_FUZZ_LONG=1 (and CUBE_FUZZ_EXAMPLES, default 100000)")
@pytest.mark.timeout(7200)
def test_long_fuzz_run(rig):
    start_inputs, t0 = rig.inputs, time.monotonic()
    errors_before = rig.internal_errors()

    @settings(max_examples=LONG_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(inp=inputs(6), identity=st.sampled_from(IDENTITIES))
    def run(inp, identity):
        index, frames = inp
        target = rig.targets[index]
        before = rig.internal_errors()
        rig.feed(target, frames_for(target, frames, identity))
        assert rig.internal_errors() == before, f"a handler of {target.name} failed on a validated body: {frames!r}\n{rig.last_failure()}"

    run()
    n, took = rig.inputs - start_inputs, time.monotonic() - t0
    print(f"\nlong fuzz run: {n} inputs in {took:.1f}s ({n / took:.0f}/s); "
          f"internal errors: {rig.internal_errors() - errors_before}; "
          f"per target: {rig.per_target}")
    handled = {k: v for a in (rig.store, rig.scheduler, rig.manager, rig.worker)
               for k, v in a.stats.items() if k.startswith("handled.")}
    print(f"reached a handler: {sum(handled.values())} ({', '.join(f'{k[8:]}={v}' for k, v in sorted(handled.items()))})")
    assert n >= LONG_EXAMPLES * 0.9, f"hypothesis stopped early: {n} of {LONG_EXAMPLES} inputs"
