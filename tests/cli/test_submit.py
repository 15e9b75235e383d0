"""Issue 10, "Why" (Wrong or silent outcomes), the CLI's side of submit-time truth: `start` said
nothing of a task that could never run. Invalid tasks are refused before anything is sent; a
task that cannot be placed now is accepted with a warning and the reason; one that failed to
start says why and exits 1; the manager's refusals (a conflicting id, a taken name) are one line."""
from __future__ import annotations

import json

import pytest

from cube.wire.errors import CONFLICT, CubeError

IMAGE = ["--image", "cube-busybox:latest"]


@pytest.mark.parametrize("flags,field", [
    (["--port", "http"], "ports"), (["--memory", "1k"], "memory"), (["--restart", "sometimes"], "restart"),
    (["--cpu", "-1"], "cpu"), (["--pids-limit", "0"], "pids_limit"), (["--health", "health"], "health"),
])
def test_invalid_specs_are_refused_locally_with_the_field_named(cube, manager, flags, field):
    r = cube("task", "start", *IMAGE, *flags)
    assert r.status == 1 and f"'{field}" in r.err and r.err.count("\n") == 1
    assert manager.calls == []


def test_a_task_that_runs_prints_its_id_and_nothing_else(cube, manager):
    r = cube("task", "start", *IMAGE, "--name", "web")
    assert r.status == 0 and r.err == ""
    sent = manager.sent("task.start")[0][1]["task"]
    assert r.out == sent["id"] + "\n"
    assert [t for t, _ in manager.calls] == ["task.start", "task.inspect"]


def test_a_task_that_cannot_be_placed_is_accepted_with_a_warning(cube, manager):
    manager.start_as = {"state": "Pending", "reason": "no worker has 4.0 cpu free; largest free is 2.0 on w1"}
    r = cube("task", "start", *IMAGE, "--cpu", "4")
    assert r.status == 0 and len(r.out.split()) == 1
    assert r.err == (f"cube: warning: task {r.out.strip()[:12]} was accepted but cannot be placed now: no "
                     "worker has 4.0 cpu free; largest free is 2.0 on w1\n")


def test_a_task_still_pending_after_the_wait_is_a_warning(cube, manager, monkeypatch):
    monkeypatch.setattr("cube.cli.submit.WATCH", 0.05)
    manager.start_as = {"state": "Pending", "reason": "submitted"}
    r = cube("task", "start", *IMAGE)
    assert r.status == 0 and "warning" in r.err and "not placed yet" in r.err


def test_a_task_that_failed_to_start_says_why_and_exits_1(cube, manager):
    manager.start_as = {"state": "Failed", "desired": "running", "not_before": 1e12, "restart_count": 0,
                        "error": "image 'nosuch:1' is not present locally and could not be pulled: denied",
                        "reason": "could not start: image ...; restart 1 of 3 in 1s"}
    r = cube("task", "start", "--image", "nosuch:1")
    assert r.status == 1 and len(r.out.split()) == 1  # the id still, for `cube task stop`
    assert "failed to start: image 'nosuch:1' is not present locally and could not be pulled: denied" in r.err
    assert "tried again" in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize("started_at", [5.0, 0.0])  # 0: it ended before its Running was recorded
def test_a_task_that_ran_and_failed_is_not_a_failed_start(cube, manager, started_at):
    manager.start_as = {"state": "Failed", "started_at": started_at, "exit_code": 3,
                        "reason": "exited with code 3; restart 1 of 3 in 1s"}
    r = cube("task", "start", *IMAGE, "--cmd", "sh -c 'exit 3'")
    assert r.status == 0 and len(r.out.split()) == 1
    assert r.err.endswith("started, then exited with code 3: exited with code 3; restart 1 of 3 in 1s\n")


def test_a_task_that_ran_and_completed_is_quiet(cube, manager):
    manager.start_as = {"state": "Completed", "started_at": 0.0, "exit_code": 0}
    r = cube("task", "start", *IMAGE, "--cmd", "true")
    assert r.status == 0 and r.err == ""


def test_detach_does_not_watch(cube, manager):
    manager.start_as = {"state": "Pending", "reason": "no worker"}
    r = cube("task", "start", *IMAGE, "--detach")
    assert r.status == 0 and r.err == "" and [t for t, _ in manager.calls] == ["task.start"]


def test_json_prints_the_task_as_last_seen(cube, manager):
    r = cube("task", "start", *IMAGE, "--json")
    assert r.status == 0 and json.loads(r.out)["state"] == "Running"


@pytest.mark.parametrize("message", [
    "task 1234 exists with a different image; use a new id, or stop it and start a new task",
    "a live task is already named 'web' (0123456789ab); choose another name, or stop that task first",
])
def test_conflicts_are_one_line(cube, manager, message):
    def conflict(body):
        raise CubeError(CONFLICT, message)
    manager.replies["task.start"] = conflict
    r = cube("task", "start", *IMAGE, "--name", "web")
    assert r.status == 1 and r.err == f"cube: {message}\n" and r.out == ""


def test_restart_and_max_restarts_pass_through(cube, manager):
    cube("task", "start", *IMAGE, "--restart", "always", "--max-restarts", "2", "--detach")
    spec = manager.sent("task.start")[0][1]["task"]
    assert spec["restart"] == "always" and spec["max_restarts"] == 2


def test_restart_sends_task_restart_per_id(cube, manager):
    a, b = manager.add(name="a", desired="stopped", state="Completed"), manager.add(name="b")
    r = cube("task", "restart", "a", "b")
    assert r.status == 0 and r.out.split() == [a["id"], b["id"]]
    assert manager.sent("task.restart") == [("task.restart", {"id": "a"}), ("task.restart", {"id": "b"})]


def test_restart_of_an_unknown_task(cube, manager):
    r = cube("task", "restart", "nosuch")
    assert r.status == 1 and r.err == "cube: no task with id or name 'nosuch'\n"
