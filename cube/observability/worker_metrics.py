"""A Worker process's Prometheus metrics (docs/architecture.md, "Metrics").

Container starts, failures and the latency of every runtime (Docker) call are counted by
TimedRuntime, which wraps the worker's runtime: each call already runs in the worker's pool, off
the loop, and prometheus-client's objects are thread-safe. Containers by state come from the
worker's latest listing of its own containers (it lists before every start and every 10 s).
Tasks by desired state are read at scrape time on the loop thread (server.LoopSnapshot).
"""
from __future__ import annotations

import collections
import time
from typing import Any, Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from cube.observability import traffic
from cube.observability.server import LoopSnapshot

REGISTRY = CollectorRegistry()

container_starts = Counter("cube_worker_container_starts", "Containers created and started", registry=REGISTRY)
container_start_failures = Counter("cube_worker_container_start_failures",
                                   "Container starts that failed (image, command, port or daemon)", registry=REGISTRY)
TIMED = ("run", "stop", "inspect", "list", "logs")  # the runtime's calls, the `op` label's values
docker_seconds = Histogram("cube_worker_docker_seconds",
                           "Runtime (Docker API) calls, by operation: run is create + start + inspect",
                           ["op"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                           registry=REGISTRY)
for _op in TIMED:
    docker_seconds.labels(_op)
CONTAINER_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
containers = Gauge("cube_worker_containers", "This worker's containers by Docker state, as last listed",
                   ["state"], registry=REGISTRY)
for _state in (*CONTAINER_STATES, traffic.OTHER):
    containers.labels(_state)
retained_log_bytes = Gauge("cube_worker_retained_log_bytes",
                           "Bytes of output kept of containers already removed (the worker's LogStore)",
                           registry=REGISTRY)
messages = traffic.message_counters(REGISTRY)


def count_containers(listed: Iterable[Any]) -> None:
    seen = collections.Counter(c.state if c.state in CONTAINER_STATES else traffic.OTHER for c in listed)
    for state in (*CONTAINER_STATES, traffic.OTHER):
        containers.labels(state).set(seen.get(state, 0))


class TimedRuntime:
    """The worker's runtime, each call timed and starts counted; everything else passes through."""

    def __init__(self, runtime: Any):
        self.inner = runtime
        self._timers = {op: docker_seconds.labels(op) for op in TIMED}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, op: str, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(self.inner, op)(*args, **kw)
        finally:
            self._timers[op].observe(time.perf_counter() - start)

    def run(self, spec: Any) -> Any:
        try:
            info = self._timed("run", spec)
        except Exception:
            container_start_failures.inc()
            raise
        container_starts.inc()
        return info

    def stop(self, *args: Any, **kw: Any) -> Any:
        return self._timed("stop", *args, **kw)

    def inspect(self, *args: Any, **kw: Any) -> Any:
        return self._timed("inspect", *args, **kw)

    def list(self, worker: str | None = None) -> Any:
        listed = self._timed("list", worker)
        if worker is not None:  # this worker's own containers: the gauge's source
            count_containers(listed)
        return listed

    def logs(self, *args: Any, **kw: Any) -> Any:
        return self._timed("logs", *args, **kw)


def retained_bytes(worker: Any) -> int:
    """The hook for the retained logs' size: the worker's LogStore (cube/runtime/logstore.py,
    thread-safe) if it has one, else 0."""
    store = getattr(worker, "logstore", None)
    return int(store.bytes_used()) if store is not None else 0


def snapshot(worker: Any) -> dict[str, Any]:
    """On the worker's loop thread: its task slots by desired state, and whether it is registered."""
    return {"slots": collections.Counter(s.desired for s in worker.slots.values()),
            "registered": bool(worker.registered)}


class WorkerState:
    def __init__(self, snap: LoopSnapshot):
        self.snap = snap

    def collect(self) -> Iterable[Any]:
        s = self.snap.get()
        if s is None:
            return
        tasks = GaugeMetricFamily("cube_worker_tasks", "Tasks this worker holds, by desired state (running: "
                                  "it keeps a container for it; stopped: it is stopping it)", labels=["desired"])
        for desired in ("running", "stopped"):
            tasks.add_metric([desired], s["slots"].get(desired, 0))
        yield tasks
        yield GaugeMetricFamily("cube_worker_registered", "1 while the manager has accepted this worker's hello",
                                value=1 if s["registered"] else 0)


class Installed:
    def __init__(self, worker: Any, collector: WorkerState):
        self.worker, self.collector = worker, collector
        self.server: Any = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.worker.traffic = None
        if isinstance(self.worker.runtime, TimedRuntime):
            self.worker.runtime = self.worker.runtime.inner
        retained_log_bytes.set_function(lambda: 0)
        REGISTRY.unregister(self.collector)


def install(worker: Any) -> Installed:
    """Hook `worker` into this process's metrics. One worker at a time per process."""
    def label(sock: Any) -> str:
        if sock is worker.link.sock:
            return "manager"
        return "metrics" if sock is worker.metrics_sock else traffic.OTHER
    worker.traffic = traffic.Traffic(messages, label, worker.HANDLERS)
    worker.runtime = TimedRuntime(worker.runtime)
    retained_log_bytes.set_function(lambda: retained_bytes(worker))
    collector = WorkerState(LoopSnapshot(worker.loop, lambda: snapshot(worker)))
    REGISTRY.register(collector)
    return Installed(worker, collector)


def export(worker: Any, host: str, port: int) -> Installed | None:
    """`install` and serve REGISTRY at http://host:port/metrics; None when port is 0 or
    cannot be served (logged)."""
    from cube.observability.server import serve
    if not port:
        return None
    installed = install(worker)
    installed.server = serve(REGISTRY, host, port, f"worker {worker.name}")
    if installed.server is None:  # not served (logged): nothing to count for
        installed.close()
        return None
    return installed
