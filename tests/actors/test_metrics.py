"""Prometheus metrics of a Manager and a Worker actor (FakeRuntime) over real ZeroMQ, read the way a
scraper does: the registry's exposition text parsed by prometheus-client's own parser."""
from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cube.observability import manager_metrics, worker_metrics
from cube.runtime.fake import FakeRuntime
from tests.actors.helpers import wait_for


def scrape(registry) -> dict[tuple[str, tuple], float]:
    """Every sample by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def observed(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]))
    runtime = FakeRuntime()
    worker = actors.worker(manager.config, "w1", runtime, resync_interval=0.3)
    installed = [manager_metrics.install(manager), worker_metrics.install(worker)]
    api = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    wait_for(lambda: api.call("manager.ping")["workers"] == 1, what="the worker to register")
    yield manager, worker, api
    for i in installed:
        i.close()


def test_manager_and_worker_metrics_follow_the_cluster(observed):
    manager, worker, api = observed
    before_m, before_w = scrape(manager_metrics.REGISTRY), scrape(worker_metrics.REGISTRY)
    ids = [api.call("task.start", {"task": {"image": "img:1", "name": f"m{i}"}})["task"]["id"] for i in range(3)]
    wait_for(lambda: all(api.call("task.inspect", {"id": i})["task"]["state"] == "Running" for i in ids),
             what="3 tasks Running")
    m = wait_for(lambda: (s := scrape(manager_metrics.REGISTRY)) and
                 value(s, "cube_tasks", state="Running") == 3 and s, what="cube_tasks Running 3")
    assert value(m, "cube_tasks", state="Pending") == 0
    assert value(m, "cube_workers", state="ready") == 1 and value(m, "cube_workers", state="lost") == 0
    assert value(m, "cube_placements_total") - value(before_m, "cube_placements_total") >= 3
    assert (value(m, "cube_task_start_seconds_count") - value(before_m, "cube_task_start_seconds_count")) == 3
    assert value(m, "cube_store_commit_seconds_count") > value(before_m, "cube_store_commit_seconds_count")
    assert value(m, "cube_messages_received_total", socket="api", type="task.start") >= 3
    assert value(m, "cube_messages_received_total", socket="workers", type="task.status") >= 3
    assert value(m, "cube_messages_sent_total", socket="workers", type="worker.run") >= 3
    assert value(m, "cube_messages_sent_total", socket="store", type="store.batch") >= 3
    assert value(m, "cube_events_published_total", type="task.event") >= 9  # Pending, Scheduled, Running
    beat = wait_for(lambda: (s := scrape(manager_metrics.REGISTRY)) and
                    value(s, "cube_messages_sent_total", socket="events", type="events.heartbeat") and s,
                    what="an events heartbeat")
    assert ("cube_events_published_total", (("type", "events.heartbeat"),)) not in beat  # not an event
    assert value(m, "cube_manager_loading") == 0 and value(m, "cube_manager_leader") == 1

    w = wait_for(lambda: (s := scrape(worker_metrics.REGISTRY)) and
                 value(s, "cube_worker_containers", state="running") == 3 and s,
                 what="the worker's listing to show 3 running containers")
    assert value(w, "cube_worker_tasks", desired="running") == 3
    assert value(w, "cube_worker_registered") == 1
    assert value(w, "cube_worker_container_starts_total") - value(before_w, "cube_worker_container_starts_total") == 3
    assert (value(w, "cube_worker_docker_seconds_count", op="run")
            - value(before_w, "cube_worker_docker_seconds_count", op="run")) == 3
    assert value(w, "cube_messages_sent_total", socket="manager", type="task.status") >= 3
    assert value(w, "cube_messages_received_total", socket="manager", type="worker.run") >= 3
    assert value(w, "cube_worker_retained_log_bytes") >= 0


def test_a_task_that_fits_nowhere_counts_a_placement_failure_by_kind(observed):
    manager, worker, api = observed
    before = value(scrape(manager_metrics.REGISTRY), "cube_placement_failures_total", reason="cpu")
    api.call("task.start", {"task": {"image": "img:1", "name": "huge", "cpu": 64}})
    wait_for(lambda: value(scrape(manager_metrics.REGISTRY), "cube_placement_failures_total", reason="cpu") > before,
             what="a placement failure for cpu")
    # the state gauges come from a snapshot up to a second old (shared by the scrapes of that second)
    s = wait_for(lambda: (s := scrape(manager_metrics.REGISTRY)) and value(s, "cube_tasks", state="Pending") == 1
                 and s, what="cube_tasks Pending 1")
    # the reason texts quote numbers and names: only the fixed kinds are labels
    assert {dict(k[1])["reason"] for k in s if k[0] == "cube_placement_failures_total"} == set(manager_metrics.REASONS)


def test_unknown_message_types_are_counted_as_other(observed, actors):
    manager, worker, api = observed
    c = actors.client(f"tcp://127.0.0.1:{manager.config.api_port}")
    for i in range(5):
        with pytest.raises(Exception):
            c.call(f"made.up.{i}", {})
    s = scrape(manager_metrics.REGISTRY)
    assert value(s, "cube_messages_refused_total", socket="api", type="other") >= 5
    assert not any("made.up" in dict(k[1]).get("type", "") for k in s)
