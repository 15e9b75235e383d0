"""Issue 10, "Why" (Output): rows as wide as the longest name, REASON cut at 60 characters,
"Completed" for a task the user stopped, a finished task's port, `node ls` mixing reserved cores
with host CPU%, a lost node's stale figures, `inspect` in Python dict syntax, escape sequences
printed raw. Tables now fit the terminal, and --json / inspect keep every value whole."""
from __future__ import annotations

import json

import pytest

from cube.cli import render


def rows(out: str) -> list[str]:
    return out.splitlines()[1:]


def column(out: str, header: str) -> list[str]:
    """The values under `header` (columns are two or more spaces apart; values have none)."""
    lines = out.splitlines()
    start = lines[0].index(header)
    return [line[start:].split("  ")[0].strip() for line in lines[1:]]


def test_ls_shows_live_tasks_unless_all(cube, manager):
    manager.add(name="live")
    manager.add(name="done", state="Completed", exit_code=0)
    assert column(cube("task", "ls").out, "NAME") == ["live"]
    assert sorted(column(cube("task", "ls", "-a").out, "NAME")) == ["done", "live"]
    assert sorted(column(cube("task", "ls", "--all").out, "NAME")) == ["done", "live"]


def test_ls_filters_are_sent_and_checked(cube, manager):
    manager.add(name="a", worker="w1")
    manager.add(name="b", worker="w2", state="Failed")
    r = cube("task", "ls", "--state", "Failed,running", "--worker", "w1", "--worker", "w2", "--name", "b")
    assert r.status == 0 and column(r.out, "NAME") == ["b"]
    body = manager.sent("task.ls")[0][1]
    assert body["state"] == ["failed", "running"] and body["worker"] == ["w1", "w2"] and body["name"] == ["b"]
    r = cube("task", "ls", "--state", "runing")
    assert r.status == 2 and "did you mean running?" in r.err


def test_ls_sorts(cube, manager):
    manager.add(name="b", created_at=1.0, restart_count=2)
    manager.add(name="a", created_at=3.0, restart_count=0)
    manager.add(name="c", created_at=2.0, restart_count=1)
    assert column(cube("task", "ls", "--sort", "name").out, "NAME") == ["a", "b", "c"]
    assert column(cube("task", "ls", "--sort", "created").out, "NAME") == ["b", "c", "a"]
    assert column(cube("task", "ls", "--sort=-restarts").out, "NAME") == ["b", "c", "a"]
    r = cube("task", "ls", "--sort", "nmae")
    assert r.status == 2 and "did you mean name?" in r.err


@pytest.mark.parametrize("fields,state", [
    ({"state": "Completed", "desired": "stopped", "exit_code": 137}, "Stopped (by user)"),
    ({"state": "Failed", "desired": "stopped", "exit_code": 1}, "Stopped (by user)"),
    ({"state": "Running", "desired": "stopped"}, "Running (stopping)"),
    ({"state": "Completed", "exit_code": 0}, "Completed (exit 0)"),
    ({"state": "Failed", "exit_code": 1}, "Failed (exit 1)"),
    ({"state": "Failed", "exit_code": 1, "not_before": 1e12, "restart_count": 1}, "Failed (exit 1, restarting)"),
    ({"state": "Running"}, "Running"),
])
def test_state_says_who_stopped_a_task_and_how_it_ended(cube, manager, fields, state):
    manager.add(name="t", **fields)
    assert column(cube("task", "ls", "-a").out, "STATE") == [state]


def test_a_finished_task_shows_no_port(cube, manager):
    manager.add(name="up", ports=["8080/tcp"], host_ports={"8080/tcp": 32001})
    manager.add(name="down", state="Completed", ports=["8080/tcp"], host_ports={"8080/tcp": 32002})
    out = cube("task", "ls", "-a", "--sort", "name").out
    assert column(out, "PORTS") == ["-", "32001->8080/tcp"]


def test_columns_fit_the_terminal_and_json_keeps_everything(cube, manager, monkeypatch):
    long_name, long_reason = "n" * 200, "the image could not be pulled: " + "r" * 300
    manager.add(name=long_name, reason=long_reason)
    manager.add(name="short", reason="ok")
    monkeypatch.setenv("COLUMNS", "120")
    out = cube("task", "ls").out
    assert all(len(line) <= 120 for line in out.splitlines())
    assert "…" in out and long_name not in out and "short" in out
    assert column(out, "REASON")[1] == "ok"
    whole = json.loads(cube("task", "ls", "--json").out)
    assert {t["name"] for t in whole} == {long_name, "short"} and long_reason in {t["reason"] for t in whole}
    inspect = cube("task", "inspect", long_name).out
    assert long_name in inspect and long_reason in inspect


def test_into_a_pipe_rows_are_whole(cube, manager):
    manager.add(name="web", reason="no worker has 4.0 cpu free; largest free is 2.0 on a-worker-with-a-long-name")
    assert "largest free is 2.0 on a-worker-with-a-long-name" in cube("task", "ls").out


def test_names_and_reasons_cannot_forge_rows(cube, manager):
    manager.add(name="evil\x1b[2J\x1b[1A\rID  fake\nrow", reason="bad\x07\x9b31m\u202eecaf")
    out = cube("task", "ls").out
    assert len(out.splitlines()) == 2
    assert not any(c in out for c in "\x1b\x07\r\x9b\u202e")
    assert "evil ID  fake row" in out and "badecaf" in out


def test_inspect_is_aligned_text_not_python(cube, manager):
    manager.add(name="web", command=["httpd", "-f", "-p", "8080"], env={"A": "<hidden>"}, memory=64 << 20,
                host_ports={"8080/tcp": 32001}, state="Running", desired="running")
    out = cube("task", "inspect", "web").out
    assert "{" not in out and "}" not in out and "'" not in out
    lines = out.split("EVENTS")[0].splitlines()
    top = [line for line in lines if line and not line.startswith(" ") and ":" in line and "EVENTS" not in line]
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in top if line.split(":", 1)[1].strip()}
    assert len(starts) == 1  # values aligned in one column
    assert "command:       httpd -f -p 8080" in out
    assert "memory:        64MiB (67108864)" in out
    assert "host_ports:\n  8080/tcp: 32001" in out
    assert "restart:\n  name:" in out and "EVENTS" in out and "submitted" in out


def node(name: str, state: str = "ready", metrics_state: str = "alive"):
    m = {"cpu_free": 1.5, "memory_free": 3 << 30, "cpu_usage": 0.92, "memory_used": 2 << 30,
         "memory_total": 8 << 30, "disk_free": 50 << 30, "state": metrics_state}
    return {"name": name, "address": "10.0.0.1", "state": state, "cpus": 2, "memory": 4 << 30,
            "disk": 100 << 30, "tasks": 3, "last_seen": 1.0, "metrics": m}


def test_node_ls_separates_reserved_from_the_hosts_use(cube, manager):
    manager.nodes = [node("w1")]
    out = cube("node", "ls").out
    assert column(out, "CPU RESERVED") == ["0.50/2"]  # reserved = offered - free
    assert column(out, "MEMORY RESERVED") == ["1GiB/4GiB"]
    assert column(out, "HOST CPU") == ["92%"] and column(out, "HOST MEM") == ["25%"]
    assert column(out, "DISK FREE") == ["50GiB"] and column(out, "TASKS") == ["3"]


def test_a_lost_node_is_marked_and_its_figures_blank(cube, manager):
    manager.nodes = [node("gone", state="lost"), node("w1")]
    out = cube("node", "ls").out
    gone = out.splitlines()[1]
    assert "LOST" in gone
    for header in ("CPU RESERVED", "MEMORY RESERVED", "HOST CPU", "HOST MEM", "DISK FREE", "TASKS"):
        assert column(out, header)[0] == "-", header
    assert column(out, "HOST CPU")[1] == "92%"


def test_stale_metrics_blank_the_hosts_use(cube, manager):
    manager.nodes = [node("quiet", metrics_state="stale")]
    out = cube("node", "ls").out
    assert column(out, "HOST CPU") == ["-"] and column(out, "CPU RESERVED") == ["0.50/2"]


def test_clean_and_clip():
    assert render.clean("a\tb\nc\x1b[31md") == "a b cd"
    assert render.clean_text("a\tb\nc\x1b[31md\x00") == "a\tb\ncd"
    assert render.clip("abcdef", 4) == "abc…"
    assert render.table(["A", "B"], [["x" * 50, "y" * 50]], max_width=40).splitlines()[1] == "x" * 18 + "…  " + "y" * 18 + "…"
