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
from cube.model.service import Service, service_from_spec
from cube.model.task import TaskSpecError, task_from_spec
from cube.wire.errors import BAD_REQUEST, CONFLICT, NOT_FOUND, CubeError

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


def make_service(name: str = "web", replicas: int = 1, image: str = "cube-busybox:latest",
                 **fields: Any) -> dict[str, Any]:
    """A service as the manager shows it: Service.to_dict() and `running`, with `fields` on top
    (`rollout` merged into the default one)."""
    svc = Service(name=name, spec={"image": image, "restart": {"name": "always", "max_restarts": 10}},
                  replicas=replicas, created_at=1.0, updated_at=1.0).to_dict()
    svc["running"] = 0
    rollout = fields.pop("rollout", {})
    svc.update(fields)
    svc["rollout"].update(rollout)
    return svc


_clock = [1000.0]


def make_replica(service: str = "web", slot: int = 1, version: int = 1, state: str = "Running",
                 **fields: Any) -> dict[str, Any]:
    """One of a service's tasks, as `service.ps` lists it; each newer than the one made before."""
    _clock[0] += 1
    t = make_task(state=state, service=service, slot=slot, version=version, worker=fields.pop("worker", "w1"),
                  created_at=fields.pop("created_at", _clock[0]), **fields)
    t["name"] = f"{service}.{slot}.{t['id'][:8]}"
    return t


def ps_reply(svc: dict[str, Any], *tasks: dict[str, Any]) -> dict[str, Any]:
    return {"service": svc, "tasks": list(tasks)}


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
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # service -> its tasks
    service_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ps_script: list[dict[str, Any]] = field(default_factory=list)  # service.ps replies in turn; the last repeats

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
        return {"logs": "".join(lines[-body["tail"]:] if body.get("tail") else [])}

    def node_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": self.nodes, "continue": ""}

    def _node(self, name: str) -> dict[str, Any]:
        for n in self.nodes:
            if n["name"] == name:
                return n
        raise CubeError(NOT_FOUND, f"no worker named {name!r}")

    def node_drain(self, body: dict[str, Any]) -> dict[str, Any]:
        n = self._node(body["name"])
        n["availability"] = "drain"
        return {"node": n}

    def node_activate(self, body: dict[str, Any]) -> dict[str, Any]:
        n = self._node(body["name"])
        n["availability"] = "active"
        return {"node": n}

    # ---- services: every change converges at once (scripted `ps_script` replies show the way) ----
    def add_service(self, svc: dict[str, Any], *tasks: dict[str, Any]) -> dict[str, Any]:
        self.services[svc["name"]] = svc
        self.replicas[svc["name"]] = list(tasks)
        return svc

    def _service(self, name: str) -> dict[str, Any]:
        if name not in self.services:
            raise CubeError(NOT_FOUND, f"no service named {name!r}")
        return self.services[name]

    def _view(self, svc: dict[str, Any]) -> dict[str, Any]:
        tasks = self.replicas.get(svc["name"], [])
        running = sum(1 for t in tasks if t["state"] == "Running" and t["desired"] == "running"
                      and 0 < t["slot"] <= svc["replicas"])
        return json_copy({**svc, "running": running})

    def _converge(self, svc: dict[str, Any]) -> None:
        tasks = self.replicas.setdefault(svc["name"], [])
        for t in tasks:
            if t["desired"] == "running" and (t["slot"] > svc["replicas"] or t["version"] != svc["version"]):
                t.update(desired="stopped", state="Completed", exit_code=137)
        held = {t["slot"] for t in tasks if t["desired"] == "running"}
        for slot in range(1, svc["replicas"] + 1):
            if slot not in held:
                tasks.append(make_replica(svc["name"], slot, svc["version"], image=svc["spec"]["image"]))
        if svc["rollout"]["state"] == "updating":
            svc["rollout"].update(state="completed", message="update completed")
        elif svc["rollout"]["state"] == "rollback_started":
            svc["rollout"].update(state="rollback_completed", message="rolled back")

    def service_create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            new = Service.to_dict(service_from_spec(body))
        except TaskSpecError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        known = self.services.get(body["name"])
        if known is not None:
            if (known["spec"], known["replicas"]) != (new["spec"], new["replicas"]):
                raise CubeError(CONFLICT, f"service {body['name']} exists with another spec")
            return {"service": self._view(known), "existing": True}
        self.services[new["name"]] = new
        reply = {"service": self._view(new)}
        self._converge(new)
        return reply

    def service_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"services": [self._view(s) for s in self.services.values()], "continue": ""}

    def service_inspect(self, body: dict[str, Any]) -> dict[str, Any]:
        svc = self._service(body["name"])
        return {"service": self._view(svc), "events": self.service_events.get(svc["name"], [])}

    def service_ps(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.ps_script:
            return json_copy(self.ps_script.pop(0) if len(self.ps_script) > 1 else self.ps_script[0])
        svc = self._service(body["name"])
        return {"service": self._view(svc), "tasks": json_copy(self.replicas.get(svc["name"], []))}

    def service_scale(self, body: dict[str, Any]) -> dict[str, Any]:
        svc = self._service(body["name"])
        svc["replicas"] = body["replicas"]
        reply = {"service": self._view(svc)}
        self._converge(svc)
        return reply

    def service_update(self, body: dict[str, Any]) -> dict[str, Any]:
        svc = self._service(body["name"])
        spec = {**svc["spec"], **(body.get("task") or {})}
        svc["update"].update(body.get("update") or {})
        if spec == svc["spec"] and not body.get("force"):
            return {"service": self._view(svc), **({} if body.get("update") else {"unchanged": True})}
        svc.update(previous_spec=svc["spec"], previous_version=svc["version"], spec=spec, version=svc["version"] + 1)
        svc["rollout"].update(state="updating", from_version=svc["previous_version"], to_version=svc["version"],
                              message="updating")
        reply = {"service": self._view(svc)}
        self._converge(svc)
        return reply

    def service_rollback(self, body: dict[str, Any]) -> dict[str, Any]:
        svc = self._service(body["name"])
        if svc["previous_spec"] is None:
            raise CubeError(CONFLICT, f"service {svc['name']} has no previous spec to roll back to")
        svc.update(spec=svc["previous_spec"], previous_spec=svc["spec"], version=svc["previous_version"],
                   previous_version=svc["version"])
        svc["rollout"].update(state="rollback_started", from_version=svc["previous_version"],
                              to_version=svc["version"], message="rolling back")
        reply = {"service": self._view(svc)}
        self._converge(svc)
        return reply

    def service_rm(self, body: dict[str, Any]) -> dict[str, Any]:
        svc = self.services.pop(self._service(body["name"])["name"])
        live = [t for t in self.replicas.pop(svc["name"], []) if t["desired"] == "running"]
        return {"name": svc["name"], "stopped": len(live)}


def json_copy(value: Any) -> Any:
    """What crossing the wire leaves of a value: a copy, not the fake's own dicts."""
    import json
    return json.loads(json.dumps(value))


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
    monkeypatch.setattr("cube.cli.progress.POLL", 0.001)
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
