"""FakeRuntime: containers simulated in memory, with Docker's semantics but none of its cost.

Unit tests drive failures through kill() and remove_behind_back(); benchmarks run hundreds of
simulated workers in one process. Everything is guarded by one lock, so any thread may call in.
"""
from __future__ import annotations

import itertools
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from cube.model import ports as port_spec
from cube.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_TASK,
    LABEL_WORKER,
    ContainerInfo,
    ContainerSpec,
    PortConflict,
    RuntimeEvent,
    RuntimeFailure,
)
from cube.runtime import logstore
from cube.runtime.docker import container_name  # same names as Docker, so retries behave alike
from cube.runtime.logstore import Record

HISTORY = 1000  # events kept for events(since=...), like the daemon's own event buffer


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


@dataclass
class _Container:
    info: ContainerInfo
    name: str
    spec: ContainerSpec
    labels: dict[str, str]
    logs: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # the same lines, timestamped


def _copy(info: ContainerInfo) -> ContainerInfo:
    """A caller's own copy (dataclasses.replace re-runs __init__: slow at a benchmark's rates)."""
    c = object.__new__(ContainerInfo)
    c.__dict__.update(info.__dict__)
    c.host_ports = dict(info.host_ports)
    return c


class _StopWatch:
    """One thread for every event stream of this process: it wakes a stream whose `stop` was set
    (a None in its queue), so thousands of idle streams (bench/scale.py) cost one poll, not one
    each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[tuple[threading.Event, queue.SimpleQueue[Any]]] = []
        self._thread: threading.Thread | None = None

    def watch(self, stop: threading.Event, q: queue.SimpleQueue[Any]) -> None:
        with self._lock:
            self._streams.append((stop, q))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fake-runtime-stops", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            stopped, running = [], []
            with self._lock:
                for stream in self._streams:  # one look each: a stop set meanwhile waits for the next round
                    (stopped if stream[0].is_set() else running).append(stream)
                self._streams = running
            for _, q in stopped:
                q.put(None)


_STOPS = _StopWatch()


class FakeRuntime:
    """An in-memory Runtime. `missing_images` makes run() fail as an unpullable image does."""

    def __init__(self, missing_images: Iterable[str] = (), port_base: int = 30000) -> None:
        self.missing_images = set(missing_images)
        self._lock = threading.Lock()
        self._containers: dict[str, _Container] = {}
        self._ports = itertools.count(port_base)
        self._history: deque[RuntimeEvent] = deque(maxlen=HISTORY)
        self._subscribers: list[queue.SimpleQueue[RuntimeEvent]] = []

    # -- Runtime interface -----------------------------------------------------------------

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.image in self.missing_images:
            raise RuntimeFailure(f"image '{spec.image}' is not present locally and could not be pulled: "
                                 "pull access denied (simulated)")
        name = container_name(spec)
        with self._lock:
            for old in [c for c in self._containers.values() if c.name == name]:
                if old.info.task_id == spec.task_id and old.info.attempt == spec.attempt and old.info.running:
                    return _copy(old.info)  # idempotent retry of the same attempt
                self._remove(old.info.container_id)
            labels = {**spec.labels, LABEL_TASK: spec.task_id, LABEL_ATTEMPT: str(spec.attempt)}
            info = ContainerInfo(
                container_id=secrets.token_hex(32),
                task_id=spec.task_id,
                attempt=spec.attempt,
                state="running",
                host_ports=self._publish(spec),
                started_at=_now_iso(),
                worker=labels.get(LABEL_WORKER, ""),
            )
            self._containers[info.container_id] = _Container(info, name, spec, labels)
            self._emit("start", info)
            return _copy(info)

    def _publish(self, spec: ContainerSpec) -> dict[str, int]:
        """Host ports as Docker would give them: a fixed one is refused while another running
        container of this runtime holds it (one runtime is one host's Docker)."""
        mappings = [port_spec.parse(p) for p in spec.ports]
        held = {(proto, int(hp)) for c in self._containers.values() if c.info.running
                for key, hp in c.info.host_ports.items() for proto in [key.partition("/")[2]]}
        taken = [m.host_key for m in mappings if m.host and (m.proto, m.host) in held]
        if taken:
            raise PortConflict(f"host port {', '.join(taken)} is taken on this worker's host: "
                               f"port is already allocated (simulated)")
        return {m.key: m.host or next(self._ports) for m in mappings}

    def stop(self, container_id: str, timeout: float = 5.0,
             before_remove: Callable[[], None] | None = None) -> None:
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                return
            if c.info.running:
                self._exit(c, 143)  # SIGTERM honoured
        if before_remove is not None:  # outside the lock: it reads this container's output
            before_remove()
        with self._lock:
            if container_id in self._containers:
                self._remove(container_id)

    def inspect(self, container_id: str) -> ContainerInfo | None:
        with self._lock:
            c = self._containers.get(container_id)
            return _copy(c.info) if c else None

    def list(self, worker: str | None = None) -> list[ContainerInfo]:
        with self._lock:
            return [_copy(c.info) for c in self._containers.values()
                    if worker is None or c.labels.get(LABEL_WORKER) == worker]

    def logs(self, container_id: str, tail: int = 100) -> str:
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                raise RuntimeFailure(f"container {container_id[:12]} no longer exists")
            lines = c.logs[-tail:] if tail > 0 else []
            return "".join(line + "\n" for line in lines)

    def output(self, container_id: str, tail: int | None = None, since: int = 0) -> Iterator[Record]:
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                raise RuntimeFailure(f"container {container_id[:12]} no longer exists")
            records = list(c.records)
        if since:
            return iter([r for r in records if r.ts >= since])
        return iter(records if tail is None else logstore.last(records, tail))

    def events(self, stop: threading.Event, since: float | None = None) -> Iterator[RuntimeEvent]:
        """Events emitted after subscribing (or replayed from `since`) until `stop` is set."""
        q: queue.SimpleQueue[RuntimeEvent | None] = queue.SimpleQueue()
        with self._lock:
            if since is not None:
                for ev in self._history:
                    if ev.time >= since:
                        q.put(ev)
            self._subscribers.append(q)
        _STOPS.watch(stop, q)
        try:
            while not stop.is_set():
                event = q.get()  # blocks without polling: a stop arrives as None (_StopWatch)
                if event is not None:
                    yield event
        finally:
            with self._lock:
                self._subscribers.remove(q)

    # -- test helpers ----------------------------------------------------------------------

    def kill(self, container_id: str, exit_code: int = 137, oom: bool = False, silent: bool = False) -> None:
        """The process exits on its own (crash, OOM kill): the container stays, exited. `silent`:
        the event stream misses it (as Docker's can across a reconnect)."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is None or not c.info.running:
                return
            if silent:
                c.info.state, c.info.exit_code, c.info.finished_at = "exited", exit_code, _now_iso()
                return
            if oom:
                c.info.error = "killed: out of memory"
                self._emit("oom", c.info)
            self._exit(c, exit_code)

    def remove_behind_back(self, container_id: str) -> None:
        """Someone ran `docker rm -f`: a running container dies first, then is destroyed."""
        with self._lock:
            if container_id in self._containers:
                self._remove(container_id, exit_code=137)

    def write_log(self, container_id: str, line: str) -> None:
        """Pretend the container printed a line."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is not None:
                c.logs.append(line)
                ts = max(time.time_ns(), c.records[-1].ts if c.records else 0)  # never before the last
                c.records.append(Record(ts, line.encode() + b"\n"))

    # -- internals (lock held) -------------------------------------------------------------

    def _exit(self, c: _Container, exit_code: int) -> None:
        c.info.state, c.info.exit_code, c.info.finished_at = "exited", exit_code, _now_iso()
        self._emit("die", c.info, exit_code)

    def _remove(self, container_id: str, exit_code: int = 137) -> None:
        c = self._containers.pop(container_id)
        if c.info.running:
            self._exit(c, exit_code)
        self._emit("destroy", c.info)

    def _emit(self, kind: str, info: ContainerInfo, exit_code: int | None = None) -> None:
        event = RuntimeEvent(kind=kind, task_id=info.task_id, container_id=info.container_id,
                             attempt=info.attempt, exit_code=exit_code, time=time.time())
        self._history.append(event)
        for q in self._subscribers:
            q.put(event)
