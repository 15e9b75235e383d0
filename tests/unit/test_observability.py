"""The metrics' parts alone: reason kinds from real Scheduler reasons, bounded message labels,
submit->Running timing, the state gauges from a snapshot, the loop snapshot's fallback, the
runtime wrapper's counts, and the HTTP endpoint's on/off."""
from __future__ import annotations

import collections
import threading
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cube.harness import free_ports
from cube.model.state import State
from cube.observability import manager_metrics as mm
from cube.observability import server, traffic
from cube.observability import worker_metrics as wm
from cube.runtime.base import ContainerSpec, RuntimeFailure
from cube.runtime.fake import FakeRuntime
from cube.scheduling import ClusterView, Demand
from cube.wire.loop import Loop
from tests.support import wait_for
from tests.unit.scheduling_samples import GiB, sample


def samples(registry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_reason_kinds_of_the_schedulers_own_reasons():
    view = ClusterView()
    assert mm.reason_kind(view.place("t", Demand(cpu=1.0), now=0).reason) == mm.NO_WORKER
    view.update(sample("w1", cpus=4.0, memory=GiB), now=0)
    view.update(sample("w2", cpus=1.0, memory=8 * GiB), now=0)
    assert mm.reason_kind(view.place("t", Demand(cpu=8.0), now=0).reason) == mm.CPU
    assert mm.reason_kind(view.place("t", Demand(memory=64 * GiB), now=0).reason) == mm.MEMORY
    assert mm.reason_kind(view.place("t", Demand(disk=1 << 60), now=0).reason) == mm.DISK
    assert mm.reason_kind(view.place("t", Demand(cpu=2.0, memory=4 * GiB), now=0).reason) == mm.RESOURCES
    assert mm.reason_kind("no worker has host port 8081/tcp free: host port 8081/tcp is in use on w1") == mm.PORTS
    assert mm.reason_kind("something new") == mm.OTHER and mm.reason_kind("") == mm.OTHER


def test_placement_failures_take_only_the_fixed_kinds():
    before = samples(mm.REGISTRY)
    mm.placement_failed("no worker has 4.0 cpu free on w-123")  # a text, not a kind: counted as other
    mm.placement_failed(mm.CPU, 2)
    after = samples(mm.REGISTRY)
    key = "cube_placement_failures_total"
    assert after[(key, (("reason", "other"),))] - before[(key, (("reason", "other"),))] == 1
    assert after[(key, (("reason", "cpu"),))] - before[(key, (("reason", "cpu"),))] == 2
    assert {dict(k[1])["reason"] for k in after if k[0] == key} == set(mm.REASONS)


def test_traffic_labels_are_bounded_and_children_cached():
    registry = CollectorRegistry()
    counters = traffic.message_counters(registry)
    events = __import__("prometheus_client").Counter("events", "e", ["type"], registry=registry)
    a, b = object(), object()
    t = traffic.Traffic(counters, {a: "api", b: "events"}.get, ["task.start"], also={"events": events},
                        not_also={"events.heartbeat"})
    for i in range(50):
        t.received(a, f"junk.{i}")  # a peer cannot mint series
        t.refused(a, f"junk.{i}")
    t.received(a, "task.start")
    t.received(a, "ok")
    t.sent(b, "task.event")
    t.sent(b, "task.event")
    t.sent(b, "events.heartbeat")  # a message on the events socket, not an event
    t.dropped(a, "error")
    s = samples(registry)
    assert s[("cube_messages_received_total", (("socket", "api"), ("type", "other")))] == 50
    assert s[("cube_messages_refused_total", (("socket", "api"), ("type", "other")))] == 50
    assert s[("cube_messages_received_total", (("socket", "api"), ("type", "task.start")))] == 1
    assert s[("cube_messages_received_total", (("socket", "api"), ("type", "ok")))] == 1
    assert s[("cube_messages_sent_total", (("socket", "events"), ("type", "task.event")))] == 2
    assert s[("events_total", (("type", "task.event"),))] == 2
    assert s[("cube_messages_sent_total", (("socket", "events"), ("type", "events.heartbeat")))] == 1
    assert ("events_total", (("type", "events.heartbeat"),)) not in s
    assert s[("cube_messages_dropped_total", (("socket", "api"), ("type", "error")))] == 1
    assert len(t._children) == 7


def test_start_watch_times_only_the_first_run():
    now = [1000.0]
    watch = mm.StartWatch(clock=lambda: now[0])
    before = samples(mm.REGISTRY)[("cube_task_start_seconds_count", ())]

    def task(state, started_at=0.0):
        return SimpleNamespace(state=state, started_at=started_at, created_at=990.0)
    watch("a", task(State.PENDING))
    watch("a", task(State.SCHEDULED))
    watch("a", task(State.RUNNING))  # 10 s after its submission
    watch("a", task(State.RUNNING, 1000.0))  # a later report of the same run
    watch("a", task(State.PENDING, 1000.0))  # restarted: it ran before, not timed again
    watch("a", task(State.RUNNING, 1001.0))
    watch("b", task(State.PENDING))
    watch("b", None)  # pruned before it ran
    watch("c", task(State.PENDING))
    watch("c", task(State.COMPLETED))  # stopped before it ran
    s = samples(mm.REGISTRY)
    assert s[("cube_task_start_seconds_count", ())] - before == 1
    assert watch.waiting == set()


def test_state_families_name_every_state():
    snap = {"tasks": {"Running": 3, "Pending": 1}, "workers": collections.Counter(ready=2, lost=1),
            "services": [("web", 3, 2)], "loading": False, "leader": False, "term": 7}
    out = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in mm.families(snap) for s in f.samples}
    assert out[("cube_tasks", (("state", "Running"),))] == 3
    assert out[("cube_tasks", (("state", "Failed"),))] == 0
    assert out[("cube_workers", (("state", "ready"),))] == 2 and out[("cube_workers", (("state", "drained"),))] == 0
    assert out[("cube_services", ())] == 1
    assert out[("cube_service_replicas_desired", (("service", "web"),))] == 3
    assert out[("cube_service_replicas_running", (("service", "web"),))] == 2
    assert out[("cube_manager_loading", ())] == 0
    assert out[("cube_manager_leader", ())] == 0 and out[("cube_manager_term", ())] == 7


def test_loop_snapshot_is_computed_on_the_loop_and_falls_back_when_it_is_busy():
    loop = Loop("snap")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        where = []
        snap = server.LoopSnapshot(loop, lambda: where.append(threading.current_thread()) or len(where), wait=2.0,
                                   max_age=0)
        assert snap.get() == 1 and where == [thread]
        assert snap.get() == 2
        release = threading.Event()
        loop.call_soon_threadsafe(lambda: release.wait(5))  # the loop is busy
        snap.wait = 0.1
        assert snap.get() == 2  # the previous snapshot, not a wait as long as the loop's
        assert snap.get() == 2  # still busy: the request already queued is not queued again
        release.set()
        wait_for(lambda: snap.computed == 3, what="the queued snapshot to be computed once")
        snap.compute = lambda: 1 / 0  # a broken gauge: logged, the previous snapshot served
        snap.wait = 2.0
        assert snap.get() == 3 and thread.is_alive()
    finally:
        loop.stop()
        thread.join(5)
        loop.drain()
        loop.close()


def test_concurrent_scrapes_share_one_snapshot_and_a_fresh_one_serves_a_second():
    """However many scrapers there are, the loop computes at most one snapshot a second."""
    loop = Loop("snap")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    now = [100.0]
    try:
        release = threading.Event()
        snap = server.LoopSnapshot(loop, lambda: release.wait(5) and snap.computed + 1, wait=5.0,
                                   clock=lambda: now[0])
        got: list = []
        scrapers = [threading.Thread(target=lambda: got.append(snap.get())) for _ in range(8)]
        for t in scrapers:
            t.start()
        wait_for(lambda: snap._asked is not None, what="the first scrape to ask the loop")
        release.set()
        for t in scrapers:
            t.join(10)
        assert got == [1] * 8 and snap.computed == 1
        now[0] += 0.9
        assert snap.get() == 1 and snap.computed == 1  # under a second old: served as it is
        now[0] += 0.2
        assert snap.get() == 2 and snap.computed == 2
    finally:
        loop.stop()
        thread.join(5)
        loop.drain()
        loop.close()


def test_timed_runtime_counts_starts_failures_and_containers():
    fake = FakeRuntime(missing_images={"ghost:1"})
    rt = wm.TimedRuntime(fake)
    before = samples(wm.REGISTRY)

    def spec(task_id, image="img:1"):
        return ContainerSpec(task_id=task_id, attempt=1, name=task_id, image=image, command=None, env={},
                             cpu=0.0, memory=0, ports=[], labels={"cube.worker": "w1"})
    rt.run(spec("a"))
    rt.run(spec("b"))
    with pytest.raises(RuntimeFailure):
        rt.run(spec("c", "ghost:1"))
    rt.list("w1")
    s = samples(wm.REGISTRY)
    assert s[("cube_worker_container_starts_total", ())] - before[("cube_worker_container_starts_total", ())] == 2
    assert (s[("cube_worker_container_start_failures_total", ())]
            - before[("cube_worker_container_start_failures_total", ())]) == 1
    run = ("cube_worker_docker_seconds_count", (("op", "run"),))
    assert s[run] - before[run] == 3
    assert s[("cube_worker_containers", (("state", "running"),))] == 2
    assert rt.events == fake.events and rt.missing_images is fake.missing_images  # the rest passes through


def test_serve_binds_where_told_and_port_zero_serves_nothing(caplog):
    registry = CollectorRegistry()
    __import__("prometheus_client").Gauge("cube_probe", "a probe", registry=registry).set(7)
    assert server.serve(registry, "127.0.0.1", 0, "test") is None
    port = free_ports(1)[0]
    running = server.serve(registry, "127.0.0.1", port, "test")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert "cube_probe 7.0" in r.read().decode()
        caplog.clear()
        assert server.serve(registry, "127.0.0.1", port, "test") is None  # taken: logged, not fatal
        error, = [r for r in caplog.records if r.levelname == "ERROR"]
        said = error.getMessage()
        assert f"NO Prometheus metrics: cannot serve them on 127.0.0.1:{port}" in said and "--prometheus-port" in said
        assert not any("Prometheus metrics at" in r.getMessage() for r in caplog.records)  # no address: not served
    finally:
        running.close()
