"""A service: a task template kept at N replicas, one task per numbered slot, with a rolling
update (and rollback) policy. Persisted in the Store; the Manager's ServiceController keeps its
slots filled (docs/architecture.md, "Services")."""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cube.model.task import Task, TaskSpecError, task_from_spec

FAILURE_ACTIONS = ("rollback", "pause", "continue")
ORDERS = ("stop-first", "start-first")
MAX_REPLICAS = 1000
MAX_WAIT = 3600.0  # seconds: the longest update delay or monitor period (NaN and infinity are refused)
MAX_TEMPLATE_BYTES = 64 << 10  # as a task (cube/manager/actor.py, MAX_TASK_BYTES)
_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# update states (Swarm's): "" (never updated), updating, paused, completed,
# rollback_started, rollback_paused, rollback_completed
UPDATING, PAUSED, COMPLETED = "updating", "paused", "completed"
ROLLING_BACK, ROLLBACK_PAUSED, ROLLED_BACK = "rollback_started", "rollback_paused", "rollback_completed"
ACTIVE = (UPDATING, ROLLING_BACK)


@dataclass
class UpdatePolicy:
    """Swarm's defaults: one slot at a time, no delay, 5 s of monitoring, roll back on failure."""

    parallelism: int = 1
    delay: float = 0.0
    monitor: float = 5.0
    failure_action: str = "rollback"
    max_failure_ratio: float = 0.0
    order: str = "stop-first"


@dataclass
class Rollout:
    """An update (or rollback) in progress, persisted so it resumes after a manager restart."""

    state: str = ""
    from_version: int = 0
    to_version: int = 0
    failed: list[int] = field(default_factory=list)  # slots whose replacement failed
    done: list[int] = field(default_factory=list)  # slots whose replacement settled
    message: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    batches: int = 0  # replacements started
    settled_at: float = 0.0  # when a replacement last settled (the update delay counts from there)


@dataclass
class Service:
    name: str
    spec: dict[str, Any]  # the task template, as the user gave it (validated)
    replicas: int
    version: int = 1
    previous_spec: dict[str, Any] | None = None
    previous_version: int = 0
    update: UpdatePolicy = field(default_factory=UpdatePolicy)
    rollout: Rollout = field(default_factory=Rollout)
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Service":
        data = dict(d)
        data["update"] = UpdatePolicy(**(data.get("update") or {}))
        data["rollout"] = Rollout(**(data.get("rollout") or {}))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def spec_of(self, version: int) -> dict[str, Any] | None:
        if version == self.version:
            return self.spec
        if version == self.previous_version:
            return self.previous_spec
        return None

    def pins_host_ports(self) -> bool:
        """Its template, or the one it replaces, publishes a fixed host port: a replacement cannot
        start beside the task it replaces on one address, so replacements are stop-first
        (docs/architecture.md, "Ports")."""
        return any(_fixed_ports(spec) for spec in (self.spec, self.previous_spec) if spec)

    def task_for(self, slot: int, task_id: str, version: int | None = None) -> Task:
        """A new task for `slot` from the spec of `version` (the current one by default)."""
        version = self.version if version is None else version
        spec = {k: v for k, v in (self.spec_of(version) or self.spec).items() if k not in ("id", "name")}
        task = task_from_spec({**spec, "name": f"{self.name}.{slot}.{task_id[:8]}"}, task_id=task_id)
        task.service, task.slot, task.version = self.name, slot, version
        return task


def _fixed_ports(spec: dict[str, Any]) -> list[str]:
    try:
        return task_from_spec({k: v for k, v in spec.items() if k not in ("id", "name")}, task_id="template").fixed_ports
    except TaskSpecError:
        return []


def service_from_spec(body: dict[str, Any]) -> Service:
    """Validate a `service.create` body: {name, replicas, task: {...template}, update?}."""
    name = body.get("name")
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise TaskSpecError("field 'name': a service name is 1-63 lowercase letters, digits, '-' or '_'")
    replicas = check_replicas(body.get("replicas", 1))
    template = body.get("task")
    if not isinstance(template, dict):
        raise TaskSpecError("field 'task': the task template must be a map")
    template = check_template(template)
    now = time.time()
    return Service(name=name, spec=template, replicas=replicas, update=update_policy(body.get("update")),
                   created_at=now, updated_at=now)


def check_replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
        raise TaskSpecError(f"field 'replicas' must be a whole number from 0 to {MAX_REPLICAS}")
    return value


def check_template(template: dict[str, Any]) -> dict[str, Any]:
    """A task template is a task spec without id or name (each replica gets its own); services
    restart their tasks by default (Swarm's restart condition "any")."""
    template = {k: v for k, v in template.items() if k not in ("id", "ID", "name", "Name")}
    if not any(k in template for k in ("restart", "RestartPolicy", "restart_policy")):
        template["restart"] = "always"
        template.setdefault("max_restarts", 10)
    task = task_from_spec(template)  # raises TaskSpecError naming the field
    size = len(json.dumps(template, default=str))
    if size > MAX_TEMPLATE_BYTES:
        raise TaskSpecError(f"field 'task': the template is {size >> 10} KiB; at most {MAX_TEMPLATE_BYTES >> 10} KiB")
    for alias in ("Env", "env"):  # env as a map, whatever form it came in: redaction reads its keys
        template.pop(alias, None)
    if task.env:
        template["env"] = dict(task.env)
    return template


def update_policy(value: Any, base: UpdatePolicy | None = None) -> UpdatePolicy:
    policy = UpdatePolicy(**asdict(base)) if base else UpdatePolicy()
    if value in (None, {}):
        return policy
    if not isinstance(value, dict):
        raise TaskSpecError("field 'update' must be a map")
    for key, raw in value.items():
        if key not in UpdatePolicy.__dataclass_fields__:
            raise TaskSpecError(f"field 'update': unknown key {key!r}")
        if key == "parallelism":
            if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_REPLICAS:
                raise TaskSpecError("field 'update.parallelism' must be a whole number >= 0 (0: all at once)")
        elif key in ("delay", "monitor", "max_failure_ratio"):
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw <= MAX_WAIT:
                raise TaskSpecError(f"field 'update.{key}' must be a number from 0 to {MAX_WAIT:g}")
            raw = float(raw)
            if key == "max_failure_ratio" and raw > 1:
                raise TaskSpecError("field 'update.max_failure_ratio' must be between 0 and 1")
        elif key == "failure_action" and raw not in FAILURE_ACTIONS:
            raise TaskSpecError(f"field 'update.failure_action' must be one of {', '.join(FAILURE_ACTIONS)}")
        elif key == "order" and raw not in ORDERS:
            raise TaskSpecError(f"field 'update.order' must be one of {', '.join(ORDERS)}")
        setattr(policy, key, raw)
    return policy
