"""Chaos scripts: a TOML file with a [cluster] table and a list of [[step]] tables.

Parsing is strict (an unknown step kind or key is an error naming the step) because a chaos
script with a typo would otherwise do nothing and still pass. See docs/chaos.md for the format.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_IMAGE = "cube-busybox:latest"

COMMON = {"do", "note"}
STEP_KEYS: dict[str, set[str]] = {
    "start": {"as", "count", "id", "name", "image", "cmd", "restart", "max_restarts", "cpu", "memory", "pids_limit",
              "ports", "spec", "background", "retries", "expect", "interval", "wait", "timeout", "restarts"},
    "stop": {"task", "expect", "retries"},
    "send": {"to", "type", "body", "from", "identity", "credentials", "envelope", "omit", "raw", "raw_b64", "frames",
             "times", "expect", "code", "timeout"},
    "fault": {"action", "from", "type", "to", "count", "for", "delay", "copies", "window", "hold",
              "payload", "as"},
    "clear": {"rule"},
    "kill": {"target", "signal"},
    "pause": {"target", "for"},
    "resume": {"target"},
    "restart": {"target", "wait"},
    "container": {"task", "action", "service", "slot"},
    "wait": {"for", "task", "match", "node", "state", "timeout", "workers_ready", "log", "service", "running",
             "version", "rollout", "replicas", "updated", "tasks"},
    "assert": {"task", "match", "containers", "tasks", "reasons", "node", "state", "log", "service", "running",
               "version", "rollout", "replicas", "updated"},
    "check": {"invariants", "settle"},
    "join": {"timeout"},
    "allow": {"task", "restarts", "service", "version"},
    "service": {"action", "name", "replicas", "task", "update", "force", "expect", "code", "retries", "timeout"},
}
#: `service` step actions and the API request each sends (docs/protocol.md, "Services").
SERVICE_ACTIONS = {"create": "service.create", "scale": "service.scale", "update": "service.update",
                   "rollback": "service.rollback", "rm": "service.rm"}
#: What a `wait` or `assert` with `service` may look at (docs/chaos.md, "Services").
SERVICE_CONDITIONS = ("running", "version", "rollout", "replicas", "updated")
CLUSTER_KEYS = {"workers", "later", "grace", "heartbeat", "scheduler", "store", "settle", "worker_args", "image",
                "stop_timeout"}
LOG_KEYS = {"target", "contains", "count"}


class ScriptError(ValueError):
    """The script is malformed; the message names the step and the key."""


@dataclass
class ClusterSpec:
    workers: list[str] = field(default_factory=lambda: ["w1"])  # short names; full: <token>-<short>
    later: list[str] = field(default_factory=list)  # workers not started until a `restart` step
    grace: float = 2.0
    heartbeat: float = 0.5
    scheduler: str = "roundrobin"
    store: str = "leveldb"
    settle: float = 30.0  # bound (seconds) for the invariants to hold, see docs/chaos.md
    stop_timeout: float = 2.0  # workers' --stop-timeout: SIGTERM to SIGKILL when stopping a container
    worker_args: list[str] = field(default_factory=list)
    image: str = DEFAULT_IMAGE


@dataclass
class Step:
    number: int
    do: str
    args: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.args.get(key, default)

    def describe(self) -> str:
        shown = {k: v for k, v in self.args.items() if k not in ("note", "body", "spec", "envelope", "frames")}
        text = " ".join(f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in shown.items())
        note = f"  # {self.args['note']}" if self.args.get("note") else ""
        return f"{self.do} {text}".rstrip() + note


@dataclass
class Script:
    name: str
    path: str = ""
    description: str = ""
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    steps: list[Step] = field(default_factory=list)


def load(path: str) -> Script:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ScriptError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScriptError(f"{path} is not valid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: str = "") -> Script:
    unknown = set(data) - {"name", "description", "cluster", "step"}
    if unknown:
        raise ScriptError(f"unknown top-level key {sorted(unknown)[0]!r} (use name, description, cluster, [[step]])")
    script = Script(name=str(data.get("name") or path), path=path, description=str(data.get("description", "")))
    script.cluster = _cluster(data.get("cluster") or {})
    steps = data.get("step") or []
    if not isinstance(steps, list):
        raise ScriptError("steps are written as [[step]] tables")
    for i, raw in enumerate(steps, 1):
        script.steps.append(_step(i, raw))
    return script


def _cluster(raw: dict[str, Any]) -> ClusterSpec:
    bad = set(raw) - CLUSTER_KEYS
    if bad:
        raise ScriptError(f"[cluster]: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(CLUSTER_KEYS))})")
    spec = ClusterSpec()
    workers = raw.get("workers", 1)
    if isinstance(workers, int) and not isinstance(workers, bool):
        spec.workers = [f"w{i}" for i in range(1, workers + 1)]
    elif isinstance(workers, list) and all(isinstance(w, str) and w for w in workers):
        spec.workers = list(workers)
    else:
        raise ScriptError("[cluster]: workers must be a number or a list of short names")
    spec.later = [str(w) for w in raw.get("later", [])]
    if set(spec.later) - set(spec.workers):
        raise ScriptError(f"[cluster]: later names a worker not in workers: {sorted(set(spec.later) - set(spec.workers))[0]}")
    for key in ("grace", "heartbeat", "settle", "stop_timeout"):
        if key in raw:
            setattr(spec, key, _number(raw[key], f"[cluster] {key}"))
    for key in ("scheduler", "store", "image"):
        if key in raw:
            setattr(spec, key, str(raw[key]))
    spec.worker_args = [str(a) for a in raw.get("worker_args", [])]
    return spec


def _step(number: int, raw: Any) -> Step:
    if not isinstance(raw, dict) or "do" not in raw:
        raise ScriptError(f"step {number}: every step needs do = one of {', '.join(STEP_KEYS)}")
    kind = raw["do"]
    if kind not in STEP_KEYS:
        raise ScriptError(f"step {number}: unknown step {kind!r}; use one of {', '.join(STEP_KEYS)}")
    bad = set(raw) - STEP_KEYS[kind] - COMMON
    if bad:
        raise ScriptError(f"step {number} ({kind}): unknown key {sorted(bad)[0]!r} "
                          f"(known: {', '.join(sorted(STEP_KEYS[kind]))})")
    need = {"stop": "task", "send": "to", "fault": "action", "kill": "target", "pause": "target",
            "resume": "target", "restart": "target", "service": "action"}.get(kind)
    if need and need not in raw:
        raise ScriptError(f"step {number} ({kind}): {need!r} is required")
    if kind in ("container", "allow") and not ({"task", "service"} & set(raw)):
        raise ScriptError(f"step {number} ({kind}): 'task' is required (or 'service')")
    if kind in ("container", "allow") and {"task", "service"} <= set(raw):
        raise ScriptError(f"step {number} ({kind}): give 'task' or 'service', not both")
    if kind == "service":
        _service_step(number, raw)
    if kind == "container" and "slot" in raw and "service" not in raw:
        raise ScriptError(f"step {number} (container): 'slot' is a service's slot: give service = NAME")
    if kind == "allow" and "version" in raw and "service" not in raw:
        raise ScriptError(f"step {number} (allow): 'version' is a service's version: give service = NAME")
    if kind in ("wait", "assert"):
        given = [k for k in SERVICE_CONDITIONS if k in raw]
        if given and "service" not in raw:
            raise ScriptError(f"step {number} ({kind}): {given[0]!r} is about a service: give service = NAME")
        if kind == "wait" and "tasks" in raw and "service" not in raw:
            raise ScriptError(f"step {number} (wait): 'tasks' waits on a service's tasks: give service = NAME")
        if "service" in raw and not (set(SERVICE_CONDITIONS) | {"tasks"}) & set(raw):
            raise ScriptError(f"step {number} ({kind}): service = {raw['service']!r} but no condition: give "
                              f"{', '.join(SERVICE_CONDITIONS)} or tasks")
    if "restarts" in raw and (kind in ("start", "allow")):
        n = raw["restarts"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ScriptError(f"step {number} ({kind}): restarts must be a whole number >= 0")
    if kind == "allow" and "restarts" not in raw:
        raise ScriptError(f"step {number} (allow): 'restarts' is required (how many failures to allow)")
    if kind == "send" and not ({"type", "raw", "raw_b64", "frames"} & set(raw)):
        raise ScriptError(f"step {number} (send): give a message type, or raw / raw_b64 / frames")
    if kind == "wait" and not ({"for", "task", "node", "workers_ready", "log", "service"} & set(raw)):
        raise ScriptError(f"step {number} (wait): wait for what? give for, task, node, workers_ready, log or service")
    if "log" in raw:
        _log_checks(number, kind, raw["log"])
    return Step(number, kind, {k: v for k, v in raw.items() if k != "do"})


def _service_step(number: int, raw: dict[str, Any]) -> None:
    """A `service` step: an action, a service name, and the body keys that action takes."""
    action = raw["action"]
    if action not in SERVICE_ACTIONS:
        raise ScriptError(f"step {number} (service): action {action!r}: use one of {', '.join(SERVICE_ACTIONS)}")
    if not isinstance(raw.get("name"), str) or not raw.get("name"):
        raise ScriptError(f"step {number} (service): 'name' is required (the service's name)")
    takes = {"create": {"replicas", "task", "update"}, "scale": {"replicas"}, "update": {"task", "update", "force"},
             "rollback": set(), "rm": set()}[action]
    bad = sorted({"replicas", "task", "update", "force"} & set(raw) - takes)
    if bad:
        raise ScriptError(f"step {number} (service {action}): {bad[0]!r} is not for {action}")
    if action == "scale" and "replicas" not in raw:
        raise ScriptError(f"step {number} (service scale): 'replicas' is required")
    for key in ("task", "update"):
        if key in raw and not isinstance(raw[key], dict):
            raise ScriptError(f"step {number} (service): {key!r} must be a table")


def _log_checks(number: int, kind: str, value: Any) -> None:
    """`log` is a table {target, contains, count} or a list of them (docs/chaos.md, `assert`)."""
    for check in value if isinstance(value, list) else [value]:
        if not isinstance(check, dict):
            raise ScriptError(f"step {number} ({kind}): log must be a table {{ target, contains, count }} "
                              "or a list of them")
        bad = set(check) - LOG_KEYS
        if bad:
            raise ScriptError(f"step {number} ({kind}): log has an unknown key {sorted(bad)[0]!r} "
                              f"(known: {', '.join(sorted(LOG_KEYS))})")
        for key in ("target", "contains"):
            if not isinstance(check.get(key), str) or not check.get(key):
                raise ScriptError(f"step {number} ({kind}): log needs {key} (a non-empty string)")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScriptError(f"{what} must be a number")
    return float(value)
