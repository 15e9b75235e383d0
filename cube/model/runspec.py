"""What the Manager asks a worker to run for one task: built once per attempt, sent in worker.run.

The worker needs the container's recipe and the resources it reserves, not the whole Task (its
restart policy, history and health check are the Manager's business). `from_dict` checks every
field, so a malformed command is refused with the field named before any slot is touched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cube.model import ports as port_spec
from cube.model.task import Task


class RunSpecError(ValueError):
    """A worker.run spec with a missing or ill-typed field; the message names it."""


@dataclass
class RunSpec:
    task_id: str
    name: str
    image: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0  # cores reserved; 0 means no limit
    memory: int = 0  # bytes reserved; 0 means no limit
    disk: int = 0  # bytes reserved
    ports: list[str] = field(default_factory=list)  # container ports such as "8080/tcp"
    pids_limit: int = 0  # most processes in the container; 0 means the worker's default

    @classmethod
    def of(cls, task: Task) -> "RunSpec":
        return cls(task.id, task.name, task.image, list(task.command) if task.command else None,
                   dict(task.env), float(task.cpu), int(task.memory), int(task.disk), list(task.ports),
                   int(task.pids_limit))

    def to_dict(self) -> dict[str, Any]:
        """A plain map (written out: `asdict` recurses and is slow on a busy worker)."""
        return {"task_id": self.task_id, "name": self.name, "image": self.image,
                "command": list(self.command) if self.command is not None else None, "env": dict(self.env),
                "cpu": self.cpu, "memory": self.memory, "disk": self.disk, "ports": list(self.ports),
                "pids_limit": self.pids_limit}

    @classmethod
    def from_dict(cls, d: Any) -> "RunSpec":
        if not isinstance(d, dict):
            raise RunSpecError("spec must be a map")
        for key in ("task_id", "name", "image"):
            if not isinstance(d.get(key), str) or not d[key] and key != "name":
                raise RunSpecError(f"spec field {key!r} must be a non-empty string")
        command = d.get("command")
        if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
            raise RunSpecError("spec field 'command' must be a list of strings")
        env = d.get("env") or {}
        if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise RunSpecError("spec field 'env' must map strings to strings")
        ports = d.get("ports") or []
        if not (isinstance(ports, list) and all(isinstance(p, str) for p in ports)):
            raise RunSpecError("spec field 'ports' must be a list of strings")
        try:
            ports = [str(m) for m in port_spec.parse_all(ports)]
        except port_spec.PortError as e:
            raise RunSpecError(f"spec field 'ports': {e}") from None
        cpu = d.get("cpu") or 0.0
        if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not math.isfinite(cpu) or cpu < 0:
            raise RunSpecError("spec field 'cpu' must be a finite number >= 0")
        sizes = {}
        for key in ("memory", "disk", "pids_limit"):  # pids_limit is absent in an older manager's spec
            value = d.get(key) or 0
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RunSpecError(f"spec field {key!r} must be an integer >= 0")
            sizes[key] = value
        return cls(d["task_id"], d["name"], d["image"], command, dict(env), float(cpu), sizes["memory"],
                   sizes["disk"], list(ports), sizes["pids_limit"])
