"""DockerRuntime against the real local Docker engine, using the self-built busybox image."""
from __future__ import annotations

import queue
import threading
import time
import uuid

import docker
import docker.errors
import pytest

from cube.harness import docker_available, ensure_busybox_image, remove_containers
from cube.runtime.base import LABEL_ATTEMPT, LABEL_TASK, LABEL_WORKER, ContainerSpec, RuntimeFailure
from cube.runtime.docker import DockerRuntime
from tests.support import fetch

pytestmark = [
    pytest.mark.skipif(not docker_available(), reason="the Docker daemon is not reachable (docker info fails)"),
    pytest.mark.timeout(60),
]

HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/www"]


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_busybox_image()


@pytest.fixture(scope="module")
def runtime(image) -> DockerRuntime:
    return DockerRuntime()


@pytest.fixture(scope="module")
def client():
    c = docker.from_env(timeout=30)
    yield c
    c.close()


@pytest.fixture
def new_worker():
    """Hands out unique cube.worker labels; every container carrying one is removed afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"e2e-{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    for name in names:
        remove_containers(f"{LABEL_WORKER}={name}")


@pytest.fixture
def worker(new_worker) -> str:
    return new_worker()


def spec(worker: str, image: str, command=None, **kw) -> ContainerSpec:
    task_id = kw.pop("task_id", uuid.uuid4().hex)
    return ContainerSpec(task_id=task_id, attempt=kw.pop("attempt", 1), name=kw.pop("name", "t"),
                         image=image, command=command, labels={LABEL_WORKER: worker}, **kw)


class Collector:
    """Consumes runtime.events() on a thread so tests can wait for a particular event."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.stop = threading.Event()
        self.events: queue.Queue = queue.Queue()
        since = time.time()  # replay from here: no race with containers started right after
        self.thread = threading.Thread(target=lambda: [self.events.put(e) for e in runtime.events(self.stop, since)],
                                       daemon=True)
        self.thread.start()

    def wait_for(self, kind: str, container_id: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event.kind == kind and event.container_id == container_id:
                return event
        raise AssertionError(f"no {kind} event for {container_id[:12]} within {timeout}s")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


@pytest.fixture
def collector(runtime):
    c = Collector(runtime)
    yield c
    c.close()


def test_httpd_is_reachable_with_labels_and_limits(runtime, client, worker, image):
    s = spec(worker, image, HTTPD, ports=["8080/tcp"], cpu=0.5, memory=64 * 2**20, name="web/server 1")
    info = runtime.run(s)
    assert info.state == "running" and info.running
    assert info.worker == worker and info.task_id == s.task_id and info.attempt == 1
    port = info.host_ports["8080/tcp"]
    assert fetch(f"http://127.0.0.1:{port}/") == b"hello from cube\n"
    assert fetch(f"http://127.0.0.1:{port}/health") == b"ok\n"

    attrs = client.containers.get(info.container_id).attrs
    assert attrs["Config"]["Labels"][LABEL_TASK] == s.task_id
    assert attrs["Config"]["Labels"][LABEL_ATTEMPT] == "1"
    assert attrs["Config"]["Labels"][LABEL_WORKER] == worker
    assert attrs["Name"] == f"/cube-web-server-1-{s.task_id[:8]}-1"
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 64 * 2**20
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert attrs["Config"]["Tty"] is False


def test_env_and_logs(runtime, worker, image, collector):
    s = spec(worker, image, ["sh", "-c", 'echo "out $GREETING"; echo err >&2'], env={"GREETING": "hi"})
    info = runtime.run(s)
    collector.wait_for("die", info.container_id)
    logs = runtime.logs(info.container_id)
    assert "out hi" in logs and "err" in logs


def test_stop_removes_and_is_idempotent(runtime, worker, image):
    info = runtime.run(spec(worker, image, ["sleep", "300"]))
    runtime.stop(info.container_id, timeout=0)
    assert runtime.inspect(info.container_id) is None
    runtime.stop(info.container_id, timeout=0)  # already gone: not an error
    with pytest.raises(RuntimeFailure, match="no longer exists"):
        runtime.logs(info.container_id)
    assert runtime.inspect("0" * 64) is None


def test_run_is_idempotent_per_attempt(runtime, worker, image):
    s = spec(worker, image, ["sleep", "300"])
    first = runtime.run(s)
    assert runtime.run(s).container_id == first.container_id  # same attempt still running: reused
    runtime.stop(first.container_id, timeout=0)
    second = runtime.run(s)  # name free again
    assert second.container_id != first.container_id
    # an exited leftover under the same name is replaced rather than reported as a conflict
    docker.from_env().containers.get(second.container_id).kill()
    third = runtime.run(s)
    assert third.container_id != second.container_id and third.running
    assert [c.container_id for c in runtime.list(worker=worker)] == [third.container_id]


def test_missing_image_fails_clearly(runtime, worker):
    image = "127.0.0.1:1/cube-missing:1"  # a loopback "registry" that refuses connections
    with pytest.raises(RuntimeFailure, match="cube-missing:1' is not present locally and could not be pulled"):
        runtime.run(spec(worker, image))
    assert runtime.list(worker=worker) == []


def test_bad_command_exits_127_and_says_why_in_its_logs(runtime, worker, image, collector):
    # The init process (docker-init) starts fine and then fails to exec the command, so a bad
    # command shows up as a quick exit with code 127 and the reason in the container's output.
    info = runtime.run(spec(worker, image, ["no-such-binary"]))
    assert collector.wait_for("die", info.container_id).exit_code == 127
    assert "no-such-binary" in runtime.logs(info.container_id)


def test_exit_code_reaches_die_event_and_inspect(runtime, worker, image, collector):
    info = runtime.run(spec(worker, image, ["sh", "-c", "exit 3"]))
    event = collector.wait_for("die", info.container_id)
    assert event.exit_code == 3 and event.task_id == info.task_id and event.attempt == 1
    after = runtime.inspect(info.container_id)
    assert after.state == "exited" and after.exit_code == 3 and not after.running
    assert after.started_at and after.finished_at


def test_kill_behind_the_back_produces_die(runtime, client, worker, image, collector):
    info = runtime.run(spec(worker, image, ["sleep", "300"]))
    assert collector.wait_for("start", info.container_id).task_id == info.task_id
    client.containers.get(info.container_id).kill()
    assert collector.wait_for("die", info.container_id).exit_code == 137
    client.containers.get(info.container_id).remove()
    collector.wait_for("destroy", info.container_id)


def test_events_return_promptly_after_stop(runtime):
    stop = threading.Event()
    done = threading.Event()

    def consume():
        for _ in runtime.events(stop):
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.3)  # let it block inside the docker stream
    stop.set()
    started = time.monotonic()
    assert done.wait(2.0), "events() did not return after stop was set"
    assert time.monotonic() - started < 1.0


def test_list_filters_by_worker(runtime, new_worker, image):
    a, b = new_worker(), new_worker()
    ia = runtime.run(spec(a, image, ["sleep", "300"]))
    ib = runtime.run(spec(b, image, ["sleep", "300"]))
    assert [c.container_id for c in runtime.list(worker=a)] == [ia.container_id]
    assert [c.container_id for c in runtime.list(worker=b)] == [ib.container_id]
    everything = {c.container_id for c in runtime.list()}
    assert {ia.container_id, ib.container_id} <= everything


def test_unreachable_daemon_is_a_runtime_failure(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeFailure, match="cannot connect to the Docker daemon"):
        DockerRuntime(timeout=1)


# -- reconnection, with a scripted client standing in for a flaky daemon ------------------------


class _Stream:
    """Yields scripted events, then either ends (connection lost) or blocks until close()."""

    def __init__(self, items, block: bool) -> None:
        self.items, self.block, self.closed = list(items), block, threading.Event()

    def __iter__(self):
        yield from self.items
        if self.block:
            self.closed.wait()

    def close(self) -> None:
        self.closed.set()


class _FlakyClient:
    def __init__(self, script) -> None:
        self.script, self.calls = list(script), []

    def events(self, **kwargs):
        self.calls.append(kwargs)
        step = self.script.pop(0) if self.script else _Stream([], block=True)
        if isinstance(step, Exception):
            raise step
        return step


def _raw(action: str, nano: int, cid: str = "c1", **attrs) -> dict:
    return {"Type": "container", "Action": action, "status": action, "id": cid, "timeNano": nano,
            "time": nano // 10**9, "Actor": {"ID": cid, "Attributes": {LABEL_TASK: "t1", LABEL_ATTEMPT: "2", **attrs}}}


def test_events_reconnect_resume_without_loss_or_duplicates():
    t0 = 1_700_000_000_123_456_789
    client = _FlakyClient([
        _Stream([_raw("start", t0)], block=False),  # then the daemon connection drops
        docker.errors.DockerException("daemon restarting"),  # first reconnect attempt fails
        _Stream([_raw("start", t0), _raw("exec_start: sh", t0 + 1), _raw("die", t0 + 2, exitCode="3")], block=True),
    ])
    runtime = DockerRuntime(client=client)
    stop = threading.Event()
    seen = []
    for event in runtime.events(stop, since=1_700_000_000.0):
        seen.append(event)
        if len(seen) == 2:
            stop.set()
    assert [(e.kind, e.exit_code, e.attempt) for e in seen] == [("start", None, 2), ("die", 3, 2)]
    assert client.calls[0]["since"] == "1700000000.000000000"
    assert client.calls[-1]["since"] == "1700000000.123456789"  # resumed at the last event seen
    assert all(c["filters"] == {"type": "container", "label": [LABEL_TASK]} for c in client.calls)


# -- what a start and a listing cost (the Worker lists and starts for every task) -----------------


class _Calls:
    """Counts the Engine API requests a DockerRuntime makes, as "METHOD path" with ids elided."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.seen: list[str] = []
        self._request = runtime.client.api.request

        def request(method, url, *args, **kwargs):
            path = url.split("?")[0].split("/v1.", 1)[-1].split("/")[1:]
            self.seen.append(method + " " + "/".join("ID" if len(p) > 30 or p.startswith("cube-") else p for p in path))
            return self._request(method, url, *args, **kwargs)
        runtime.client.api.request = request

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


@pytest.fixture
def counted(image):
    runtime = DockerRuntime()
    yield runtime, _Calls(runtime)
    runtime.client.close()


def test_a_start_is_create_start_inspect_and_a_listing_one_call(counted, new_worker, image, collector):
    runtime, calls = counted
    worker = new_worker()
    running = [runtime.run(spec(worker, image, ["sleep", "300"])) for _ in range(3)]
    # As `docker run -d`: no image lookup, no name lookup, no second inspection.
    assert calls.take() == ["POST containers/create", "POST containers/ID/start", "GET containers/ID/json"] * 3
    listed = runtime.list(worker=worker)
    assert calls.take() == ["GET containers/json"]  # running containers are not inspected one by one
    assert {c.container_id for c in listed} == {c.container_id for c in running}
    assert all(c.running and c.worker == worker and c.attempt == 1 for c in listed)
    exited = runtime.run(spec(worker, image, ["sh", "-c", "exit 5"]))
    collector.wait_for("die", exited.container_id)
    deadline = time.monotonic() + 10
    while True:  # the daemon's listing may trail its die event by a moment on a loaded machine
        calls.take()
        by_id = {c.container_id: c for c in runtime.list(worker=worker)}
        if by_id[exited.container_id].state == "exited" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert calls.take() == ["GET containers/json", "GET containers/ID/json"]  # the exited one, for its exit code
    assert by_id[exited.container_id].state == "exited" and by_id[exited.container_id].exit_code == 5
    assert by_id[exited.container_id].finished_at


def test_listed_host_ports_are_those_the_start_reported(runtime, worker, image):
    info = runtime.run(spec(worker, image, HTTPD, ports=["8080/tcp", "9090"]))
    assert set(info.host_ports) == {"8080/tcp", "9090/tcp"}
    [listed] = runtime.list(worker=worker)
    assert listed.host_ports == info.host_ports and listed.task_id == info.task_id and listed.running


def test_a_taken_name_costs_a_look_only_then(counted, worker, image):
    runtime, calls = counted
    s = spec(worker, image, ["sleep", "300"])
    first = runtime.run(s)
    calls.take()
    assert runtime.run(s).container_id == first.container_id  # create refused (409), then ours found
    assert calls.take() == ["POST containers/create", "GET containers/ID/json"]
