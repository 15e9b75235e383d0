"""Issue 11, item 2 and the CLI of item 4: `cube service ...` and `cube node drain|activate`.

Against the fake manager (tests/cli/conftest.py): what each command sends, what it prints, and
how following a service ends, from scripted `service.ps` replies: 0 converged or update
completed, 1 rolled back, paused, timed out or removed."""
from __future__ import annotations

import json

import pytest

from cube.cli import progress
from cube.wire.errors import CONFLICT, NOT_FOUND, UNKNOWN_TYPE, CubeError
from tests.cli.conftest import make_replica, make_service, ps_reply

IMAGE = ["--image", "cube-busybox:latest"]


def sent(manager, msg_type):
    [(_, body)] = manager.sent(msg_type)
    return body


def rows(out: str) -> list[list[str]]:
    """A table's rows, split into columns (two or more spaces apart)."""
    import re
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:]]


# ---- create ---------------------------------------------------------------------------------------

def test_create_sends_the_template_and_the_policy_and_follows_until_every_replica_runs(cube, manager):
    r = cube("service", "create", "--name", "web", "--replicas", "3", *IMAGE, "--cmd", "httpd -f -p 8080",
             "--env", "A=1", "--env", "B=x=y", "--port", "8080", "--port", "53/udp", "--cpu", "0.5",
             "--memory", "64m", "--health", "/health", "--pids-limit", "50", "--update-parallelism", "2",
             "--update-delay", "500ms", "--update-monitor", "1m", "--update-failure-action", "pause",
             "--update-max-failure-ratio", "0.5", "--update-order", "start-first")
    assert r.status == 0 and r.err == "", r.err
    body = sent(manager, "service.create")
    assert body["name"] == "web" and body["replicas"] == 3
    assert body["task"] == {"image": "cube-busybox:latest", "command": "httpd -f -p 8080", "env": {"A": "1", "B": "x=y"},
                            "ports": ["8080", "53/udp"], "cpu": 0.5, "memory": "64m", "health": "/health",
                            "pids_limit": 50}
    assert body["update"] == {"parallelism": 2, "delay": 0.5, "monitor": 60.0, "failure_action": "pause",
                              "max_failure_ratio": 0.5, "order": "start-first"}
    assert r.out.splitlines()[-1] == "web: 3 replicas running at version 1"
    assert [line.split(":")[0] for line in r.out.splitlines()[:3]] == ["web.1", "web.2", "web.3"]
    assert [t for t, _ in manager.calls] == ["service.create", "service.ps"]


def test_max_restarts_alone_keeps_a_service_restarting_always(cube, manager):
    cube("service", "create", "--name", "a", *IMAGE, "--max-restarts", "2", "--detach")
    assert sent(manager, "service.create")["task"]["restart"] == {"name": "always", "max_restarts": 2}
    cube("service", "create", "--name", "b", *IMAGE, "--restart", "on-failure", "--detach")
    assert manager.sent("service.create")[1][1]["task"]["restart"] == {"name": "on-failure"}


def test_create_from_a_service_file_with_flags_on_top(cube, manager, tmp_path):
    path = tmp_path / "web.json"
    path.write_text(json.dumps({"name": "web", "replicas": 2, "update": {"monitor": 1},
                                "task": {"image": "cube-busybox:latest", "env": ["A=1"], "command": ["sleep", "9"]}}))
    r = cube("service", "create", str(path), "--replicas", "4", "--update-order", "start-first", "--detach")
    assert r.status == 0, r.err
    body = sent(manager, "service.create")
    assert body == {"name": "web", "replicas": 4, "update": {"monitor": 1, "order": "start-first"},
                    "task": {"image": "cube-busybox:latest", "env": {"A": "1"}, "command": ["sleep", "9"]}}
    assert r.out == "web: created with 4 replicas\n"


def test_max_restarts_changes_the_files_restart_policy(cube, manager, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"image": "cube-busybox:latest", "restart": "on-failure"}))
    r = cube("service", "create", str(path), "--name", "web", "--max-restarts", "5", "--detach")
    assert r.status == 0, r.err
    assert sent(manager, "service.create")["task"]["restart"] == {"name": "on-failure", "max_restarts": 5}


def test_create_from_a_task_file_on_stdin(cube, manager):
    task = {"id": "ignored", "image": "cube-busybox:latest", "name": "web", "ports": ["80"]}
    r = cube("service", "create", "-", "--replicas", "2", "--detach", stdin=json.dumps(task))
    assert r.status == 0, r.err
    assert sent(manager, "service.create") == {"name": "web", "replicas": 2,
                                               "task": {"image": "cube-busybox:latest", "ports": ["80"]}}


@pytest.mark.parametrize("argv,status,says", [
    (["--name", "Web", *IMAGE], 1, "field 'name'"),
    (["--name", "web", "--replicas", "1001", *IMAGE], 1, "field 'replicas'"),
    (["--name", "web"], 1, "field 'image'"),
    (["--name", "web", *IMAGE, "--port", "http"], 1, "'ports"),
    (["--name", "web", *IMAGE, "--env", "A"], 1, "is not KEY=VALUE"),
    ([*IMAGE], 2, "missing --name"),
    (["--name", "web", *IMAGE, "--update-order", "start-frist"], 2, "did you mean start-first?"),
    (["--name", "web", *IMAGE, "--update-failure-action", "explode"], 2, "rollback, pause, continue"),
    (["--name", "web", *IMAGE, "--update-delay", "soon"], 2, "--update-delay: 'soon' is not a duration"),
    (["--name", "web", *IMAGE, "--update-max-failure-ratio", "2"], 2, "not between 0 and 1"),
    (["--name", "web", *IMAGE, "--update-parallelism", "-1"], 2, "--update-parallelism"),
    (["--name", "web", *IMAGE, "--timeout", "forever"], 2, "--timeout"),
    (["--name", "web", *IMAGE, "--replica", "3"], 2, "did you mean --replicas?"),
])
def test_a_bad_service_is_refused_before_anything_is_sent(cube, manager, argv, status, says):
    r = cube("service", "create", *argv)
    assert r.status == status and says in r.err and r.err.count("\n") == 1, r.err
    assert manager.calls == []


def test_a_bad_service_file_is_one_line(cube, manager, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "web", "task": {"image": "cube-busybox:latest"}, "replica": 2}))
    r = cube("service", "create", str(path))
    assert r.status == 1 and "unknown field 'replica'" in r.err and f"file {path}" in r.err
    path.write_text("[1]")
    r = cube("service", "create", str(path))
    assert r.status == 1 and r.err == f"cube: service file {path} must hold a JSON object\n"


def test_a_name_where_the_file_goes_is_a_usage_error(cube, manager):
    r = cube("service", "create", "web", *IMAGE)
    assert r.status == 2 and "a service's name goes in --name: cube service create --name web" in r.err
    assert manager.calls == []


def test_create_json_and_an_existing_service(cube, manager):
    r = cube("service", "create", "--name", "web", "--replicas", "2", *IMAGE, "--json")
    svc = json.loads(r.out)
    assert r.status == 0 and svc["name"] == "web" and svc["running"] == 2 and r.err == ""
    r = cube("service", "create", "--name", "web", "--replicas", "2", *IMAGE, "--detach")
    assert r.status == 0 and r.out == "web: exists with this spec\n"
    r = cube("service", "create", "--name", "web", "--replicas", "3", *IMAGE)
    assert r.status == 1 and r.err == "cube: service web exists with another spec\n"


def test_an_old_manager_says_so(cube, manager):
    def old(body):
        raise CubeError(UNKNOWN_TYPE, "manager does not handle 'service.create'")
    manager.replies["service.create"] = old
    r = cube("service", "create", "--name", "web", *IMAGE)
    assert r.status == 1 and "older than this cube" in r.err and r.err.count("\n") == 1


# ---- following: how it ends ---------------------------------------------------------------------

def updating(version=2, **rollout):
    return {"state": "updating", "from_version": version - 1, "to_version": version, "message": "updating",
            **rollout}


def test_create_follows_slots_as_they_start(cube, manager):
    svc = make_service("web", 2)
    manager.ps_script = [
        ps_reply(svc),
        ps_reply(svc, make_replica("web", 1, state="Pending", worker="", reason="no worker has 4.0 cpu free"),
                 make_replica("web", 2, state="Scheduled", worker="w2")),
        ps_reply(svc, make_replica("web", 1, worker="w1"), make_replica("web", 2, worker="w2")),
    ]
    r = cube("service", "create", "--name", "web", "--replicas", "2", *IMAGE)
    assert r.status == 0 and r.err == ""
    assert r.out.splitlines() == ["web.1: Pending on - (version 1): no worker has 4.0 cpu free",
                                  "web.2: Scheduled on w2 (version 1)",
                                  "web.1: Running on w1 (version 1)",
                                  "web.2: Running on w2 (version 1)",
                                  "web: 2 replicas running at version 1"]
    assert len(manager.sent("service.ps")) == 3


def test_an_update_that_completes_exits_0(cube, manager):
    manager.add_service(make_service("web", 2), make_replica("web", 1), make_replica("web", 2))
    r = cube("service", "update", "web", "--image", "cube-busybox:1.36", "--env", "V=2")
    assert r.status == 0 and r.err == ""
    assert sent(manager, "service.update") == {"name": "web", "task": {"image": "cube-busybox:1.36", "env": {"V": "2"}}}
    assert r.out.splitlines()[-1] == "web: updated to version 2: 2 replicas running"


def test_an_update_still_rolling_is_followed_to_its_end(cube, manager):
    old1, old2 = make_replica("web", 1), make_replica("web", 2)
    new1, new2 = make_replica("web", 1, version=2), make_replica("web", 2, version=2)
    svc = make_service("web", 2, version=2, previous_version=1, rollout=updating())
    done = make_service("web", 2, version=2, previous_version=1,
                        rollout=updating(state="completed", message="update completed"))
    manager.add_service(make_service("web", 2))
    manager.ps_script = [ps_reply(svc, old1, old2), ps_reply(svc, new1, old2),
                         ps_reply(svc, new1, new2),  # every slot new, but the rollout still watches them
                         ps_reply(done, new1, new2)]
    r = cube("service", "update", "web", "--image", "cube-busybox:1.36")
    assert r.status == 0 and len(manager.sent("service.ps")) == 4
    assert r.out.splitlines()[0] == "web: updating 1→2" and "web: completed" in r.out
    assert r.out.endswith("web: updated to version 2: 2 replicas running\n")


def test_an_update_that_is_rolled_back_exits_1_and_says_why(cube, manager):
    manager.add_service(make_service("web", 2), make_replica("web", 1), make_replica("web", 2))
    bad = make_replica("web", 1, version=2, state="Failed", desired="stopped", image="ghost:1",
                       error="image 'ghost:1' is not present locally and could not be pulled",
                       reason="could not start")
    svc = make_service("web", 2, version=2, previous_version=1, rollout=updating())
    back = make_service("web", 2, version=1, previous_version=2,
                        rollout={"state": "rollback_started", "from_version": 2, "to_version": 1})
    done = make_service("web", 2, version=1, previous_version=2,
                        rollout={"state": "rollback_completed", "from_version": 2, "to_version": 1,
                                 "message": "rolled back"})
    ok1, ok2 = make_replica("web", 1), make_replica("web", 2)
    manager.ps_script = [ps_reply(svc, bad, ok2), ps_reply(back, bad, ok2), ps_reply(done, bad, ok1, ok2)]
    r = cube("service", "update", "web", "--image", "ghost:1")
    assert r.status == 1
    assert r.err == ("cube: web: the update to version 2 failed and was rolled back to version 1 (slot 1: image "
                     "'ghost:1' is not present locally and could not be pulled)\n")
    assert "web: rolling back 2→1" in r.out and "web: rolled back to 1" in r.out


@pytest.mark.parametrize("state,says", [
    ("paused", "the update to version 2 is paused: 1 of 2 replacements failed (slot 2: exited with code 3); "
               "`cube service rollback web` returns to version 1"),
    ("rollback_paused", "the rollback to version 2 is paused: 1 of 2 replacements failed"),
])
def test_a_paused_rollout_exits_1_with_its_message(cube, manager, state, says):
    manager.add_service(make_service("web", 2), make_replica("web", 1), make_replica("web", 2))
    svc = make_service("web", 2, version=2, previous_version=1,
                       rollout=updating(state=state, message="paused: 1 of 2 replacements failed"))
    manager.ps_script = [ps_reply(svc, make_replica("web", 1, version=2),
                                  make_replica("web", 2, version=2, state="Failed", exit_code=3,
                                               started_at=5.0, reason="exited with code 3"))]
    r = cube("service", "update", "web", "--image", "cube-busybox:1.36")
    assert r.status == 1 and says in r.err and r.err.count("\n") == 1, r.err


def test_an_update_that_continues_past_failures_exits_0_with_a_warning(cube, manager):
    manager.add_service(make_service("web", 2), make_replica("web", 1), make_replica("web", 2))
    svc = make_service("web", 2, version=2, previous_version=1,
                       rollout=updating(state="completed", failed=[2], message="update completed; 1 slots failed"))
    manager.ps_script = [ps_reply(svc, make_replica("web", 1, version=2),
                                  make_replica("web", 2, version=2, state="Failed", reason="exited with code 3"))]
    r = cube("service", "update", "web", "--image", "cube-busybox:1.36")
    assert r.status == 0 and "completed, but 1 of 2 slots failed (slot 2)" in r.err and "warning" not in r.out


def test_progress_lines_leave_out_reasons_that_restate_the_line(cube, manager):
    svc = make_service("web", 1)
    manager.ps_script = [ps_reply(svc, make_replica("web", 1, state="Pending", worker="", reason="service web slot 1")),
                         ps_reply(svc, make_replica("web", 1, state="Scheduled", reason="placed on w1")),
                         ps_reply(svc, make_replica("web", 1, reason="running on w1"))]
    r = cube("service", "create", "--name", "web", *IMAGE)
    assert r.out.splitlines()[:3] == ["web.1: Pending on - (version 1)", "web.1: Scheduled on w1 (version 1)",
                                      "web.1: Running on w1 (version 1)"]


def test_following_times_out_with_exit_1_and_the_slot_that_waits(cube, manager):
    svc = make_service("web", 2)
    manager.ps_script = [ps_reply(svc, make_replica("web", 1),
                                  make_replica("web", 2, state="Pending", worker="", reason="no worker has 4.0 cpu free"))]
    r = cube("service", "create", "--name", "web", "--replicas", "2", *IMAGE, "--cpu", "4", "--timeout", "50ms")
    assert r.status == 1 and r.err.count("\n") == 1
    assert ("not converged after 0.05s: 1 of 2 replicas running at version 1; slot 2: Pending (no worker has 4.0 "
            "cpu free); `cube service ps web` follows it") in r.err


def test_a_service_removed_while_followed(cube, manager):
    def gone(body):
        raise CubeError(NOT_FOUND, "no service named 'web'")
    manager.replies["service.ps"] = gone
    r = cube("service", "create", "--name", "web", *IMAGE)
    assert r.status == 1 and r.err == "cube: web was removed while its create was followed\n"


def test_a_manager_gone_quiet_while_followed(cube, manager):
    from cube.cli.session import NotReached

    def quiet(body):
        raise NotReached("cannot reach the manager at 127.0.0.1:5555 (no answer within 3s)", sent=True)
    manager.replies["service.ps"] = quiet
    r = cube("service", "create", "--name", "web", *IMAGE)
    assert r.status == 1 and "the create was accepted but cannot be followed: cannot reach" in r.err


def test_ctrl_c_stops_following_not_the_update(cube, manager):
    manager.add_service(make_service("web", 1), make_replica("web", 1))

    def interrupted(body):
        raise KeyboardInterrupt
    manager.replies["service.ps"] = interrupted
    r = cube("service", "update", "web", "--force")
    assert r.status == 130 and "stopped following web; its update goes on" in r.err


def test_json_follows_quietly_and_prints_the_service_as_last_seen(cube, manager):
    r = cube("service", "create", "--name", "web", "--replicas", "2", *IMAGE, "--json")
    assert r.status == 0 and json.loads(r.out)["running"] == 2


def test_judge():
    svc = make_service("web", 2, version=3)
    a, b = make_replica("web", 1, version=3), make_replica("web", 2, version=3)
    assert progress.judge(svc, [a, b], "create", False).code == 0
    assert progress.judge(svc, [a], "create", False) is None  # slot 2 empty
    extra = make_replica("web", 3, version=3)
    assert progress.judge(svc, [a, b, extra], "scale", False) is None  # slot 3 not stopped yet
    extra["desired"] = "stopped"
    assert progress.judge(svc, [a, b, extra], "scale", False).code == 0
    old = make_replica("web", 2, version=2)
    assert progress.judge(svc, [a, old], "update", True) is None
    rolled = make_service("web", 2, rollout={"state": "rollback_completed", "from_version": 2, "to_version": 1})
    a1, b1 = make_replica("web", 1), make_replica("web", 2)
    assert progress.judge(rolled, [a1, b1], "update", True).code == 1
    assert progress.judge(rolled, [a1, b1], "scale", False).code == 0  # rolled back before we came
    assert progress.judge(rolled, [a1, b1], "rollback", True).code == 0


# ---- update, rollback, scale, rm ----------------------------------------------------------------------

def test_update_needs_something_to_update(cube, manager):
    r = cube("service", "update", "web")
    assert r.status == 2 and "nothing to update" in r.err and manager.calls == []


def test_an_unchanged_update_and_a_policy_change(cube, manager):
    manager.add_service(make_service("web", 1), make_replica("web", 1))
    r = cube("service", "update", "web", *IMAGE)
    assert r.status == 0 and r.out == ("web: unchanged at version 1 (the template is the same; --force replaces "
                                       "every task anyway)\n")
    r = cube("service", "update", "web", "--update-parallelism", "0", "--update-monitor", "2")
    assert r.status == 0 and r.out == "web: update policy changed; the template stays at version 1\n"
    assert manager.sent("service.update")[-1][1] == {"name": "web", "update": {"parallelism": 0, "monitor": 2.0}}
    assert manager.services["web"]["version"] == 1


def test_force_replaces_every_task(cube, manager):
    manager.add_service(make_service("web", 1), make_replica("web", 1))
    r = cube("service", "update", "web", "--force", "--detach")
    assert r.status == 0 and r.out == "web: updating to version 2\n"
    assert sent(manager, "service.update") == {"name": "web", "force": True}


def test_update_max_restarts_keeps_the_templates_policy(cube, manager):
    svc = make_service("web", 1)
    svc["spec"]["restart"] = {"name": "on-failure", "max_restarts": 3, "backoff": 2.0}
    manager.add_service(svc, make_replica("web", 1))
    r = cube("service", "update", "web", "--max-restarts", "7", "--detach")
    assert r.status == 0, r.err
    assert sent(manager, "service.update")["task"] == {"restart": {"name": "on-failure", "backoff": 2.0,
                                                                   "max_restarts": 7}}


@pytest.mark.parametrize("argv,says", [
    (["--memory", "1k"], "bad update: field 'memory'"),
    (["--image", ""], "--image must not be empty"),
    (["--restart", "sometimes"], "field 'restart'"),
])
def test_a_bad_update_is_refused_before_anything_is_sent(cube, manager, argv, says):
    manager.add_service(make_service("web", 1), make_replica("web", 1))
    r = cube("service", "update", "web", *argv)
    assert r.status == 1 and says in r.err and manager.sent("service.update") == []


def test_rollback(cube, manager):
    manager.add_service(make_service("web", 1), make_replica("web", 1))
    r = cube("service", "rollback", "web")
    assert r.status == 1 and r.err == "cube: service web has no previous spec to roll back to\n"
    cube("service", "update", "web", "--image", "cube-busybox:1.36")
    r = cube("service", "rollback", "web")
    assert r.status == 0 and r.out.endswith("web: rolled back to version 1: 1 replica running\n")
    assert manager.services["web"]["spec"]["image"] == "cube-busybox:latest"


@pytest.mark.parametrize("argv,expected", [
    (["web", "3"], [{"name": "web", "replicas": 3}]),
    (["web=0"], [{"name": "web", "replicas": 0}]),
    (["web=2", "api=4"], [{"name": "web", "replicas": 2}, {"name": "api", "replicas": 4}]),
])
def test_scale_forms(cube, manager, argv, expected):
    for name in ("web", "api"):
        manager.add_service(make_service(name, 1), make_replica(name, 1))
    r = cube("service", "scale", *argv)
    assert r.status == 0, r.err
    assert [body for _, body in manager.sent("service.scale")] == expected
    last = expected[-1]
    assert r.out.splitlines()[-1].startswith(f"{last['name']}: scaled to {last['replicas']}: ")


@pytest.mark.parametrize("argv", [["web"], ["web", "x"], ["web", "-1"], ["web=", "api=2"], ["=3"], ["web", "1001"],
                                  ["web", "3", "api"]])
def test_bad_scale_targets_are_usage_errors(cube, manager, argv):
    r = cube("service", "scale", *argv)
    assert r.status == 2 and r.err.count("\n") == 1 and manager.calls == []


def test_scale_of_an_unknown_service_and_json(cube, manager):
    manager.add_service(make_service("web", 1), make_replica("web", 1))
    r = cube("service", "scale", "nosuch=2", "web=2", "--json")
    assert r.status == 1 and r.err == "cube: no service named 'nosuch'\n"
    assert json.loads(r.out)[0]["replicas"] == 2


def test_scale_of_a_paused_service_says_it_is_paused(cube, manager):
    svc = make_service("web", 1, version=2, previous_version=1,
                       rollout=updating(state="paused", message="paused: 1 of 1 replacements failed"))
    manager.add_service(svc, make_replica("web", 1, version=1))
    manager.ps_script = [ps_reply(svc, make_replica("web", 1, version=1))]
    r = cube("service", "scale", "web", "2")
    assert r.status == 1 and "is paused" in r.err


def test_rm(cube, manager):
    manager.add_service(make_service("web", 2), make_replica("web", 1), make_replica("web", 2))
    r = cube("service", "rm", "web", "nosuch")
    assert r.status == 1 and r.out == "removed web; 2 tasks stopping\n"
    assert r.err == "cube: no service named 'nosuch'\n"


# ---- ls, ps, inspect -------------------------------------------------------------------------------

def test_ls(cube, manager):
    manager.add_service(make_service("web", 3), make_replica("web", 1), make_replica("web", 2))
    manager.add_service(make_service("api", 2, image="api:2", version=2, previous_version=1,
                                     rollout=updating(state="paused", message="paused: 1 of 2 replacements failed")))
    r = cube("service", "ls")
    assert r.status == 0 and r.out.splitlines()[0].split() == ["NAME", "IMAGE", "REPLICAS", "UPDATE", "VERSION"]
    assert rows(r.out) == [["web", "cube-busybox:latest", "2/3", "-", "1"],
                           ["api", "api:2", "0/2", "paused: 1 of 2 replacements failed", "2"]]
    assert cube("service", "ls", "-q").out == "web\napi\n"
    assert [s["name"] for s in json.loads(cube("service", "ls", "--json").out)] == ["web", "api"]


@pytest.mark.parametrize("rollout,label", [
    ({}, "-"), (updating(), "updating 1→2"), (updating(state="completed", message="update completed"), "completed"),
    (updating(state="completed", message="update completed; 1 slots failed"), "completed: 1 slots failed"),
    ({"state": "rollback_started", "from_version": 2, "to_version": 1, "message": "rolling back"}, "rolling back 2→1"),
    ({"state": "rollback_completed", "to_version": 1, "message": "rolled back"}, "rolled back to 1"),
    ({"state": "rollback_paused", "message": "paused: 2 of 3 replacements failed"},
     "rollback paused: 2 of 3 replacements failed"),
])
def test_update_labels(rollout, label):
    assert progress.label(make_service("web", rollout=rollout)) == label


def test_ps_lists_slots_newest_first_live_unless_all(cube, manager):
    old = make_replica("web", 1, state="Completed", desired="stopped", exit_code=137, reason="updating to version 2")
    new = make_replica("web", 1, version=2, worker="w2")
    two = make_replica("web", 2, version=2, state="Failed", exit_code=1, not_before=1e12, restart_count=1,
                       reason="exited with code 1; restart 2 of 10 in 2s", desired="running",
                       restart={"name": "always", "max_restarts": 10})
    gone = make_replica("web", 3, state="Completed", desired="stopped", exit_code=137, reason="scaled down to 2")
    manager.add_service(make_service("web", 2, version=2), gone, two, old, new)
    r = cube("service", "ps", "web")
    assert r.status == 0 and r.out.splitlines()[0].split() == ["SLOT", "TASK", "STATE", "WORKER", "VERSION", "REASON"]
    assert rows(r.out) == [["1", new["name"], "Running", "w2", "2"],
                           ["2", two["name"], "Failed (exit 1, restarting)", "w1", "2",
                            "exited with code 1; restart 2 of 10 in 2s"]]
    r = cube("service", "ps", "web", "-a")
    assert [row[:3] for row in rows(r.out)] == [["1", new["name"], "Running"],
                                                ["1", "\\_ " + old["name"], "Stopped"],
                                                ["2", two["name"], "Failed (exit 1, restarting)"],
                                                ["3", gone["name"], "Stopped"]]
    assert rows(r.out)[1][-1] == "updating to version 2"
    assert cube("service", "ps", "web", "-q").out.split() == [new["id"], two["id"]]
    whole = json.loads(cube("service", "ps", "web", "-a", "--json").out)
    assert whole["service"]["name"] == "web" and [t["id"] for t in whole["tasks"]] == [new["id"], old["id"],
                                                                                         two["id"], gone["id"]]
    r = cube("service", "ps", "nosuch")
    assert r.status == 1 and r.err == "cube: no service named 'nosuch'\n" and r.out == ""


def test_inspect_is_aligned_text_with_the_events(cube, manager):
    svc = make_service("web", 2, version=2, previous_version=1, rollout=updating())
    svc["spec"].update(command=["httpd", "-f"], env={"A": "<hidden>"})
    svc["previous_spec"] = {"image": "cube-busybox:1.35"}
    manager.add_service(svc)
    manager.service_events["web"] = [{"time": 1700000000.0, "message": "created with 2 replicas"},
                                     {"time": 1700000001.0, "message": "slot 1: replacing version 1 with 2"}]
    out = cube("service", "inspect", "web").out
    assert "{" not in out and "'" not in out
    assert "name:" in out and "rollout:\n  state:" in out and "updating" in out
    assert "command: httpd -f" in out and "A: <hidden>" in out and "monitor:           5s" in out
    assert "previous_spec:\n  image: cube-busybox:1.35" in out
    events = out.split("EVENTS\n")[1].splitlines()
    assert events[0].split() == ["TIME", "MESSAGE"] and events[2].endswith("slot 1: replacing version 1 with 2")
    whole = json.loads(cube("service", "inspect", "web", "--json").out)
    assert whole["service"]["name"] == "web" and len(whole["events"]) == 2


# ---- nodes --------------------------------------------------------------------------------------

def test_drain_and_activate(cube, manager):
    manager.nodes = [{"name": "w1", "address": "10.0.0.1", "state": "ready", "cpus": 2, "memory": 1 << 30,
                      "availability": "active"},
                     {"name": "w2", "address": "10.0.0.2", "state": "ready", "cpus": 2, "memory": 1 << 30}]
    r = cube("node", "drain", "w1", "nosuch")
    assert r.status == 1 and r.out == "w1: drained; its tasks move to other workers\n"
    assert r.err == "cube: no worker named 'nosuch'\n"
    out = cube("node", "ls").out
    assert [row[3] for row in rows(out)] == ["drain", "active"] and "AVAILABILITY" in out.splitlines()[0]
    r = cube("node", "activate", "w1", "--json")
    assert r.status == 0 and json.loads(r.out)["availability"] == "active"
    assert manager.sent("node.activate") == [("node.activate", {"name": "w1"})]


def test_drain_needs_a_name(cube, manager):
    r = cube("node", "drain")
    assert r.status == 2 and "missing NAME" in r.err


def test_conflicts_from_the_manager_are_one_line(cube, manager):
    def busy(body):
        raise CubeError(CONFLICT, "the cluster keeps at most 1000 tasks (--max-tasks)")
    manager.replies["service.scale"] = busy
    manager.add_service(make_service("web", 1))
    r = cube("service", "scale", "web", "999")
    assert r.status == 1 and r.err == "cube: the cluster keeps at most 1000 tasks (--max-tasks)\n"


# ---- the live display ------------------------------------------------------------------------------

def test_the_live_table_draws_every_slot():
    pytest.importorskip("rich")
    from rich.console import Console
    svc = make_service("web", 3, version=2, previous_version=1, rollout=updating())
    tasks = [make_replica("web", 1, version=2), make_replica("web", 2, version=1),
             make_replica("web", 2, version=2, state="Pending", worker="", reason="no worker has 4.0 cpu free")]
    console = Console(width=120, record=True, force_terminal=False)
    console.print(progress.Live.render(svc, tasks, 3.2, 40))
    text = console.export_text()
    assert "web  version 2  1/3 running  update: updating 1→2  3s" in text
    lines = text.splitlines()
    assert any(line.split()[:1] == ["1"] and "✓ Running" in line for line in lines)
    assert any(line.split()[:1] == ["2"] and "Pending" in line and "no worker has 4.0 cpu free" in line
               for line in lines)
    assert any(line.split() == ["3", "-", "waiting", "-", "-"] for line in lines)


def test_the_live_table_keeps_to_the_terminals_height():
    pytest.importorskip("rich")
    from rich.console import Console
    svc = make_service("web", 50)
    tasks = [make_replica("web", s) for s in range(1, 49)] + [make_replica("web", 49, state="Pending")]
    console = Console(width=120, record=True, force_terminal=False)
    console.print(progress.Live.render(svc, tasks, 1.0, 20))
    text = console.export_text()
    assert len(text.splitlines()) <= 20 and "Pending" in text and "more slots (48 running at version 1)" in text
