"""Issue 12, parts 3 and 4, end to end: cube-manager's and cube-worker's /metrics scraped over real
HTTP and read with prometheus-client's own parser, agreeing with the cluster; `cube top` drawn in
a real terminal (tmux) showing the nodes, then quitting on q."""
from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import urllib.request
import uuid

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cube.harness import Cluster
from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of http://127.0.0.1:port/metrics by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def wait_for_or_false(predicate, timeout: float) -> bool:
    try:
        return bool(wait_for(predicate, timeout))
    except AssertionError:
        return False


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_match_the_cluster(make_cluster, busybox):
    c = make_cluster(prometheus=True)
    c.start_worker("w1"), c.start_worker("w2")
    ids = [c.start_task("--image", busybox, "--name", f"sleeper-{i}", "--cmd", "sleep 300") for i in range(3)]
    for task_id in ids:
        c.wait_state(task_id, "Running", timeout=30)

    m = wait_for(lambda: (s := scrape(c.prometheus_port)) and value(s, "cube_tasks", state="Running") == 3 and s,
                 20, what="cube_tasks{state=Running} 3")
    assert value(m, "cube_tasks", state="Pending") == 0 and value(m, "cube_tasks", state="Failed") == 0
    assert value(m, "cube_workers", state="ready") == 2 and value(m, "cube_workers", state="lost") == 0
    assert value(m, "cube_placements_total") >= 3
    assert value(m, "cube_task_start_seconds_count") == 3
    assert value(m, "cube_store_commit_seconds_count") > 0
    assert value(m, "cube_messages_received_total", socket="api", type="task.start") >= 3
    assert value(m, "cube_messages_received_total", socket="workers", type="task.status") >= 3
    assert value(m, "cube_events_published_total", type="task.event") >= 9
    assert value(m, "cube_manager_loading") == 0

    on = {short: sum(1 for t in c.tasks().values() if t["worker"] == c.worker_name(short) and t["state"] == "Running")
          for short in ("w1", "w2")}
    for short, port in c.worker_prometheus.items():
        w = wait_for(lambda: (s := scrape(port)) and value(s, "cube_worker_tasks", desired="running") == on[short]
                     and s, 20, what=f"worker {short}'s metrics")
        assert value(w, "cube_worker_registered") == 1
        assert value(w, "cube_worker_container_starts_total") == on[short]
        assert value(w, "cube_worker_docker_seconds_count", op="run") == on[short]
        assert value(w, "cube_messages_sent_total", socket="manager", type="worker.hello") >= 1
    assert sum(on.values()) == 3

    # a task that fails: its output outlives its container, and the worker counts the bytes it keeps
    failing = c.start_task("--image", busybox, "--name", "boom", "--cmd", "sh -c 'echo boom >&2; exit 3'",
                           "--restart", "no")
    ran_on = c.wait_state(failing, "Failed", timeout=30)["worker"].removeprefix(c.token + "-")
    wait_for(lambda: value(scrape(c.worker_prometheus[ran_on]), "cube_worker_retained_log_bytes") > 0, 20,
             what="the retained output's bytes")
    wait_for(lambda: value(scrape(c.prometheus_port), "cube_tasks", state="Failed") == 1, 5,
             what="cube_tasks{state=Failed} 1 (a snapshot is up to a second old)")


def listening(process: subprocess.Popen) -> set[tuple[str, int]]:
    """The TCP addresses `process` and its children (cube-manager's actors) listen on."""
    root = psutil.Process(process.pid)
    return {(conn.laddr.ip, conn.laddr.port) for p in [root, *root.children(recursive=True)]
            for conn in p.net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN}


def test_metrics_are_off_unless_asked_and_bind_loopback(make_cluster):
    c = make_cluster()
    assert c.prometheus_port == 0 and "--prometheus-port" in " ".join(c.manager.args)
    assert "prometheus metrics" not in c.log("manager").lower()
    assert {port for _, port in listening(c.manager)} == {c.api_port, c.worker_port, c.metrics_port, c.events_port}

    served = make_cluster(prometheus=True)  # the default host: loopback
    wait_for(lambda: scrape(served.prometheus_port), 10, what="/metrics")
    assert [a for a in listening(served.manager) if a[1] == served.prometheus_port] == [("127.0.0.1",
                                                                                         served.prometheus_port)]
    assert f"Prometheus metrics at http://127.0.0.1:{served.prometheus_port}/metrics" in served.log("manager")
    served.start_worker("w1")
    port = served.worker_prometheus["w1"]
    assert [a for a in listening(served.workers["w1"]) if a[1] == port] == [("127.0.0.1", port)]

    elsewhere = make_cluster(prometheus=True, manager_args=["--prometheus-host", "127.0.0.2"])
    wait_for(lambda: ("127.0.0.2", elsewhere.prometheus_port) in listening(elsewhere.manager), 10,
             what="/metrics on 127.0.0.2")
    assert [a for a in listening(elsewhere.manager) if a[1] == elsewhere.prometheus_port] == [
        ("127.0.0.2", elsewhere.prometheus_port)]
    with urllib.request.urlopen(f"http://127.0.0.2:{elsewhere.prometheus_port}/metrics", timeout=5) as r:
        assert "cube_tasks" in r.read().decode()


def test_a_taken_metrics_port_is_reported_and_the_manager_runs_on():
    """Chosen: a metrics endpoint is not worth losing the control plane over (docs/architecture.md,
    "Metrics"): the manager says it serves no metrics and why, prints no address, and works."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        c = Cluster(prometheus=True)
        c.prometheus_port = squatter.getsockname()[1]
        try:
            c.start_manager()
            wait_for(lambda: "NO Prometheus metrics" in c.log("manager"), 10, what="the manager to report it")
            log = c.log("manager")
            assert f"cannot serve them on 127.0.0.1:{c.prometheus_port}" in log and "Address already in use" in log
            assert "Prometheus metrics at" not in log
            assert c.call("manager.ping")["state"] == "ready"
            c.start_worker("w1")  # the control plane works
            assert c.nodes()[c.worker_name("w1")]["state"] == "ready"
            assert c.manager.poll() is None and "exited with" not in log  # no actor restarted over it
        finally:
            c.close()
    finally:
        squatter.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup.sh installs it)")
def test_cube_top_in_a_terminal_shows_the_nodes_and_quits_on_q(make_cluster, busybox):
    c = make_cluster()
    names = [c.start_worker("w1"), c.start_worker("w2")]
    c.start_task("--image", busybox, "--name", "top-sleeper", "--cmd", "sleep 300")
    session = f"cube-top-{uuid.uuid4().hex[:8]}"
    # As from a shell: its COLUMNS/LINES are not exported (a tmux server started under pytest has 80x24 ones)
    command = "env -u COLUMNS -u LINES " + shlex.join(c.cli_command("top", "--interval", "1"))
    env = ["-e", f"CUBE_CREDENTIALS={c.env['CUBE_CREDENTIALS']}", "-e", f"PYTHONPATH={c.env['PYTHONPATH']}"]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", *env,
                    f"{command}; echo EXITED=$?; sleep 30"], check=True, cwd=c.tmp)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                  check=True).stdout
        seen = [""]

        def shows_the_nodes() -> bool:
            seen[0] = screen()
            return all(n in seen[0] for n in names)
        assert wait_for_or_false(shows_the_nodes, 30), f"cube top did not show {names}; the screen:\n{seen[0]}"
        shown = seen[0]
        assert "CPU RESERVED" in shown and "Tasks by state" in shown and "cube top" in shown
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(lambda: "EXITED=0" in screen(), 15, what="cube top to quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_cube_top_once_prints_one_frame_with_read_only_credentials(make_cluster, busybox):
    c = make_cluster()
    name = c.start_worker("w1")
    viewer = c.tmp / "viewer.credentials"
    c.cli("credentials", "create", "viewer", "--role", "read-only", "--output", str(viewer))
    out = c.cli("top", "--once", "--credentials", str(viewer)).stdout
    assert name in out and "Tasks by state" in out and "Pending" in out
