"""The pace of workers' reports over real ZeroMQ (docs/architecture.md, "Pace"): a Manager allowed
2 reports a second, heartbeat 0.2 s and grace 2 s, with 3 workers, tells each to heartbeat every
1.5 s and to sample metrics at least as seldom; it waits 2 * 1.5 / 0.2 = 15 s before losing one.
The metrics samples say how often they come (the Scheduler's staleness follows them)."""
from __future__ import annotations

import time

import pytest
import zmq

from cube.actors.metrics import Capacity
from cube.actors.worker import Worker, WorkerConfig
from cube.config import ManagerConfig
from cube.runtime.fake import FakeRuntime
from cube.store.memory import MemoryStore
from cube.wire.envelope import decode
from tests.actors.helpers import GiB, free_ports, tcp, wait_for

HEARTBEAT, GRACE, MAX_REPORTS = 0.2, 2.0, 2.0
PACED = 3 / MAX_REPORTS  # 1.5 s between reports with 3 workers


def worker(actors, manager_config: ManagerConfig, name: str, metrics_interval: float) -> Worker:
    """A worker as `actors.worker` makes one, with its own metrics interval."""
    data_dir = actors.tmp_path / f"worker-{name}"
    data_dir.mkdir(exist_ok=True)
    config = WorkerConfig(manager=f"127.0.0.1:{manager_config.worker_port}", name=name, address="127.0.0.1",
                          data_dir=str(data_dir), metrics_interval=metrics_interval, stop_timeout=0.5,
                          insecure=True)
    w = Worker(config, FakeRuntime(), MemoryStore(), Capacity(2.0, 2 * GiB, 16 * GiB))
    wait_for(lambda: w.manager_sock.poll(0, zmq.POLLOUT), timeout=5, what="worker connected")
    actors.start(w, w.run)
    return w


def samples(sub: zmq.Socket, names: set[str], want, timeout: float = 15.0) -> dict[str, dict]:
    """The first sample from each of `names` for which `want(sample)` holds."""
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while set(found) != names and time.monotonic() < deadline:
        if sub.poll(200):
            body = decode(sub.recv_multipart()[-1]).body
            if body["name"] in names and body["name"] not in found and want(body):
                found[body["name"]] = body
    assert set(found) == names, f"samples only from {sorted(found)}"
    return found


@pytest.fixture
def paced(actors):
    metrics_port = free_ports(1)[0]
    sub = actors.socket(zmq.SUB)  # in the Scheduler's place: every metrics sample
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(tcp(metrics_port))
    manager = actors.manager(metrics_port=metrics_port, heartbeat_interval=HEARTBEAT, grace=GRACE,
                             max_reports=MAX_REPORTS)
    workers = [worker(actors, manager.config, "w1", 0.2), worker(actors, manager.config, "w2", 0.2),
               worker(actors, manager.config, "w3", 3.0)]  # w3 samples more seldom than advised anyway
    wait_for(lambda: sorted(manager.registry.ready()) == ["w1", "w2", "w3"], what="3 workers registered")
    return manager, workers, sub


def test_workers_heartbeat_at_the_pace_the_cluster_size_sets(paced):
    manager, workers, _ = paced
    # w1 registered alone (0.5 s), w2 second (1.0 s): each hears 1.5 s on its next heartbeat.
    wait_for(lambda: all(w.link.heartbeat == pytest.approx(PACED) for w in workers),
             what=f"every worker told to heartbeat every {PACED}s")
    assert manager.pace.heartbeat == pytest.approx(PACED)
    assert manager.pace.advice() == {"heartbeat": pytest.approx(PACED), "metrics_interval": pytest.approx(PACED)}
    for w in workers:  # the heartbeat timer itself was re-armed, not just the number
        assert w.link._timer.interval == pytest.approx(PACED), w.name


def test_the_manager_grace_grows_in_proportion(paced):
    manager, workers, _ = paced
    assert manager.registry.grace == pytest.approx(GRACE * PACED / HEARTBEAT)  # 15 s
    assert manager.registry.grace == pytest.approx(15.0)
    assert all(manager.registry.is_ready(w.name) for w in workers)  # nobody lost on the way


def test_metrics_follow_the_advice_unless_the_worker_samples_more_seldom_already(paced):
    manager, workers, sub = paced
    w1, w2, w3 = workers
    wait_for(lambda: (w1.metrics_interval, w2.metrics_interval) == (pytest.approx(PACED), pytest.approx(PACED)),
             what=f"w1 and w2 sampling every {PACED}s")
    assert w3.metrics_interval == 3.0  # max(its own 3.0, the advised 1.5)
    for w in workers:
        assert w._metrics_timer.interval == pytest.approx(w.metrics_interval), w.name
    got = samples(sub, {"w1", "w2", "w3"}, lambda s: s.get("interval") == (3.0 if s["name"] == "w3" else PACED))
    assert {n: s["interval"] for n, s in got.items()} == {"w1": PACED, "w2": PACED, "w3": 3.0}


def test_the_scheduler_keeps_a_seldom_sampling_node_alive_for_three_samples(actors):
    sched, sched_ep, metrics_ep = actors.scheduler("roundrobin", stale_after=2.0)
    manager = actors.manager(scheduler_endpoint=sched_ep, metrics_port=int(metrics_ep.rsplit(":", 1)[1]),
                             heartbeat_interval=HEARTBEAT, grace=GRACE, max_reports=MAX_REPORTS)
    for name, interval in [("w1", 0.2), ("w2", 0.2), ("w3", 3.0)]:
        worker(actors, manager.config, name, interval)

    def intervals() -> dict[str, float]:
        return {n: node.sample.interval for n, node in list(sched.view._nodes.items())}
    wait_for(lambda: intervals() == {"w1": PACED, "w2": PACED, "w3": 3.0}, timeout=15,
             what="the Scheduler holding paced samples (node.metrics accepts 'interval')")
    limits = {n: sched.view._stale_limit(node.sample) for n, node in list(sched.view._nodes.items())}
    assert limits == {"w1": pytest.approx(4.5), "w2": pytest.approx(4.5), "w3": pytest.approx(9.0)}
    assert sched.stats["refused.bad_body"] == 0
