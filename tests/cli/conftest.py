"""In-process CLI tests: `main([...])` with stdout/stderr captured, against a fake manager that
answers `cube.cli.session.call` the way cube-manager does (issue 10)."""
from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cube.cli import main as cli
from cube.cli import session
from cube.model.task import task_from_spec
from cube.wire.errors import NOT_FOUND, CubeError

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


@dataclass
class Result:
    status: int
    out: str
    err: str


def make_task(**fields: Any) -> dict[str, Any]:
    """A task as the manager lists it: Task.to_dict() of a valid spec, with `fields` on top."""
    spec = {"image": fields.pop("image", "cube-busybox:latest"), "name": "web"}
    if "id" in fields:
        spec["id"] = fields["id"]
    t = task_from_spec(spec).to_dict()  # then any name: the manager's view of what it holds
    t.update(fields)
    return t


@dataclass
class FakeManager:
    """The API, in memory: tasks by id; `start_as` is what a new task looks like when inspected
    (state, reason...), `replies` overrides a message type with a function of the body."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    start_as: dict[str, Any] = field(default_factory=lambda: {"state": "Running", "started_at": 1.0})
    replies: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    logs: str = "line 1\nline 2\n"

    def __call__(self, conn: Any, msg_type: str, body: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        self.calls.append((msg_type, body))
        if msg_type in self.replies:
            return self.replies[msg_type](body)
        return getattr(self, msg_type.replace(".", "_"))(body)

    def sent(self, msg_type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [c for c in self.calls if msg_type is None or c[0] == msg_type]

    def add(self, **fields: Any) -> dict[str, Any]:
        t = make_task(**fields)
        self.tasks[t["id"]] = t
        return t

    def find(self, key: str) -> dict[str, Any]:
        for t in self.tasks.values():
            if t["id"] == key or t["name"] == key or (len(key) >= 4 and t["id"].startswith(key)):
                return t
        raise CubeError(NOT_FOUND, f"no task with id or name {key!r}")

    def task_start(self, body: dict[str, Any]) -> dict[str, Any]:
        t = task_from_spec(body["task"]).to_dict()
        self.tasks[t["id"]] = {**t, **self.start_as}
        return {"task": t}

    def task_inspect(self, body: dict[str, Any]) -> dict[str, Any]:
        t = self.find(body["id"])
        return {"task": t, "events": [{"seq": 1, "time": t["created_at"], "state": "Pending", "worker": "",
                                       "reason": "submitted"}]}

    def task_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        t = self.find(body["id"])
        t["desired"] = "stopped"
        return {"task": t}

    def task_restart(self, body: dict[str, Any]) -> dict[str, Any]:
        t = self.find(body["id"])
        t["desired"] = "running"
        return {"task": t}

    def task_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        states = {s.lower() for s in body.get("state", [])}
        rows = [t for t in self.tasks.values()
                if (body.get("all") or states or t["state"] not in ("Completed", "Failed"))
                and (not states or t["state"].lower() in states)
                and (not body.get("worker") or t["worker"] in body["worker"])
                and (not body.get("name") or t["name"] in body["name"])]
        return {"tasks": rows, "continue": ""}

    def task_logs(self, body: dict[str, Any]) -> dict[str, Any]:
        self.find(body["id"])
        lines = self.logs.splitlines(keepends=True)
        return {"logs": "".join(lines[-body["tail"]:])}

    def node_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": self.nodes, "continue": ""}


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch, tmp_path):
    """Nothing of the caller's environment: no credentials, no manager address, a known width."""
    for var in ("CUBE_CREDENTIALS", "CUBE_MANAGER", "COLUMNS", "CUBE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def manager(monkeypatch) -> FakeManager:
    fake = FakeManager()
    monkeypatch.setattr(session, "call", fake)
    monkeypatch.setattr("cube.cli.submit._POLL", 0.01)
    return fake


@pytest.fixture
def cube(capsys, monkeypatch) -> Callable[..., Result]:
    """cube(*argv, stdin=None) -> Result: `main(argv)` in this process."""
    def run(*argv: str, stdin: str | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as exit_:
            cli.main(list(argv))
        out, err = capsys.readouterr()
        return Result(exit_.value.code, out, err)
    return run


def run_bin(*argv: str, python: str = PYTHON, env: dict[str, str] | None = None, stdin: str = "",
            shell: str | None = None) -> subprocess.CompletedProcess:
    """bin/cube in its own process (for what only a process shows: pipes, interpreters)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CUBE_")}
    cmd = shell if shell is not None else [python, str(ROOT / "bin" / "cube"), *argv]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, check=False, env={**base, **(env or {})},
                          shell=shell is not None, cwd=ROOT)
