"""The Task: what the user asked for (spec), what Cube wants (desired) and what it saw (observed).

Tasks cross process boundaries as plain dicts (msgpack maps); `to_dict`/`from_dict` are the only
conversions, so every actor agrees on the shape.
"""
from __future__ import annotations

import math
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from cube.model import ports
from cube.model.state import State, check_transition
from cube.model.units import MAX_SIZE, describe_size, parse_size

MAX_RAN_ON = 20  # attempts whose worker a task remembers (their logs can be asked for)
MAX_OUTPUT = 512  # bytes of a failed attempt's last lines kept in the task
DESIRED_RUNNING = "running"
DESIRED_STOPPED = "stopped"
RESTART_POLICIES = ("no", "on-failure", "always")
# Docker refuses a memory limit below 6 MiB when the container is created; refusing it at submit
# names the field instead of failing on a worker after the task was placed.
MIN_MEMORY = 6 * 1024**2


class TaskSpecError(ValueError):
    """A task file or flag is wrong; the message names the field."""


@dataclass
class RestartPolicy:
    name: str = "on-failure"
    max_restarts: int = 3
    backoff: float = 1.0  # seconds before the first restart, doubled each time
    backoff_max: float = 30.0

    def delay(self, restart_count: int) -> float:
        """Backoff before restart number `restart_count + 1`."""
        return min(self.backoff * (2 ** max(restart_count, 0)), self.backoff_max)

    def allows(self, exit_code: int | None, restart_count: int) -> bool:
        """Whether a task that ended with `exit_code` may be restarted (None = it vanished)."""
        if restart_count >= self.max_restarts or self.name == "no":
            return False
        if self.name == "always":
            return True
        return exit_code != 0


@dataclass
class HealthCheck:
    path: str
    port: str = ""  # container port to probe; default: the task's first port
    interval: float = 5.0
    timeout: float = 2.0
    threshold: int = 3  # consecutive failures before a restart


@dataclass
class Task:
    id: str
    name: str
    image: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    ports: list[str] = field(default_factory=list)  # "80/tcp", or "8081:80/tcp" for a fixed host port
    pids_limit: int = 0  # most processes the container may have; 0 means the worker's default
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    health: HealthCheck | None = None
    # what Cube wants and what it has seen
    desired: str = DESIRED_RUNNING
    state: State = State.PENDING
    worker: str = ""
    attempt: int = 0  # bumps on every (re)placement; a container of an older attempt is stale
    container_id: str = ""
    host_ports: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    error: str = ""
    reason: str = ""  # why the task is where it is (e.g. why it is still Pending)
    restart_count: int = 0
    lost_count: int = 0  # of its ends, how many were its worker being lost (not its own fault)
    # Workers where a fixed host port was taken when this task started there (a race the
    # Scheduler could not see yet), and when: its next attempts go elsewhere for a while
    # (docs/architecture.md, "Ports"). Cleared once it runs.
    port_conflicts: dict[str, float] = field(default_factory=dict)
    not_before: float = 0.0  # restart backoff: do not place before this time
    # A service's replica (cube/model/service.py): its service, slot (1..N) and spec version.
    service: str = ""
    slot: int = 0
    version: int = 0
    # The worker's report clock of the last status applied for this attempt: a hello snapshot or
    # a status stamped earlier is older than what this task records (docs/protocol.md).
    report_clock: list[int] = field(default_factory=list)
    # Logs (docs/architecture.md, "Logs"): which worker ran each recent attempt (its retained output
    # is there), and the last lines of the latest failed attempt's output, kept here for `inspect`.
    ran_on: dict[str, str] = field(default_factory=dict)  # str(attempt) -> worker, the last MAX_RAN_ON
    output: str = ""
    output_attempt: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    updated_at: float = 0.0

    def transition(self, dst: State, reason: str = "") -> None:
        """Apply a legal transition; an illegal one raises and leaves the task untouched."""
        check_transition(self.state, dst, self.id)
        self.state = dst
        self.updated_at = time.time()
        if reason:
            self.reason = reason

    def ran(self, attempt: int, worker: str) -> None:
        """Note where an attempt runs; the oldest are forgotten beyond MAX_RAN_ON."""
        self.ran_on[str(attempt)] = worker
        while len(self.ran_on) > MAX_RAN_ON:
            del self.ran_on[min(self.ran_on, key=lambda a: int(a) if a.isdecimal() else -1)]

    def worker_of(self, attempt: int) -> str:
        """The worker that ran `attempt` ("" if not remembered)."""
        found = self.ran_on.get(str(attempt), "")
        return found or (self.worker if attempt == self.attempt else "")

    @property
    def demand(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "disk": self.disk}

    @property
    def fixed_ports(self) -> list[str]:
        """The host ports this task pins ("8081/tcp"): a resource of the worker it runs on."""
        return ports.fixed_host_ports(self.ports)

    def to_dict(self) -> dict[str, Any]:
        """A plain map (what crosses the wire and the Store); written out, as `asdict` is slow."""
        d = self.record()
        d["command"] = list(self.command) if self.command is not None else None
        d["env"] = dict(self.env)
        d["ports"] = list(self.ports)
        d["host_ports"] = dict(self.host_ports)
        d["report_clock"] = list(self.report_clock)
        d["ran_on"] = dict(self.ran_on)
        d["port_conflicts"] = dict(self.port_conflicts)
        return d

    def record(self) -> dict[str, Any]:
        """`to_dict` for a version nobody changes any more (one just written, to be packed): the
        map shares its lists and dicts instead of copying them."""
        d = self.__dict__.copy()  # the fields, copied in C
        if len(d) != len(_FIELD_NAMES):  # something else was set on this object: the fields only
            d = {f: getattr(self, f) for f in _FIELD_NAMES}
        d["restart"] = dict(self.restart.__dict__)
        d["health"] = dict(self.health.__dict__) if self.health is not None else None
        d["state"] = self.state.value
        return d

    def copy(self) -> "Task":
        """An independent copy (what a change is applied to before it is persisted)."""
        t = object.__new__(Task)  # faster than copy.copy, which goes through __reduce_ex__
        t.__dict__.update(self.__dict__)
        t.command = list(self.command) if self.command is not None else None
        t.env, t.ports, t.host_ports = dict(self.env), list(self.ports), dict(self.host_ports)
        t.report_clock = list(self.report_clock)
        t.ran_on = dict(self.ran_on)
        t.port_conflicts = dict(self.port_conflicts)
        t.restart = RestartPolicy(**self.restart.__dict__)
        t.health = HealthCheck(**self.health.__dict__) if self.health is not None else None
        return t

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        """From `to_dict`'s map; unknown keys are ignored, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in d.items() if k in known}
        data["state"] = State(data.get("state", State.PENDING.value))
        data["restart"] = RestartPolicy(**(data.get("restart") or {}))
        if data.get("health"):
            data["health"] = HealthCheck(**data["health"])
        return cls(**data)


_FIELD_NAMES = [f.name for f in fields(Task)]


# ---- user input -------------------------------------------------------------------------------

_ALIASES = {  # the book's capitalised task-file keys, and a few friendly synonyms
    "Name": "name", "Image": "image", "Cpu": "cpu", "Memory": "memory", "Disk": "disk",
    "ExposedPorts": "ports", "RestartPolicy": "restart", "HealthCheck": "health",
    "Env": "env", "Cmd": "cmd", "cmd": "command", "Command": "command",
    "restart_policy": "restart", "port": "ports", "PortBindings": "port_bindings",
    "PidsLimit": "pids_limit",
}
_SPEC_FIELDS = {"name", "image", "command", "env", "cpu", "memory", "disk", "ports", "port_bindings",
                "restart", "health", "max_restarts", "pids_limit", "id", "ID"}
# The book's Task carries what Cube reports (its container, published ports, times, restarts) and
# a State: a file may hold them at their zero values, which say nothing, and they are ignored then;
# a set one is refused, because Cube would not honour it (docs/task-files.md). Every task starts
# Pending whatever its State says.
_OUTPUT_FIELDS = {"ContainerID": "", "HostPorts": None, "StartTime": "", "FinishTime": "", "RestartCount": 0}
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_IGNORED_FIELDS = {"state", "State"}
# The book's TaskEvent around the Task: its ID names the task when the Task has none; its State
# and Timestamp are the event's, not the task's, and are ignored.
_EVENT_FIELDS = {"ID", "State", "Timestamp", "Task"}
# The states a submitted event may ask for: the book's cube run sends Running (2); 3 asks for a stop.
_START_STATES = (None, 0, 1, 2, "Pending", "Scheduled", "Running")
# Keys only the book's files use: a file with one of them takes the book's zero values for what it
# leaves out (RestartPolicy "" is no restart), not Cube's defaults.
_BOOK_KEYS = {"Name", "Image", "Cpu", "Memory", "Disk", "ExposedPorts", "PortBindings", "RestartPolicy",
              "HealthCheck", "State", "ContainerID", "HostPorts", "StartTime", "FinishTime", "RestartCount"}
# Docker's restart policy names beside Cube's: "" (Docker's and the book's default) is no restart,
# and a task Cube stops stays stopped, so "unless-stopped" is "always".
_RESTART_NAMES = {"": "no", "unless-stopped": "always"}


def new_task_id() -> str:
    return str(uuid.uuid4())


_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _task_id(value: Any) -> str:
    """Ids become store keys and event prefixes: letters, digits, '.', '_', '-'; 64 at most."""
    text = str(value)
    if not _ID_OK.match(text):
        raise TaskSpecError(f"field 'id': {text[:80]!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return text


def task_from_spec(spec: dict[str, Any], task_id: str | None = None) -> Task:
    """Validate a user's task description and build a Pending task; errors name the field."""
    if not isinstance(spec, dict):
        raise TaskSpecError(f"a task must be a JSON object, got {type(spec).__name__}")
    spec = unwrap_event(spec)
    if any(not isinstance(k, str) for k in spec):
        raise TaskSpecError("task field names must be strings")
    if not _OUTPUT_FIELDS.keys().isdisjoint(spec):
        _check_output_fields(spec)
    book = not _BOOK_KEYS.isdisjoint(spec)
    named: dict[str, str] = {}
    for key in spec:  # two names for one field: which one was meant is not ours to guess
        field_name = canonical_field(key)
        if field_name in named:
            raise TaskSpecError(f"fields {named[field_name]!r} and {key!r} both give {field_name!r}; keep one")
        named[field_name] = key
    spec = {f: spec[k] for f, k in named.items() if k not in _OUTPUT_FIELDS}
    if book and "restart" not in spec:
        spec["restart"] = ""  # the book's zero value: no restart (docs/task-files.md)
    unknown = sorted(set(spec) - _SPEC_FIELDS - _IGNORED_FIELDS)
    if unknown:
        raise TaskSpecError(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_SPEC_FIELDS - {'ID'}))})")
    image = spec.get("image")
    if not isinstance(image, str) or not image.strip():
        raise TaskSpecError("field 'image' is required and must be a non-empty string")
    image = image.strip()
    if not _IMAGE_REF.match(image):
        raise TaskSpecError(f"field 'image': {image[:80]!r} is not a valid image reference "
                            f"(e.g. busybox, busybox:1.36, registry.example.com:5000/team/app:v2)")
    tid = _task_id(task_id or spec.get("id") or spec.get("ID") or new_task_id())
    # Names are unique among live tasks (the Manager checks): without one, a task gets its image's
    # name and the start of its id, as Docker gives a container a generated name.
    name = spec.get("name")
    if name in (None, ""):
        suffix = tid if len(tid) <= 16 else tid[:13]  # a uuid's first 12 hex digits
        name = f"{image.split('@')[0].split('/')[-1].split(':')[0]}-{suffix}"
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise TaskSpecError(f"field 'name': {str(name)[:80]!r} must be 1-128 printable characters, "
                            f"not starting with '-'")
    now = time.time()
    task = Task(
        id=tid,
        name=name,
        image=image,
        command=_command(spec.get("command")),
        env=_env(spec.get("env")),
        cpu=_number(spec, "cpu"),
        memory=_memory(spec),
        disk=_size(spec, "disk"),
        ports=_ports(spec.get("ports"), spec.get("port_bindings")),
        pids_limit=_pids_limit(spec.get("pids_limit")),
        restart=_restart(spec.get("restart"), spec.get("max_restarts")),
        health=_health(spec.get("health")),
        created_at=now,
        updated_at=now,
    )
    if task.health is not None and not (task.health.port or task.ports):
        raise TaskSpecError("field 'health': a health check needs a port to probe; add one to 'ports' "
                            "(--port) or give the check its own port")
    exposed = [ports.container_key(p) for p in task.ports]
    if task.health is not None and task.health.port and task.health.port not in exposed:
        hint = ""
        if task.health.port in task.fixed_ports:
            hint = " (it is a host port: give the container port it publishes)"
        raise TaskSpecError(f"field 'health': port {task.health.port} is not one of the task's ports "
                            f"({', '.join(exposed) or 'none'}){hint}; it could never be probed")
    return task


def canonical_field(key: str) -> str:
    """The field a task-file key gives: "Image" -> "image", "Cmd" -> "command", "ID" -> "id"."""
    key = _ALIASES.get(key, key)
    return "id" if key == "ID" else _ALIASES.get(key, key)


def unwrap_event(spec: dict[str, Any]) -> dict[str, Any]:
    """The book's TaskEvent file ({"ID", "State", "Timestamp", "Task": {...}}) -> its Task."""
    if not isinstance(spec.get("Task"), dict):
        return spec
    unknown = sorted(str(k) for k in set(spec) - _EVENT_FIELDS)
    if unknown:
        raise TaskSpecError(f"unknown task event field {unknown[0]!r} (a task event has ID, State, "
                            f"Timestamp and Task)")
    state = spec.get("State")
    if state in (3, "Completed"):
        raise TaskSpecError("this task event asks for the task to be stopped (State 3, Completed): "
                            "use `cube task stop ID`")
    if state not in _START_STATES:
        raise TaskSpecError(f"task event field 'State': {str(state)[:20]!r} is not a start (0, 1 or 2: "
                            f"Pending, Scheduled, Running)")
    task = dict(spec["Task"])
    if spec.get("ID") and not (task.get("ID") or task.get("id")):
        task["ID"] = spec["ID"]
    return task


def _check_output_fields(spec: dict[str, Any]) -> None:
    for key, zero in _OUTPUT_FIELDS.items():
        value = spec.get(key)
        if value in (None, zero, _GO_ZERO_TIME, {}, []):
            continue
        raise TaskSpecError(f"field {key!r} is what Cube reports about a task, not something to ask "
                            f"for ({key} = {str(value)[:60]!r}); remove it from the task file")


#: Docker's image reference grammar (distribution/reference), without its length limits.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_IMAGE_REF = re.compile(rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                        rf"(?:@sha256:[0-9a-f]{{64}})?$")
_NAME_OK = re.compile(r"^[^\x00-\x1f\x7f-\x9f\s-][^\x00-\x1f\x7f-\x9f]{0,127}$")


def same_spec(a: Task, b: Task) -> list[str]:
    """The fields of what the user asked for in which two tasks differ (a re-sent start is the
    same task only if they are none)."""
    differ = [f for f in ("name", "image", "command", "env", "cpu", "memory", "disk", "ports", "pids_limit")
              if getattr(a, f) != getattr(b, f)]
    if a.restart != b.restart:
        differ.append("restart")
    if a.health != b.health:
        differ.append("health")
    return differ


def _command(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise TaskSpecError(f"field 'command': {e}") from None
    if isinstance(value, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in value):
        return [str(x) for x in value]
    raise TaskSpecError("field 'command' must be a string or a list of strings")


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        env = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise TaskSpecError(f"field 'env': {item!r} is not KEY=VALUE")
            k, v = item.split("=", 1)
            env[k] = v
        return env
    raise TaskSpecError("field 'env' must be a map or a list of KEY=VALUE")


def _number(spec: dict[str, Any], key: str) -> float:
    value = spec.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TaskSpecError(f"field {key!r} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise TaskSpecError(f"field {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise TaskSpecError(f"field {key!r} must be a finite number >= 0, got {value!r}")
    return number


def _size(spec: dict[str, Any], key: str) -> int:
    try:
        return parse_size(spec.get(key, 0) or 0)
    except ValueError as e:
        raise TaskSpecError(f"field {key!r}: {e}") from None


def _memory(spec: dict[str, Any]) -> int:
    """A size of at least Docker's minimum; 0 (or absent) keeps meaning "no limit"."""
    memory = _size(spec, "memory")
    if 0 < memory < MIN_MEMORY:
        raise TaskSpecError(f"field 'memory': {describe_size(memory)} is below Docker's minimum of "
                            f"{describe_size(MIN_MEMORY)}")
    return memory


def _pids_limit(value: Any) -> int:
    """A whole number >= 1 (a fork bomb stops there); absent means the worker's default."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIZE:
        raise TaskSpecError(f"field 'pids_limit' must be a whole number >= 1, got {value!r}")
    return value


def _ports(value: Any, bindings: Any = None) -> list[str]:
    """Canonical port entries ("80/tcp", "8081:80/tcp") from `ports` (a list, or the book's
    ExposedPorts map) and the book's PortBindings ({"80/tcp": "8081"}, or Docker's
    {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]}); a binding of an unlisted port exposes it."""
    if value is None:
        value = []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, dict):  # the book's ExposedPorts: {"80/tcp": {}}
        value = list(value)
    if not isinstance(value, (list, tuple)):
        raise TaskSpecError("field 'ports' must be a list such as [8080, \"8081:80\", \"53/udp\"]")
    try:
        mappings = ports.parse_all(value)
        if bindings not in (None, {}, ""):
            mappings = _bind(mappings, bindings)
    except ports.PortError as e:
        raise TaskSpecError(f"field 'ports': {e}") from None
    return [str(m) for m in mappings]


def _one_host_port(container: str, entries: list[Any]) -> Any:
    """Docker's [{"HostIp", "HostPort"}, ...] for one container port: one host port, on every
    address ("", 0.0.0.0, or :: beside 0.0.0.0, as Docker lists an IPv4 and an IPv6 binding)."""
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ports.PortError(f"PortBindings[{container!r}] must bind one host port")
    for e in entries:
        if e.get("HostIp") not in (None, "", "0.0.0.0", "::"):
            raise ports.PortError(f"PortBindings[{container!r}]: HostIp {e['HostIp']!r}: Cube publishes on "
                                  f"the worker's own address (cube-worker --address)")
    numbers = {str(e.get("HostPort") or "") for e in entries}
    if len(numbers) != 1:
        raise ports.PortError(f"PortBindings[{container!r}] binds host ports {', '.join(sorted(numbers))}: "
                              f"Cube publishes a container port on one")
    return numbers.pop()


def _bind(mappings: list[ports.PortMapping], bindings: Any) -> list[ports.PortMapping]:
    if not isinstance(bindings, dict):
        raise ports.PortError("PortBindings must be a map such as {\"80/tcp\": \"8081\"}")
    by_key = {m.key: m for m in mappings}
    for container, host in bindings.items():
        target = ports.parse(container)
        if target.host:
            raise ports.PortError(f"PortBindings key {container!r} must be a container port such as 80/tcp")
        if isinstance(host, list):  # Docker's PortMap form, as `docker inspect` prints it
            host = _one_host_port(container, host)
        if host in (None, "", 0, "0"):
            bound = target  # bound to no particular port: Docker picks one
        else:
            bound = ports.parse(f"{host}:{target.key}")
        known = by_key.get(target.key)
        if known is not None and known.host and bound.host and known.host != bound.host:
            raise ports.PortError(f"{target.key} is bound to host port {known.host} and to {bound.host}")
        if known is None or bound.host:
            by_key[target.key] = bound
    return ports.parse_all(str(m) for m in by_key.values())


def _restart(value: Any, max_restarts: Any) -> RestartPolicy:
    policy = RestartPolicy()
    if isinstance(value, str):
        policy.name = _RESTART_NAMES.get(value.strip(), value.strip())
    elif isinstance(value, dict):
        allowed = {"name", "max_restarts", "backoff", "backoff_max"}
        bad = sorted(set(value) - allowed)
        if bad:
            raise TaskSpecError(f"field 'restart': unknown key {bad[0]!r}")
        name = value.get("name", policy.name)
        policy.name = _RESTART_NAMES.get(name.strip(), name.strip()) if isinstance(name, str) else name
        max_restarts = value.get("max_restarts", max_restarts)
        for key in ("backoff", "backoff_max"):
            if key in value:
                setattr(policy, key, _number(value, key))
    elif value is not None:
        raise TaskSpecError("field 'restart' must be 'no', 'on-failure' or 'always'")
    if policy.name not in RESTART_POLICIES:
        raise TaskSpecError(f"field 'restart': {policy.name!r} is not one of {', '.join(RESTART_POLICIES)}")
    if max_restarts is not None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise TaskSpecError("field 'max_restarts' must be a whole number >= 0")
        policy.max_restarts = max_restarts
    return policy


def _health(value: Any) -> HealthCheck | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise TaskSpecError("field 'health' must be a path such as /health or a map")
    allowed = {"path", "port", "interval", "timeout", "threshold"}
    bad = sorted(set(value) - allowed)
    if bad:
        raise TaskSpecError(f"field 'health': unknown key {bad[0]!r}")
    path = value.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise TaskSpecError("field 'health.path' must be a path starting with '/'")
    check = HealthCheck(path=path)
    if "port" in value:
        ports = _ports(value["port"])
        if len(ports) != 1:
            raise TaskSpecError("field 'health.port' must be one port such as 8080")
        check.port = ports[0]
    for key in ("interval", "timeout"):
        if key in value:
            setattr(check, key, max(_number(value, key), 0.1))
    if "threshold" in value:
        threshold = value["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise TaskSpecError("field 'health.threshold' must be a whole number >= 1")
        check.threshold = threshold
    return check
