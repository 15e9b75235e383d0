"""Issue 12, part 1, end to end: `cube events` against a real cube-manager (secure, LevelDB) and a
real worker running busybox containers. Every event exactly once in seq order; a replay --since
across a SIGKILLed and restarted manager has no gap and no repeat; a follower reports the manager
going away; filters; read-only credentials; an unreachable manager exits 1."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from cube.harness import free_ports

pytestmark = pytest.mark.timeout(300)


def stored(c) -> list[dict]:
    """Every stored event, by the request `cube events` uses."""
    out, after = [], 0
    while True:
        page = c.call("events.since", {"seq": after})
        out += page["events"]
        after = page["next"]
        if not page["more"]:
            return out


def events_cli(c, *args: str, check: bool = True) -> list[dict]:
    result = c.cli("events", "--json", *args, check=check, timeout=60)
    return [json.loads(line) for line in result.stdout.splitlines()]


def start(c, busybox: str, name: str) -> str:
    task_id = c.start_task("--image", busybox, "--name", name, "--cmd", "sleep 3600", "--detach")
    c.wait_state(task_id, "Running", timeout=30)
    return task_id


def test_events_replay_follow_and_survive_a_manager_restart(make_cluster, busybox, tmp_path):
    c = make_cluster()
    w1 = c.start_worker("w1")
    ids = [start(c, busybox, f"ev{i}") for i in range(3)]

    # Every stored event, exactly once, in order, with the task names.
    before = stored(c)
    got = events_cli(c, "--since", "0", "--count", str(len(before)))
    assert [e["seq"] for e in got] == [e["seq"] for e in before] == list(range(1, len(before) + 1))
    assert {e["name"] for e in got if e["type"] == "task"} == {"ev0", "ev1", "ev2"}
    assert ("node", w1, "joined") in {(e["type"], e.get("node"), e.get("action")) for e in got}

    # Filters.
    assert {e["type"] for e in events_cli(c, "--since", "0", "--filter", "type=node", "--timeout", "2")} == {"node"}
    mine = events_cli(c, "--since", "0", "--filter", "task=ev1", "--timeout", "2")
    assert {e["task_id"] for e in mine} == {ids[1]} and [e["state"] for e in mine][-1] == "Running"

    # A follower, then the manager goes away: reported, exit 1.
    follower = subprocess.Popen(c.cli_command("events", "--since", "0"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.tmp, stdin=subprocess.DEVNULL)
    try:
        for _ in before:  # replayed: it follows now
            assert follower.stdout.readline()
        c.kill_manager(signal.SIGKILL)
        _, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 1 and "lost the manager" in err, err

    # Restarted on the same data: the numbers continue, with no gap and no repeat.
    c.start_manager()
    c.wait_worker_ready("w1")
    later = start(c, busybox, "ev-after")
    c.cli("task", "stop", ids[0])
    c.wait_state(ids[0], "Completed", timeout=30)
    after = stored(c)
    got = events_cli(c, "--since", "0", "--count", str(len(after)))
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(1, len(after) + 1)) and got[:len(before)] == before
    assert any(e["type"] == "node" and e["action"] == "back" and e["seq"] > len(before) for e in got)
    assert [e["state"] for e in got if e.get("task_id") == later] == ["Pending", "Scheduled", "Running"]
    # --since N: exactly what came after N.
    tail = events_cli(c, "--since", str(len(before)), "--count", str(len(after) - len(before)))
    assert tail == got[len(before):]

    # Replay, then live: a follower from 0 sees the old events and the new ones, each once.
    follower = subprocess.Popen(c.cli_command("events", "--json", "--since", "0", "--count", str(len(after) + 2)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c.env, cwd=c.tmp,
                                stdin=subprocess.DEVNULL)
    try:
        c.cli("task", "stop", ids[1])  # desired stopped, then Completed: 2 more events
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(x)["seq"] for x in out.splitlines()] == list(range(1, len(after) + 3))

    # Read-only credentials may follow events.
    ro = tmp_path / "ro.credentials"
    c.cli("credentials", "create", "ro", "--role", "read-only", "--output", str(ro))
    got = events_cli(c, "--since", "0", "--count", "3", "--credentials", str(ro))
    assert [e["seq"] for e in got] == [1, 2, 3]


def test_events_without_a_manager_exit_1(make_cluster):
    c = make_cluster()
    (port,) = free_ports(1)
    result = subprocess.run(c.cli_command("events", "--since", "0")[:-2] + ["--manager", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=60, env=c.env, cwd=c.tmp,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and "cannot reach the manager" in result.stderr, result.stderr
