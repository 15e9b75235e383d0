"""Issue 12, part 2, end to end on real Docker: output that outlives its container (a failed task,
an earlier attempt after a restart, across a worker restart), `cube task logs -f` following a
running task until it ends, and a failed attempt's last lines in `cube task inspect`."""
from __future__ import annotations

import signal
import subprocess
import threading

import docker
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.timeout(240)


def containers_of(task_id: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"cube.task_id={task_id}"})


def no_container(task_id: str) -> None:
    wait_for(lambda: not containers_of(task_id), 20, what=f"the containers of {task_id[:8]} to be removed")


def test_a_failed_tasks_output_after_its_container_is_gone_and_a_worker_restart(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    bad = c.start_task("--image", busybox, "--name", "bad", "--restart", "no",
                       "--cmd", "sh -c 'echo starting; sleep 0.5; echo boom >&2; exit 3'")
    missing = c.start_task("--image", busybox, "--name", "missing", "--restart", "no", "--cmd", "no-such-binary")
    c.wait_state(bad, "Failed")
    c.wait_state(missing, "Failed")
    no_container(bad)
    no_container(missing)

    logs = c.cli("task", "logs", bad)
    # stdout and stderr in the order Docker got them (lines of both within a moment may swap: its
    # two copiers race, hence the pause)
    assert logs.stdout == "starting\nboom\n", logs.stderr
    inspect = c.cli("task", "inspect", "bad").stdout
    assert "exit_code:" in inspect and "OUTPUT (last lines of attempt 1" in inspect and "  boom" in inspect
    # a missing binary: Docker's own words, in the logs and in inspect
    assert "no-such-binary" in c.cli("task", "logs", missing).stdout
    assert "no-such-binary" in c.cli("task", "inspect", missing).stdout.split("OUTPUT")[1]

    c.signal("w1", signal.SIGTERM, wait=True)
    c.start_worker("w1")  # the same data directory: what it kept is still there
    wait_for(lambda: c.cli("task", "logs", bad, check=False).stdout == "starting\nboom\n", 20,
             what="the retained logs after the worker restart")


def test_an_earlier_attempts_logs_after_a_restart(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    t = c.start_task("--image", busybox, "--name", "twice", "--cmd", "sh -c 'echo I am $(hostname); sleep 600'")
    first = c.wait_state(t, "Running")["container_id"]
    wait_for(lambda: "I am" in c.cli("task", "logs", t).stdout, 10, what="the first attempt's output")
    c.cli("task", "restart", t)
    second = c.wait_state(t, "Running", attempt=2)["container_id"]
    wait_for(lambda: not [x for x in containers_of(t) if x.id == first], 20, what="the first container removed")
    wait_for(lambda: "I am" in c.cli("task", "logs", t).stdout, 10, what="the second attempt's output")
    assert c.cli("task", "logs", t).stdout == f"I am {second[:12]}\n"
    assert c.cli("task", "logs", t, "--attempt", "1").stdout == f"I am {first[:12]}\n"
    r = c.cli("task", "logs", t, "--attempt", "3", check=False)
    assert r.returncode == 1 and "no attempt 3" in r.stderr


def test_follow_prints_lines_as_they_come_and_ends_with_the_task(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    t = c.start_task("--image", busybox, "--name", "ticker", "--restart", "no",
                     "--cmd", "sh -c 'i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done'")
    c.wait_state(t, "Running")
    follower = subprocess.Popen(c.cli_command("task", "logs", t, "-f", "--tail", "all"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.tmp)
    try:
        lines: list[str] = []
        done = threading.Event()

        def read() -> None:
            for line in follower.stdout:
                lines.append(line.rstrip("\n"))
            done.set()
        threading.Thread(target=read, daemon=True).start()
        wait_for(lambda: len(lines) >= 5, 30, what="five lines followed")
        assert c.task(t)["state"] == "Running" and follower.poll() is None  # followed while it runs
        c.cli("task", "stop", t)
        assert follower.wait(timeout=30) == 0, follower.stderr.read()
        assert done.wait(10)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    n = len(lines)
    assert lines == [f"line {i}" for i in range(1, n + 1)]  # every line once, in order, to the last
    assert c.cli("task", "logs", t, "--tail", "all").stdout.splitlines() == lines


def test_follow_ends_by_itself_when_the_task_exits(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1")
    t = c.start_task("--image", busybox, "--name", "short", "--restart", "no",
                     "--cmd", "sh -c 'for i in 1 2 3; do echo n $i; sleep 1; done; echo bye >&2; exit 3'")
    c.wait_state(t, "Running")
    r = c.cli("task", "logs", t, "--follow", "--tail", "all", timeout=60)
    assert r.returncode == 0 and r.stdout == "n 1\nn 2\nn 3\nbye\n"
    assert c.task(t)["state"] == "Failed"  # it returned because the attempt ended


def test_log_retain_zero_keeps_nothing_but_inspect_still_has_the_last_lines(make_cluster, busybox):
    c = make_cluster()
    c.start_worker("w1", "--log-retain", "0")
    t = c.start_task("--image", busybox, "--name", "unkept", "--restart", "no", "--cmd", "sh -c 'echo boom; exit 3'")
    c.wait_state(t, "Failed")
    no_container(t)
    r = c.cli("task", "logs", t, check=False)
    assert r.returncode == 1 and "--log-retain 0" in r.stderr and r.stdout == ""
    assert "  boom" in c.cli("task", "inspect", t).stdout
    assert not list((c.tmp / "worker-w1" / "logs").glob("*.log"))


def test_follow_waits_for_a_restarted_manager_and_for_a_task_not_run_yet(make_cluster, busybox):
    c = make_cluster()
    t = c.start_task("--image", busybox, "--name", "later", "--restart", "no", "--detach",
                     "--cmd", "sh -c 'i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo line $i; sleep 0.25; done'")
    assert c.task(t)["state"] == "Pending"  # no worker yet
    follower = subprocess.Popen(c.cli_command("task", "logs", t, "-f", "--tail", "all"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.tmp)
    try:
        lines: list[str] = []
        errors: list[str] = []

        def read(stream, into: list[str]) -> None:
            for line in stream:
                into.append(line.rstrip("\n"))
        readers = [threading.Thread(target=read, args=(follower.stdout, lines), daemon=True),
                   threading.Thread(target=read, args=(follower.stderr, errors), daemon=True)]
        for r in readers:
            r.start()
        wait_for(lambda: any("has not run yet" in e for e in errors), 30, what="the follower to wait")
        c.start_worker("w1")  # now it runs: the follower follows its first attempt
        wait_for(lambda: len(lines) >= 3, 30, what="three lines followed")
        c.kill_manager(signal.SIGKILL)  # the follower waits for it
        c.start_manager()
        assert follower.wait(timeout=90) == 0, errors
        for r in readers:
            r.join(10)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert lines == [f"line {i}" for i in range(1, 41)], errors  # every line once, in order, to the last
