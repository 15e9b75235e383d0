"""Fixed host ports end to end on one host (issue 15): real processes, real Docker.

Both workers of a one-host cluster share this host's ports, so a port one task holds is taken
for the other worker too: a second task asking for it waits with a reason naming the port and
the workers, and runs once the first one stops.
"""
from __future__ import annotations

import io
import json
import socket

import docker
import pytest

from tests.support import fetch, wait_for

pytestmark = pytest.mark.timeout(180)

HTTPD = "httpd -f -p 8080 -h /www"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pending_reason(c, task_id: str, contains: str) -> str:
    def noted() -> str | None:
        t = c.task(task_id)
        return t["reason"] if t["state"] == "Pending" and contains in t["reason"] else None
    return wait_for(noted, 15, what=f"task {task_id[:8]} to wait because of {contains}")


def test_a_fixed_port_is_published_on_that_port_and_held_until_the_task_stops(make_cluster, busybox):
    c = make_cluster()
    w1, w2 = c.start_worker("w1"), c.start_worker("w2")
    port = free_port()
    first = c.start_task("--image", busybox, "--name", "pinned", "--cmd", HTTPD, "--port", f"{port}:8080")
    task = c.wait_state(first, "Running", timeout=20)
    assert task["host_ports"] == {"8080/tcp": port} and task["ports"] == [f"{port}:8080/tcp"]
    assert b"hello from cube" in fetch(f"http://127.0.0.1:{port}/", within=5)

    # A second task on the same host port: accepted, waiting, with the port and both workers named.
    start = c.cli("task", "start", "--image", busybox, "--name", "second", "--cmd", HTTPD, "--port", f"{port}:8080")
    second = start.stdout.strip()
    assert f"{port}/tcp" in start.stderr  # the CLI's warning quotes the reason
    reason = pending_reason(c, second, f"host port {port}/tcp is in use on")
    assert w1 in reason and w2 in reason

    c.cli("task", "stop", first)
    moved = c.wait_state(second, "Running", timeout=30)
    assert moved["host_ports"] == {"8080/tcp": port}
    assert b"hello from cube" in fetch(f"http://127.0.0.1:{port}/", within=5)
    c.cli("task", "stop", second)


def test_a_port_taken_by_another_program_keeps_the_task_waiting(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        w1 = c.worker_name("w1")
        wait_for(lambda: f"{port}/tcp" in ((c.nodes()[w1].get("metrics") or {}).get("ports") or []), 10,
                 what="the worker's metrics to show the port in use")
        task_id = c.start_task("--image", busybox, "--cmd", HTTPD, "--port", f"{port}:8080", "--detach")
        pending_reason(c, task_id, f"host port {port}/tcp is in use on {w1}")
    c.wait_state(task_id, "Running", timeout=30)  # the program let go of it
    c.cli("task", "stop", task_id)


@pytest.fixture
def echo_image(busybox):
    """The book's echo server stand-in: cube-busybox answering on 7777 (built locally, no pull)."""
    client = docker.from_env()
    tag = "cube-echo-server:test"
    dockerfile = f'FROM {busybox}\nCMD ["httpd", "-f", "-p", "7777", "-h", "/www"]\n'.encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False)
    yield tag
    client.images.remove(tag, force=True)
    client.close()


def test_the_books_task_file_runs_unchanged_on_its_fixed_port(make_cluster, echo_image):
    with socket.socket() as probe:  # the book's file pins 7777: this host must have it free
        if probe.connect_ex(("127.0.0.1", 7777)) == 0:
            pytest.skip("port 7777 is in use on this host")
    c = make_cluster()
    c.start_worker("w1")
    book = {  # the book's task event, as `cube run` reads it; only the image is swapped
        "ID": "a7aa1d44-08f6-443e-9378-f5884311019e", "State": 2,
        "Task": {"State": 1, "ID": "bb1d59ef-9fc1-4e4b-a44d-db571eeed203", "Name": "test-chapter-9.1",
                 "Image": echo_image, "ExposedPorts": {"7777/tcp": {}}, "PortBindings": {"7777/tcp": "7777"},
                 "HealthCheck": "/health", "RestartPolicy": ""},
    }
    path = c.tmp / "task1.json"
    path.write_text(json.dumps(book))
    task_id = c.start_task(str(path))
    assert task_id == "bb1d59ef-9fc1-4e4b-a44d-db571eeed203"
    task = c.wait_state(task_id, "Running", timeout=20)
    assert task["host_ports"] == {"7777/tcp": 7777} and task["restart"]["name"] == "no"
    assert fetch("http://127.0.0.1:7777/health", within=5).strip() == b"ok"
    c.cli("task", "stop", task_id)
    c.wait_state(task_id, "Completed", timeout=15)


def test_docker_refusing_the_bind_fails_the_attempt_and_it_runs_once_the_port_is_free(make_cluster, busybox):
    """What the metrics cannot see: a socket bound to the port but not listening holds it (it is in
    no table /proc/net shows), so the task is placed and Docker refuses the bind."""
    c = make_cluster()
    c.start_worker("w1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, never listening
        port = squatter.getsockname()[1]
        task_id = c.start_task("--image", busybox, "--cmd", HTTPD, "--port", f"{port}:8080", "--detach",
                               "--restart", "on-failure", "--max-restarts", "5")
        failed = wait_for(lambda: (t := c.task(task_id))["restart_count"] == 0 and t["state"] == "Failed" and t, 15,
                          what="the start to fail on the taken port")
        assert f"host port {port}/tcp is taken on this worker's host" in failed["error"]
        assert c.worker_name("w1") in failed["port_conflicts"]
        # kept off that worker for a while, and told why: waiting, not failing there again at once
        reason = wait_for(lambda: "excluded" in (t := c.task(task_id))["reason"] and t["reason"], 15,
                          what="the task to wait off the worker")
        assert c.worker_name("w1") in reason and c.task(task_id)["restart_count"] == 0
        assert f"Docker refused host port {port}/tcp on {c.worker_name('w1')}" in reason
    running = c.wait_state(task_id, "Running", timeout=40)  # the hold ended and the port is free
    assert running["host_ports"] == {"8080/tcp": port} and running["port_conflicts"] == {}
    c.cli("task", "stop", task_id)


def test_a_service_with_a_fixed_port_runs_one_replica_per_address_and_the_rest_wait(make_cluster, busybox):
    """Two workers on one host share its ports: of 2 replicas pinning one port, one runs, one waits."""
    c = make_cluster()
    w1, w2 = c.start_worker("w1"), c.start_worker("w2")
    port = free_port()
    c.cli("service", "create", "--name", "pinned", "--replicas", "2", "--image", busybox, "--cmd", HTTPD,
          "--port", f"{port}:8080", "--detach")

    def settled():
        tasks = [t for t in c.call("service.ps", {"name": "pinned"})["tasks"] if t["desired"] == "running"]
        runs = [t for t in tasks if t["state"] == "Running"]
        waits = [t for t in tasks if t["state"] == "Pending" and f"host port {port}/tcp is in use" in t["reason"]]
        return (runs, waits) if len(runs) == 1 and len(waits) == 1 else None
    runs, waits = wait_for(settled, 30, what="one replica running and one waiting for the port")
    assert runs[0]["host_ports"] == {"8080/tcp": port}
    assert w1 in waits[0]["reason"] and w2 in waits[0]["reason"]
    assert b"hello from cube" in fetch(f"http://127.0.0.1:{port}/", within=5)
    c.cli("service", "rm", "pinned")
