"""FakeRuntime keeps Docker's observable semantics, so worker tests against it mean something."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from cube.runtime.base import LABEL_WORKER, ContainerSpec, RuntimeFailure
from cube.runtime.fake import FakeRuntime


def spec(task_id="task-0001", attempt=1, worker="w1", **kw) -> ContainerSpec:
    return ContainerSpec(task_id=task_id, attempt=attempt, name=kw.pop("name", "web"), image=kw.pop("image", "img:1"),
                         labels={LABEL_WORKER: worker}, **kw)


class Events:
    """runtime.events() drained on a thread, so tests can assert on what was emitted."""

    def __init__(self, runtime: FakeRuntime, since: float | None = None) -> None:
        self.stop, self.q = threading.Event(), queue.Queue()
        self.thread = threading.Thread(target=lambda: [self.q.put(e) for e in runtime.events(self.stop, since)])
        self.thread.start()

    def take(self, n: int, timeout: float = 2.0) -> list[tuple]:
        return [(e.kind, e.exit_code) for e in (self.q.get(timeout=timeout) for _ in range(n))]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


@pytest.fixture
def rt() -> FakeRuntime:
    return FakeRuntime(missing_images={"ghost:1"})


@pytest.fixture
def events(rt):
    e = Events(rt, since=0)  # replay from the start: nothing emitted before the thread runs is lost
    yield e
    e.close()


def test_run_creates_a_running_container_with_ports(rt):
    info = rt.run(spec(ports=["8080/tcp", "9090"]))
    assert info.running and info.state == "running" and info.worker == "w1"
    assert len(info.container_id) == 64
    assert info.host_ports == {"8080/tcp": 30000, "9090/tcp": 30001}
    assert rt.inspect(info.container_id) == info
    assert rt.run(spec(task_id="task-0002", ports=["80/tcp"])).host_ports == {"80/tcp": 30002}


def test_run_is_idempotent_for_a_running_attempt(rt):
    first = rt.run(spec())
    assert rt.run(spec()).container_id == first.container_id
    rt.kill(first.container_id, exit_code=1)
    replaced = rt.run(spec())  # same name, but exited: replaced like DockerRuntime does
    assert replaced.container_id != first.container_id
    assert rt.inspect(first.container_id) is None
    assert rt.run(spec(attempt=2)).container_id != replaced.container_id
    assert len(rt.list()) == 2


def test_missing_image_fails_like_docker(rt):
    with pytest.raises(RuntimeFailure, match="image 'ghost:1' is not present locally and could not be pulled"):
        rt.run(spec(image="ghost:1"))
    assert rt.list() == []


def test_stop_removes_and_tolerates_missing(rt, events):
    info = rt.run(spec())
    rt.stop(info.container_id)
    rt.stop(info.container_id)
    rt.stop("nope")
    assert rt.inspect(info.container_id) is None
    assert events.take(3) == [("start", None), ("die", 143), ("destroy", None)]


def test_kill_leaves_an_exited_container_and_emits_die(rt, events):
    info = rt.run(spec())
    rt.kill(info.container_id, exit_code=3)
    after = rt.inspect(info.container_id)
    assert after.state == "exited" and after.exit_code == 3 and not after.running and after.finished_at
    assert events.take(2) == [("start", None), ("die", 3)]
    rt.kill(info.container_id)  # already dead: no second die
    rt.remove_behind_back(info.container_id)
    assert events.take(1) == [("destroy", None)]
    assert rt.inspect(info.container_id) is None


def test_oom_kill(rt, events):
    info = rt.run(spec())
    rt.kill(info.container_id, oom=True)
    assert events.take(3) == [("start", None), ("oom", None), ("die", 137)]
    assert "out of memory" in rt.inspect(info.container_id).error


def test_remove_behind_back_of_running_container(rt, events):
    info = rt.run(spec())
    rt.remove_behind_back(info.container_id)
    assert events.take(3) == [("start", None), ("die", 137), ("destroy", None)]


def test_events_carry_task_and_attempt(rt, events):
    info = rt.run(spec(task_id="abc", attempt=4))
    event = events.q.get(timeout=2)
    assert (event.task_id, event.attempt, event.container_id) == ("abc", 4, info.container_id)
    assert event.time > 0


def test_list_filters_by_worker(rt):
    a = rt.run(spec(task_id="a", worker="w1"))
    b = rt.run(spec(task_id="b", worker="w2"))
    assert [c.container_id for c in rt.list(worker="w1")] == [a.container_id]
    assert [c.container_id for c in rt.list(worker="w2")] == [b.container_id]
    assert rt.list(worker="w3") == []
    assert len(rt.list()) == 2


def test_logs(rt):
    info = rt.run(spec())
    for i in range(5):
        rt.write_log(info.container_id, f"line {i}")
    assert rt.logs(info.container_id, tail=2) == "line 3\nline 4\n"
    rt.stop(info.container_id)
    with pytest.raises(RuntimeFailure, match="no longer exists"):
        rt.logs(info.container_id)


def test_returned_info_is_a_snapshot(rt):
    info = rt.run(spec())
    info.state = "tampered"
    assert rt.inspect(info.container_id).state == "running"


def test_events_stop_promptly_and_unsubscribe(rt):
    stop = threading.Event()
    done = threading.Event()
    threading.Thread(target=lambda: (list(rt.events(stop)), done.set())).start()
    time.sleep(0.2)
    stop.set()
    started = time.monotonic()
    assert done.wait(1.0)
    assert time.monotonic() - started < 0.5
    assert rt._subscribers == []


def test_many_threads_and_subscribers(rt):
    """A benchmark-sized load: concurrent runs and stops keep state and event streams consistent."""
    subscribers = [Events(rt, since=0) for _ in range(3)]

    def churn(w: int) -> None:
        for i in range(50):
            info = rt.run(spec(task_id=f"t{w}-{i}", worker=f"w{w}"))
            if i % 2:
                rt.stop(info.container_id)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rt.list()) == 8 * 25
    assert len({p for c in rt.list() for p in c.host_ports.values()}) == 0  # no ports asked for
    expected = 8 * 50 + 8 * 25 * 2  # start for each run; die + destroy for each stop
    for sub in subscribers:
        kinds = [sub.q.get(timeout=2).kind for _ in range(expected)]
        assert kinds.count("start") == 400 and kinds.count("destroy") == 200
        sub.close()
