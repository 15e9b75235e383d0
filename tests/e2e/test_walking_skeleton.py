"""Issue 2, end to end: CLI -> Manager -> Scheduler -> Store -> Worker -> a real Docker container."""
from __future__ import annotations

import json
import signal
import time
import urllib.request

import docker
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)


def http_get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return r.read().decode()


def test_task_runs_answers_http_stops_and_survives_manager_restart(make_cluster, busybox):
    c = make_cluster(scheduler="roundrobin")
    w1, w2 = c.start_worker("w1"), c.start_worker("w2")
    t0 = time.monotonic()
    task_id = c.start_task("--image", busybox, "--name", "web", "--cmd", "httpd -f -p 8080 -h /www", "--port", "8080")
    task = c.wait_state(task_id, "Running", timeout=15)
    submit_to_running = time.monotonic() - t0
    print(f"submit->Running via CLI: {submit_to_running:.2f}s")

    # the container exists in Docker, labelled, on the worker the manager says
    client = docker.from_env()
    containers = client.containers.list(filters={"label": f"cube.task_id={task_id}"})
    assert len(containers) == 1
    labels = containers[0].labels
    assert labels["cube.worker"] == task["worker"] and task["worker"] in (w1, w2)
    assert containers[0].id == task["container_id"]

    # it answers HTTP on its published host port
    port = task["host_ports"]["8080/tcp"]
    assert "hello from cube" in wait_for(lambda: http_get(port), 5, what="httpd to answer")

    # the CLI's JSON view agrees
    listed = {t["id"]: t for t in json.loads(c.cli("task", "ls", "--json").stdout)}
    for key in ("id", "name", "state", "worker", "image", "container_id", "host_ports", "restart_count"):
        assert key in listed[task_id]
    assert listed[task_id]["state"] == "Running" and listed[task_id]["worker"] == task["worker"]
    table = c.cli("task", "ls").stdout
    assert "ID" in table and "WORKER" in table and "web" in table and "Running" in table

    nodes = c.cli("node", "ls").stdout
    assert w1 in nodes and w2 in nodes

    # stop: container removed, task Completed
    c.cli("task", "stop", task_id)
    c.wait_state(task_id, "Completed", timeout=10)
    wait_for(lambda: not client.containers.list(all=True, filters={"label": f"cube.task_id={task_id}"}), 10,
             what="container to be removed")

    # manager restart on the same data directory: the task and its history are still there
    history = [e["state"] for e in c.events(task_id)]
    assert history == ["Pending", "Scheduled", "Running", "Running", "Completed"]
    c.kill_manager(signal.SIGTERM)
    c.start_manager()
    after = c.task(task_id)
    assert after["state"] == "Completed"
    assert [e["state"] for e in c.events(task_id)] == history
    assert task_id[:12] not in c.cli("task", "ls").stdout  # finished: only with --all, like `docker ps -a`
    assert task_id[:12] in c.cli("task", "ls", "--all").stdout
    inspect = c.cli("task", "inspect", task_id).stdout
    assert "EVENTS" in inspect and "placed on" in inspect


def test_ten_tasks_run(make_cluster, busybox):
    c = make_cluster(scheduler="roundrobin")
    c.start_worker("w1")
    c.start_worker("w2")
    t0 = time.monotonic()
    ids = [c.start_task("--image", busybox, "--name", f"sleeper-{i}", "--cmd", "sleep 600") for i in range(10)]
    wait_for(lambda: all(t["state"] == "Running" for t in c.tasks().values() if t["id"] in ids), 30,
             what="10 tasks Running")
    print(f"10 tasks Running after {time.monotonic() - t0:.2f}s (including 10 CLI invocations)")
    workers = [c.tasks()[i]["worker"] for i in ids]
    assert sorted(set(workers)) == sorted(c.worker_name(s) for s in ("w1", "w2"))
    assert workers.count(workers[0]) == 5  # round-robin splits them evenly


def test_cli_errors_are_one_line(make_cluster, busybox, tmp_path):
    c = make_cluster()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "image": "busybox", "ports": ["http"]}))
    r = c.cli("task", "start", str(bad), check=False)
    assert r.returncode == 1 and "ports" in r.stderr and "Traceback" not in r.stderr
    r = c.cli("task", "stop", "no-such-task", check=False)
    assert r.returncode == 1 and "no task" in r.stderr
    notjson = tmp_path / "t.json"
    notjson.write_text("{oops")
    r = c.cli("task", "start", str(notjson), check=False)
    assert r.returncode == 1 and "not valid JSON" in r.stderr
    c.kill_manager(signal.SIGTERM)
    t0 = time.monotonic()
    r = c.cli("task", "ls", check=False)
    assert r.returncode == 1 and "cannot reach the manager" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 10


def test_events_stream_follows_a_task(make_cluster, busybox):
    import subprocess

    c = make_cluster()
    c.start_worker("w1")
    follower = subprocess.Popen(
        c.cli_command("events", "--count", "3", "--timeout", "20", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.tmp)
    time.sleep(1.0)  # let the subscription settle (PUB/SUB drops what is sent before it joins)
    task_id = c.start_task("--image", busybox, "--name", "watched", "--cmd", "sleep 600")
    out, err = follower.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["state"] for e in events] == ["Pending", "Scheduled", "Running"], err
    assert all(e["task_id"] == task_id for e in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
