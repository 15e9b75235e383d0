"""Issue 10 end to end: the CLI as a process against a real, secure cluster (one manager, one
worker, Docker), for what only the real manager shows: placement reasons, failed pulls, stdin."""
from __future__ import annotations

import json
import subprocess

import pytest

from cube.harness import Cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(busybox, request):
    c = Cluster(scheduler="epvm")
    try:
        c.start_manager()
        c.start_worker("w1", "--cpus", "1")
        yield c
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.log_tail(lines=60))
        c.close()


def test_the_cli_against_a_cluster(cluster, busybox):
    c = cluster
    # a task that runs: its id, nothing on stderr
    r = c.cli("task", "start", "--image", busybox, "--name", "web", "--cmd", "httpd -f -p 8080 -h /www",
              "--port", "8080")
    web = r.stdout.strip()
    assert r.stderr == "" and c.task(web)["state"] == "Running"  # watched until it ran

    # one that cannot be placed now: accepted, with the scheduler's reason
    r = c.cli("task", "start", "--image", busybox, "--name", "big", "--cmd", "sleep 600", "--cpu", "4")
    big = r.stdout.strip()
    assert r.returncode == 0 and "warning" in r.stderr and "cannot be placed now" in r.stderr and "cpu" in r.stderr

    # one whose image cannot be pulled: why, and exit 1
    r = c.cli("task", "start", "--image", "cube-no-such-image:1", "--name", "nope", "--restart", "no", check=False)
    assert r.returncode == 1 and "failed to start" in r.stderr and "cube-no-such-image:1" in r.stderr
    assert r.stderr.count("\n") == 1 and len(r.stdout.split()) == 1

    # a task file on stdin, with a typo refused before anything is sent
    spec = json.dumps({"image": busybox, "name": "piped", "command": ["sleep", "600"]})
    piped = subprocess.run(c.cli_command("task", "start", "-"), input=spec, capture_output=True, text=True,
                           env=c.env, timeout=30, check=False)
    assert piped.returncode == 0, piped.stderr
    before = set(c.tasks())
    r = c.cli("task", "start", "--image", busybox, "--nmae", "typo", check=False)
    assert r.returncode == 2 and "did you mean --name?" in r.stderr and set(c.tasks()) == before

    # listing, inspecting, logs
    table = c.cli("task", "ls").stdout
    assert "web" in table and "big" in table and "piped" in table and "nope" not in table  # nope ended
    assert "nope" in c.cli("task", "ls", "-a").stdout
    assert c.cli("task", "ls", "-q").stdout.split()[0] in c.tasks()
    assert json.loads(c.cli("task", "inspect", "--json", web).stdout)["task"]["id"] == web
    inspect = c.cli("task", "inspect", "web").stdout
    assert "name:" in inspect and "EVENTS" in inspect and "{" not in inspect
    assert c.cli("task", "logs", "web", "--tail", "0").stdout == ""
    nodes = c.cli("node", "ls").stdout
    assert "CPU RESERVED" in nodes and "HOST CPU" in nodes and c.worker_name("w1") in nodes

    # several ids at once; a stopped task says the user stopped it
    r = c.cli("task", "stop", web, "big")
    assert r.stdout.split() == [web, big]
    c.wait_state(web, "Completed")
    stopped = [line for line in c.cli("task", "ls", "-a").stdout.splitlines() if line.startswith(web[:12])]
    assert "Stopped (by user)" in stopped[0] and "->" not in stopped[0]  # no port once finished

    # a taken name is one line from the manager; restart brings a stopped task back
    r = c.cli("task", "start", "--image", busybox, "--name", "piped", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "piped" in r.stderr and r.stdout == ""
    r = c.cli("task", "restart", "web")
    assert r.returncode == 0 and r.stdout.split() == [web]
    c.wait_state(web, "Running")


def test_services_through_the_cli(cluster, busybox):
    """Issue 11: a service followed to its end by a real manager: created, a bad update rolled
    back (exit 1, with the pull error), scaled, the worker drained and activated, removed."""
    c = cluster
    r = c.cli("service", "create", "--name", "web", "--replicas", "2", "--image", busybox, "--cmd", "sleep 600",
              "--update-monitor", "1s")
    assert r.stdout.splitlines()[-1] == "web: 2 replicas running at version 1" and r.stderr == ""
    r = c.cli("service", "update", "web", "--image", "cube-no-such-image:1", check=False, timeout=60)
    assert r.returncode == 1 and "the update to version 2 failed and was rolled back to version 1" in r.stderr
    assert "cube-no-such-image:1" in r.stderr and r.stderr.count("\n") == 1
    assert "2/2" in c.cli("service", "ls").stdout
    r = c.cli("service", "scale", "web", "3")
    assert r.stdout.splitlines()[-1] == "web: scaled to 3: 3 replicas running at version 1"
    ps = c.cli("service", "ps", "web", "-a").stdout
    assert "\\_ web.1." in ps and "cube-no-such-image:1" in ps
    worker = c.worker_name("w1")
    assert c.cli("node", "drain", worker).stdout == f"{worker}: drained; its tasks move to other workers\n"
    assert " drain " in c.cli("node", "ls").stdout
    c.cli("node", "activate", worker)
    assert c.cli("service", "rm", "web").stdout.startswith("removed web; ")
