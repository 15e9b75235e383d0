"""The Manager process's Prometheus metrics (docs/architecture.md, "Metrics").

Counters and histograms are module-level objects in this process's REGISTRY, updated where the
numbers happen (`metrics.placements.inc()` in placement.py, the Store round trip in storage.py).
Gauges of state (tasks by state, workers, services) are read at scrape time by ManagerState on
the Manager's loop thread (server.LoopSnapshot, shared by the scrapes of the same second): tasks
are not walked then, their counts are kept as they change (cube/manager/tally.py).
`install(manager)` hooks one Manager in (its message counters, its task watcher, its state).
"""
from __future__ import annotations

import collections
import time
from typing import Any, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from cube.messages import events as events_msg
from cube.model.state import State
from cube.observability import traffic
from cube.observability.server import LoopSnapshot

REGISTRY = CollectorRegistry()

# ---- placement ------------------------------------------------------------------------------------
placements = Counter("cube_placements", "Tasks assigned to a worker (each attempt)", registry=REGISTRY)
placement_failures = Counter(
    "cube_placement_failures",
    "Placement attempts that did not assign the task, by kind of reason (one per task per pass)",
    ["reason"], registry=REGISTRY)
# The kinds, a fixed set: the reason texts quote numbers and names, which must not become labels.
NO_WORKER, CPU, MEMORY, DISK, RESOURCES, PORTS = "no_worker", "cpu", "memory", "disk", "resources", "ports"
WORKER_GONE, SCHEDULER_UNAVAILABLE, STORE, OTHER = "worker_gone", "scheduler_unavailable", "store", "other"
REASONS = (NO_WORKER, CPU, MEMORY, DISK, RESOURCES, PORTS, WORKER_GONE, SCHEDULER_UNAVAILABLE, STORE, OTHER)
for _reason in REASONS:
    placement_failures.labels(_reason)  # every series exists from the start, at 0


def reason_kind(reason: str) -> str:
    """The kind of a Scheduler's "fits nowhere" reason (cube/scheduling/algorithms.py, unplaceable)."""
    text = reason or ""
    if text.startswith("no live worker"):
        return NO_WORKER
    if text.startswith("no worker has host port"):
        return PORTS
    if " at once" in text:
        return RESOURCES
    for kind, said in ((CPU, " cpu free"), (MEMORY, " of memory free"), (DISK, " of disk free")):
        if said in text:
            return kind
    return OTHER


def placement_failed(kind: str, n: int = 1) -> None:
    placement_failures.labels(kind if kind in REASONS else OTHER).inc(n)


# ---- latencies ------------------------------------------------------------------------------------
task_start_seconds = Histogram(
    "cube_task_start_seconds", "From a task's submission to its first report of Running",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY)
store_commit_seconds = Histogram(
    "cube_store_commit_seconds",
    "A Store write (put, delete or batch) as the Manager sees it: request sent to answer received",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=REGISTRY)
store_unanswered = Counter("cube_store_writes_unanswered", "Store writes that got no answer in time",
                           registry=REGISTRY)

# ---- messages and events --------------------------------------------------------------------------
messages = traffic.message_counters(REGISTRY)
events_published = Counter("cube_events_published", "Events published on the events socket, by type "
                           "(not its heartbeats: cube_messages_sent_total{socket=\"events\",type=\"events.heartbeat\"})",
                           ["type"], registry=REGISTRY)


class StartWatch:
    """A TaskBook watcher timing submission -> first Running. It remembers only the tasks that
    have not run yet (started_at unset), so it holds no more than the Pending ones."""

    def __init__(self, clock: Any = time.time):
        self.clock = clock
        self.waiting: set[str] = set()

    def __call__(self, task_id: str, task: Any) -> None:
        if task is None:
            self.waiting.discard(task_id)
        elif task.state == State.RUNNING:
            if task_id in self.waiting:
                self.waiting.discard(task_id)
                task_start_seconds.observe(max(0.0, self.clock() - task.created_at))
        elif task.state in (State.PENDING, State.SCHEDULED) and not task.started_at:
            self.waiting.add(task_id)
        else:
            self.waiting.discard(task_id)


# ---- state, read at scrape time -------------------------------------------------------------------
WORKER_STATES = ("ready", "drained", "lost", "remembered")


def snapshot(manager: Any) -> dict[str, Any]:
    """What the state gauges report; runs on the Manager's loop thread (the owner of its state)."""
    from cube.manager.registry import DRAIN, LOST
    tasks = manager.tally.states()  # kept as tasks change (cube/manager/tally.py): no walk of every task
    workers: collections.Counter[str] = collections.Counter()
    for rec in manager.registry.workers.values():
        if rec.state == LOST:
            workers["lost"] += 1
        elif not rec.greeted:
            workers["remembered"] += 1
        else:
            workers["drained" if rec.availability == DRAIN else "ready"] += 1
    services = [(svc.name, svc.replicas, manager.tally.running(svc)) for svc in manager.services.services.values()]
    leadership = manager.leadership.view() if hasattr(manager, "leadership") else {"role": "leader", "term": 0}
    return {"tasks": tasks, "workers": workers, "services": services, "loading": manager.loading,
            "leader": leadership.get("role") == "leader", "term": int(leadership.get("term") or 0)}


class ManagerState:
    """A custom collector: the gauges derived from the Manager's state, from one snapshot."""

    def __init__(self, snap: LoopSnapshot):
        self.snap = snap

    def collect(self) -> Iterable[Any]:
        s = self.snap.get()
        if s is None:  # the loop never answered yet: no state to report, rather than zeros
            return
        yield from families(s)


def families(s: dict[str, Any]) -> Iterable[Any]:
    tasks = GaugeMetricFamily("cube_tasks", "Tasks the manager keeps, by state", labels=["state"])
    for state in State:
        tasks.add_metric([state.value], s["tasks"].get(state.value, 0))
    yield tasks
    workers = GaugeMetricFamily("cube_workers", "Workers by state (drained: ready, taking no new work; "
                                "remembered: known from the Store, no hello since a manager restart)",
                                labels=["state"])
    for state in WORKER_STATES:
        workers.add_metric([state], s["workers"].get(state, 0))
    yield workers
    yield GaugeMetricFamily("cube_services", "Services", value=len(s["services"]))
    desired = GaugeMetricFamily("cube_service_replicas_desired", "Replicas a service asks for",
                                labels=["service"])
    running = GaugeMetricFamily("cube_service_replicas_running",
                                "Replicas of a service's current version Running in their slots", labels=["service"])
    for name, want, have in s["services"]:
        desired.add_metric([name], want)
        running.add_metric([name], have)
    yield desired
    yield running
    yield GaugeMetricFamily("cube_manager_loading", "1 while the manager loads its state from the Store",
                            value=1 if s["loading"] else 0)
    yield GaugeMetricFamily("cube_manager_leader", "1 while this manager leads (always, without etcd); a follower's "
                            "other gauges are not the cluster's", value=1 if s.get("leader", True) else 0)
    yield GaugeMetricFamily("cube_manager_term", "The leader's term this manager knows (0 without etcd)",
                            value=s.get("term", 0))


class Installed:
    """What `install` hooked in, undone by `close()` (a test's manager, or a stopping one)."""

    def __init__(self, manager: Any, collector: ManagerState):
        self.manager, self.collector = manager, collector
        self.server: Any = None  # server.Server when exported over HTTP

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.manager.traffic = None
        if self.manager.start_watch in self.manager.book.watchers:
            self.manager.book.watchers.remove(self.manager.start_watch)
        REGISTRY.unregister(self.collector)


def install(manager: Any) -> Installed:
    """Hook `manager` into this process's metrics: its messages are counted, its task starts
    timed, its state read at scrape time. One manager at a time per process."""
    sockets = {manager.api: "api", manager.workers_sock: "workers", manager.events: "events",
               manager.store_sock: "store", manager.sched_sock: "scheduler"}
    manager.traffic = traffic.Traffic(messages, lambda sock: sockets.get(sock, traffic.OTHER), manager.HANDLERS,
                                      also={"events": events_published}, not_also={events_msg.HEARTBEAT})
    manager.start_watch = StartWatch()
    manager.book.watchers.append(manager.start_watch)
    collector = ManagerState(LoopSnapshot(manager.loop, lambda: snapshot(manager)))
    REGISTRY.register(collector)
    return Installed(manager, collector)


def export(manager: Any) -> Installed | None:
    """`install` and serve REGISTRY at the manager's --prometheus-host/--prometheus-port; None
    when the port is 0 or cannot be served (nothing is counted then either)."""
    from cube.observability.server import serve
    config = manager.config
    if not config.prometheus_port:
        return None
    installed = install(manager)
    installed.server = serve(REGISTRY, config.prometheus_host, config.prometheus_port, "manager")
    if installed.server is None:  # not served (logged): nothing to count for
        installed.close()
        return None
    return installed
