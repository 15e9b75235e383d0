"""`cube service ...`: services, a task template kept at N replicas in numbered slots, with rolling
updates and rollbacks (issue 11; docs/architecture.md, "Services").

`create`, `scale`, `update` and `rollback` follow the service until it converges, or its rollout
ends paused or rolled back (cube/cli/progress.py), unless --detach: exit status 0 converged, 1
otherwise. The task flags are `cube task start`'s (cube/cli/submit.py builds the template). Like
every command module, this one imports little at its top: `cube --help` reads it.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import Any

from cube.cli import api, render, session
from cube.cli.args import UsageError, command
from cube.cli.output import print_json, warn
from cube.cli.tasks import each, show_each

FAILURE_ACTIONS = ("rollback", "pause", "continue")  # cube.model.service.FAILURE_ACTIONS
ORDERS = ("stop-first", "start-first")  # cube.model.service.ORDERS
MAX_REPLICAS = 1000  # cube.model.service.MAX_REPLICAS
FOLLOW = "300"  # seconds `create`/`scale`/`update`/`rollback` follow the service at most
_DURATION = r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)?$"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_INSPECT_ORDER = ("name", "replicas", "running", "version", "rollout", "update", "spec", "previous_version",
                  "previous_spec", "created_at", "updated_at")
_SPEC_ORDER = ("image", "command", "env", "cpu", "memory", "disk", "ports", "pids_limit", "restart",
               "max_restarts", "health")


class Service:
    """Run a task template as N replicas: create, scale, update, roll back, remove."""

    @command(example="cube service create --name web --replicas 3 --image cube-busybox:latest --port 8080")
    def create(self, file: str | None = None, *, name: str | None = None, replicas: int | None = None,
               image: str | None = None, cmd: str | None = None, env: list[str] | None = None,
               cpu: float | None = None, memory: str | None = None, disk: str | None = None,
               port: list[str] | None = None, restart: str | None = None, max_restarts: int | None = None,
               health: str | None = None, pids_limit: int | None = None, update_parallelism: int | None = None,
               update_delay: str | None = None, update_monitor: str | None = None,
               update_failure_action: str | None = None, update_max_failure_ratio: float | None = None,
               update_order: str | None = None, detach: bool = False, timeout: str = FOLLOW,
               manager: str | None = None, credentials: str | None = None, json: bool = False) -> int:
        """Create a service: N replicas of a task template; follow them until they run.

        The template comes from a JSON file ('-': stdin) and/or the task flags, as for `cube task
        start`. A file may hold the whole service ({"name", "replicas", "task": {...}, "update":
        {...}}) or just the task; flags override it. Replicas restart always (at most 10 times)
        unless --restart says otherwise. Exit status 0 once every replica runs, 1 if the wait ends
        first (--timeout) or the service cannot be followed.

        Args:
            file: a JSON service or task file, or '-' for stdin
            name: the service's name (lowercase letters, digits, '-', '_'); its tasks are NAME.SLOT.ID
            replicas: how many tasks to keep running (default 1)
            image: the container image
            cmd: the command, split like a shell does ('httpd -f -p 8080')
            env: a variable KEY=VALUE; repeat the flag for each
            cpu: cores to reserve per replica (0.5)
            memory: memory to reserve and limit per replica (64m, 1g)
            disk: disk to reserve per replica (1g)
            port: a port to publish: CONTAINER on a free host port (8080, 53/udp) or HOST:CONTAINER on that host port (8081:80, one replica per worker); repeat the flag for each
            restart: restart policy: no, on-failure or always (the default for a service)
            max_restarts: restarts at most, per task (default 10)
            health: an HTTP path probed on the task's port (/health); an update waits for it
            pids_limit: most processes each container may run
            update_parallelism: slots an update replaces at once (default 1; 0: all at once)
            update_delay: time between two batches of an update (default 0s): 10, 10s, 500ms, 2m
            update_monitor: how long a replacement must run (and pass its health check) to count (default 5s)
            update_failure_action: when replacements fail: rollback (default), pause or continue
            update_max_failure_ratio: the fraction of failed replacements tolerated (default 0)
            update_order: stop-first (default: the old task stops, then its replacement starts) or start-first
            detach: return once the manager accepted the service; do not follow it
            timeout: stop following after this long, with exit status 1 (default 300s): 90, 90s, 5m
            json: print the service (as last seen) as JSON
        """
        wait = _duration("--timeout", timeout)
        template = _template(flags=_task_flags(image, cmd, env, cpu, memory, disk, port, health, pids_limit),
                             restart=None, max_restarts=None, default_restart=None)
        policy = _policy(update_parallelism, update_delay, update_monitor, update_failure_action,
                         update_max_failure_ratio, update_order)
        body = _service_body(file, name, replicas, template, policy, (restart, max_restarts))
        conn = session.connect(manager, credentials)
        reply = _call(conn, api.SERVICE_CREATE, body)
        svc = reply["service"]
        n = svc["replicas"]
        said = "exists with this spec" if reply.get("existing") else f"created with {n} replica{'s' if n != 1 else ''}"
        return _follow(conn, svc, "create", f"{svc['name']}: {said}", detach, wait, json)

    @command(example="cube service ls", short={"q": "quiet"})
    def ls(self, *, quiet: bool = False, manager: str | None = None, credentials: str | None = None,
           json: bool = False) -> int:
        """List services: replicas running of desired, the state of their last update.

        Args:
            quiet: only the names, one a line
            json: every field of every service, as JSON
        """
        services = session.pages(session.connect(manager, credentials), api.SERVICE_LIST, {}, "services")
        if json:
            print_json(services)
        elif quiet:
            for s in services:
                print(render.clean(s["name"]))
        else:
            print(service_table(services))
        return 0

    @command(example="cube service ps web -a", short={"a": "all", "q": "quiet"})
    def ps(self, *names: str, all: bool = False, quiet: bool = False, manager: str | None = None,
           credentials: str | None = None, json: bool = False) -> int:
        """List a service's tasks by slot, newest first; -a adds those that ended.

        Args:
            names: service names
            all: the tasks that ended too (replaced, failed, scaled away)
            quiet: only the task ids, one a line
            json: the service and its tasks as JSON (a list for several names)
        """
        conn = session.connect(manager, credentials)
        replies: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []

        def one(name: str) -> None:
            reply = session.call(conn, api.SERVICE_PS, {"name": name})
            tasks = slot_order([t for t in reply["tasks"] if all or render.live(t) or render.restarting(t)])
            replies.append({**reply, "tasks": tasks})
            rows.extend(tasks)
        status = each(names, one)
        if json:
            if replies:
                print_json(replies[0] if len(names) == 1 else replies)
        elif quiet:
            for t in rows:
                print(render.clean(t["id"]))
        elif replies:
            print(ps_table(rows))
        return status

    @command(example="cube service inspect web")
    def inspect(self, *names: str, manager: str | None = None, credentials: str | None = None,
                json: bool = False) -> int:
        """Show services in full: template, update policy, rollout and latest events.

        Args:
            names: service names
            json: the service and its events as JSON (a list for several names)
        """
        return show_each(session.connect(manager, credentials), api.SERVICE_INSPECT, "name", names, describe, json)

    @command(example="cube service scale web 5")
    def scale(self, *targets: str, detach: bool = False, timeout: str = FOLLOW, manager: str | None = None,
              credentials: str | None = None, json: bool = False) -> int:
        """Set how many replicas services run (NAME N, or NAME=N...); follow them.

        Args:
            targets: NAME N, or NAME=N for each service
            detach: return once the manager accepted it; do not follow
            timeout: stop following after this long, with exit status 1 (default 300s)
            json: print each service (as last seen) as JSON
        """
        wait = _duration("--timeout", timeout)
        pairs = _scale_targets(targets)
        conn = session.connect(manager, credentials)
        seen: list[dict[str, Any]] = []
        status = 0

        def one(target: tuple[str, int]) -> None:
            nonlocal status
            name, n = target
            svc = _call(conn, api.SERVICE_SCALE, {"name": name, "replicas": n})["service"]
            status = max(status, _follow(conn, svc, "scale", f"{svc['name']}: scaled to {n}", detach, wait,
                                         False, seen if json else None))
        refused = each(pairs, one)  # type: ignore[arg-type]
        if json and seen:
            print_json(seen[0] if len(pairs) == 1 else seen)
        return max(status, refused)

    @command(example="cube service update web --image cube-busybox:1.36 --update-parallelism 2")
    def update(self, name: str, *, image: str | None = None, cmd: str | None = None, env: list[str] | None = None,
               cpu: float | None = None, memory: str | None = None, disk: str | None = None,
               port: list[str] | None = None, restart: str | None = None, max_restarts: int | None = None,
               health: str | None = None, pids_limit: int | None = None, update_parallelism: int | None = None,
               update_delay: str | None = None, update_monitor: str | None = None,
               update_failure_action: str | None = None, update_max_failure_ratio: float | None = None,
               update_order: str | None = None, force: bool = False, detach: bool = False,
               timeout: str = FOLLOW, manager: str | None = None, credentials: str | None = None,
               json: bool = False) -> int:
        """Change a service's template, rolled out slot by slot; follow it to the end.

        Only the fields given change; --env and --port replace the template's list. The update
        policy flags change how this and later updates roll. A replacement that fails (ends, restarts,
        or fails its health check within --update-monitor) makes the update roll back, pause or
        go on, per --update-failure-action. Exit status 0 when the update completed, 1 when it was
        rolled back, paused or did not end in time (--timeout).

        Args:
            name: the service
            image: the container image
            cmd: the command, split like a shell does
            env: a variable KEY=VALUE; repeat for each (replaces all the template's variables)
            cpu: cores to reserve per replica
            memory: memory to reserve and limit per replica (64m, 1g)
            disk: disk to reserve per replica
            port: a port to publish (8080, or HOST:CONTAINER such as 8081:80); repeat for each (replaces the template's ports)
            restart: restart policy: no, on-failure or always
            max_restarts: restarts at most, per task
            health: an HTTP path probed on the task's port (/health)
            pids_limit: most processes each container may run
            update_parallelism: slots replaced at once (0: all at once)
            update_delay: time between two batches: 10, 10s, 500ms, 2m
            update_monitor: how long a replacement must run (and pass its health check) to count
            update_failure_action: when replacements fail: rollback, pause or continue
            update_max_failure_ratio: the fraction of failed replacements tolerated (0 to 1)
            update_order: stop-first or start-first
            force: replace every task even if the template did not change
            detach: return once the update started; do not follow it
            timeout: stop following after this long, with exit status 1 (default 300s)
            json: print the service (as last seen) as JSON
        """
        wait = _duration("--timeout", timeout)
        flags = _task_flags(image, cmd, env, cpu, memory, disk, port, health, pids_limit)
        policy = _policy(update_parallelism, update_delay, update_monitor, update_failure_action,
                         update_max_failure_ratio, update_order)
        if not any(v not in (None, []) for v in flags.values()) and restart is None and max_restarts is None \
                and not policy and not force:
            raise UsageError("nothing to update: give task flags (--image ...), update flags (--update-...) or "
                             "--force; see cube service update --help")
        conn = session.connect(manager, credentials)
        current = None
        if max_restarts is not None and restart is None:  # keep the template's policy, change its limit
            current = session.call(conn, api.SERVICE_INSPECT, {"name": name})["service"]["spec"].get("restart")
        changes = _template(flags=flags, restart=restart, max_restarts=max_restarts,
                            default_restart=current or "always")
        body: dict[str, Any] = {"name": name}
        if changes:
            body["task"] = changes
        if policy:
            body["update"] = policy
        if force:
            body["force"] = True
        _check_changes(changes, policy)
        reply = _call(conn, api.SERVICE_UPDATE, body)
        svc = reply["service"]
        if reply.get("unchanged"):
            if json:
                print_json(svc)
            else:
                print(f"{render.clean(svc['name'])}: unchanged at version {svc['version']} (the template is the "
                      f"same; --force replaces every task anyway)")
            return 0
        from cube.cli import progress
        if progress.rollout(svc).get("state") not in progress.ACTIVE:  # only the policy changed
            if json:
                print_json(svc)
            else:
                print(f"{render.clean(svc['name'])}: update policy changed; the template stays at version "
                      f"{svc['version']}")
            return 0
        return _follow(conn, svc, "update", f"{svc['name']}: updating to version {svc['version']}", detach, wait, json)

    @command(example="cube service rollback web")
    def rollback(self, name: str, *, detach: bool = False, timeout: str = FOLLOW, manager: str | None = None,
                 credentials: str | None = None, json: bool = False) -> int:
        """Roll a service back to its previous template; follow it to the end.

        Args:
            name: the service
            detach: return once the rollback started; do not follow it
            timeout: stop following after this long, with exit status 1 (default 300s)
            json: print the service (as last seen) as JSON
        """
        wait = _duration("--timeout", timeout)
        conn = session.connect(manager, credentials)
        svc = _call(conn, api.SERVICE_ROLLBACK, {"name": name})["service"]
        return _follow(conn, svc, "rollback", f"{svc['name']}: rolling back to version {svc['version']}",
                       detach, wait, json)

    @command(example="cube service rm web")
    def rm(self, *names: str, manager: str | None = None, credentials: str | None = None,
           json: bool = False) -> int:
        """Remove services: their tasks stop.

        Args:
            names: service names
            json: print what each removal did as JSON
        """
        conn = session.connect(manager, credentials)
        done: list[dict[str, Any]] = []

        def one(name: str) -> None:
            reply = session.call(conn, api.SERVICE_REMOVE, {"name": name}, timeout=8.0)
            done.append(reply)
            if not json:
                n = reply.get("stopped", 0)
                stopping = f"; {n} task{'s' if n != 1 else ''} stopping" if n else ""
                print(f"removed {render.clean(reply['name'])}{stopping}", flush=True)
        status = each(names, one)
        if json and done:
            print_json(done[0] if len(names) == 1 else done)
        return status


# ---- building requests ----------------------------------------------------------------------------

def _task_flags(image: str | None, cmd: str | None, env: list[str] | None, cpu: float | None,
                memory: str | None, disk: str | None, port: list[str] | None, health: str | None,
                pids_limit: int | None) -> dict[str, Any]:
    from cube.cli import submit
    return submit.task_flags(image=image, cmd=cmd, env=env, cpu=cpu, memory=memory, disk=disk, port=port,
                             restart=None, max_restarts=None, health=health, pids_limit=pids_limit)


def _template(flags: dict[str, Any], restart: str | None, max_restarts: int | None,
              default_restart: Any) -> dict[str, Any]:
    """The template fields the flags give. The variables go as a map (the manager hides a map's
    values from those who list services), and --restart/--max-restarts as one policy: a
    service's default policy is a map, which a lone max_restarts would not change."""
    from cube.cli import submit
    fields = submit.merge({}, flags)
    fields.pop("restart", None)
    fields.pop("max_restarts", None)
    if "env" in fields:
        fields["env"] = dict(item.split("=", 1) for item in fields["env"])
    if restart is not None or max_restarts is not None:
        fields["restart"] = _restart_policy(restart, max_restarts, default_restart)
    return fields


def _restart_policy(restart: str | None, max_restarts: int | None, current: Any) -> dict[str, Any]:
    """--restart names a new policy; --max-restarts alone changes the limit of `current`'s."""
    if restart is not None:
        policy: dict[str, Any] = {"name": restart}
    elif isinstance(current, dict):
        policy = {k: v for k, v in current.items() if k != "max_restarts"}
    else:
        policy = {"name": current}
    if max_restarts is not None:
        policy["max_restarts"] = max_restarts
    return policy


def _policy(parallelism: int | None, delay: str | None, monitor: str | None, failure_action: str | None,
            max_failure_ratio: float | None, order: str | None) -> dict[str, Any]:
    """The update policy the --update-* flags give (only those given)."""
    policy: dict[str, Any] = {}
    if parallelism is not None:
        if parallelism < 0:
            raise UsageError("--update-parallelism must be 0 (all at once) or more")
        policy["parallelism"] = parallelism
    if delay is not None:
        policy["delay"] = _duration("--update-delay", delay)
    if monitor is not None:
        policy["monitor"] = _duration("--update-monitor", monitor)
    if failure_action is not None:
        policy["failure_action"] = _choice("--update-failure-action", failure_action, FAILURE_ACTIONS)
    if max_failure_ratio is not None:
        if not 0 <= max_failure_ratio <= 1:
            raise UsageError(f"--update-max-failure-ratio: {max_failure_ratio:g} is not between 0 and 1")
        policy["max_failure_ratio"] = max_failure_ratio
    if order is not None:
        policy["order"] = _choice("--update-order", order, ORDERS)
    return policy


def _service_body(file: str | None, name: str | None, replicas: int | None, template: dict[str, Any],
                  policy: dict[str, Any], restart: tuple[str | None, int | None] = (None, None)) -> dict[str, Any]:
    """service.create's body: the file's service (or task), the flags on top, checked here so a
    mistake is named before anything is sent."""
    from cube.cli import submit
    from cube.model.service import service_from_spec
    from cube.model.task import TaskSpecError
    if file not in (None, "-") and name is None and not os.path.exists(file):  # `create web`: a name, not a file
        raise UsageError(f"no file {file!r}; a service's name goes in --name: cube service create --name {file} "
                         f"--image IMAGE ...")
    data = submit.read(file, "service") if file is not None else {}
    if isinstance(data.get("task"), dict):
        base = dict(data["task"])
        extra = sorted(set(data) - {"name", "replicas", "task", "update"})
        if extra:
            raise session.CliError(f"bad service{submit.where(file)}: unknown field {extra[0]!r} "
                                   f"(a service file holds name, replicas, task and update)")
    else:  # a task file: its fields are the template
        base = {k: v for k, v in data.items() if k not in ("name", "replicas", "update")}
    if isinstance(base.get("env"), list) and all(isinstance(e, str) and "=" in e for e in base["env"]):
        base["env"] = dict(e.split("=", 1) for e in base["env"])
    base.pop("id", None)
    if restart != (None, None):  # services restart always by default
        template = {**template, "restart": _restart_policy(*restart, base.get("restart") or "always")}
    name = name if name is not None else data.get("name")
    if name is None:
        raise UsageError("missing --name: a service needs a name (or a \"name\" in its file)")
    update = data.get("update") or {}
    if not isinstance(update, dict):
        raise session.CliError(f"bad service{submit.where(file)}: field 'update' must be a map")
    body: dict[str, Any] = {"name": name, "replicas": replicas if replicas is not None else data.get("replicas", 1),
                            "task": {**base, **template}}
    if update or policy:
        body["update"] = {**update, **policy}
    try:
        service_from_spec(body)
    except TaskSpecError as e:
        raise session.CliError(f"bad service{submit.where(file)}: {e}") from None
    return body


def _check_changes(changes: dict[str, Any], policy: dict[str, Any]) -> None:
    """Refuse a change that could not be right in any template, before it is sent (the manager
    checks the merged template again)."""
    from cube.model.service import update_policy
    from cube.model.task import TaskSpecError, task_from_spec
    try:
        probe = {"ports": ["1"]} if "health" in changes and "ports" not in changes else {}  # the template's port
        task_from_spec({"image": "cube-check", **changes, **probe})
        update_policy(policy)
    except TaskSpecError as e:
        raise session.CliError(f"bad update: {e}") from None


def _scale_targets(targets: tuple[str, ...]) -> list[tuple[str, int]]:
    """NAME N, or NAME=N ...: each service and its replica count."""
    if len(targets) == 2 and "=" not in targets[0] and "=" not in targets[1]:
        return [(targets[0], _replicas(targets[0], targets[1]))]
    pairs = []
    for target in targets:
        name, eq, n = target.partition("=")
        if not eq or not name:
            raise UsageError(f"cannot scale {target!r}: give NAME N, or NAME=N for each service")
        pairs.append((name, _replicas(name, n)))
    return pairs


def _replicas(name: str, value: str) -> int:
    if not value.strip().isdecimal() or not value.isascii() or int(value) > MAX_REPLICAS:
        raise UsageError(f"cannot scale {name} to {value!r}: replicas are a whole number from 0 to {MAX_REPLICAS}")
    return int(value)


def _duration(flag: str, value: str) -> float:
    """Seconds from 90, 1.5, 90s, 500ms, 5m or 1h."""
    m = re.match(_DURATION, value.strip().lower())
    if not m:
        raise UsageError(f"{flag}: {value!r} is not a duration (seconds, or with a unit: 500ms, 10s, 5m, 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        import difflib
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"{flag}: {value!r} is not one of {', '.join(choices)}{hint}")
    return value


def _call(conn: session.Conn, msg_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """A request that changes a service; an old manager's "unknown type" said plainly."""
    from cube.wire.errors import UNKNOWN_TYPE, CubeError
    try:
        return session.call(conn, msg_type, body, timeout=8.0)
    except CubeError as e:
        if e.code == UNKNOWN_TYPE:
            raise session.CliError(f"the manager does not know services ({e.message}); it is older than this "
                                   f"cube") from None
        raise


def _follow(conn: session.Conn, svc: dict[str, Any], intent: str, accepted: str, detach: bool, wait: float,
            json: bool, collect: list[dict[str, Any]] | None = None) -> int:
    """--detach: say what was accepted. Else follow the service and say how it ended."""
    if detach:
        if collect is not None:
            collect.append(svc)
        elif json:
            print_json(svc)
        else:
            print(render.clean(accepted))
        return 0
    quiet = json or collect is not None
    from cube.cli import progress
    outcome = progress.follow(conn, svc["name"], intent, svc, wait, show=not quiet)
    if collect is not None:
        collect.append(outcome.service)
    elif json:
        print_json(outcome.service)
    if outcome.code or outcome.warning:
        warn(outcome.message)
    elif not quiet:
        print(render.clean(outcome.message))
    return outcome.code


# ---- output -----------------------------------------------------------------------------------------

def service_table(services: list[dict[str, Any]]) -> str:
    from cube.cli import progress
    rows = [[s["name"], (s.get("spec") or {}).get("image", ""),  # running: unknown (None) on a follower
             f"{'?' if s.get('running', 0) is None else s.get('running', 0)}/{s.get('replicas', 0)}",
             progress.label(s), s.get("version", "")] for s in services]
    return render.table(["NAME", "IMAGE", "REPLICAS", "UPDATE", "VERSION"], rows, render.width(),
                        fixed=(2, 4), floors={3: 20})


def slot_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By slot, and within a slot the newest first."""
    return sorted(tasks, key=lambda t: (t.get("service", ""), t.get("slot", 0), -(t.get("created_at") or 0)))


def ps_table(tasks: list[dict[str, Any]]) -> str:
    from cube.cli import progress
    rows = []
    previous: tuple[str, int] | None = None
    for t in tasks:
        key = (t.get("service", ""), t.get("slot", 0))
        older = key == previous  # a task this slot held before: Docker's "\_ "
        previous = key
        rows.append([t.get("slot", ""), ("\\_ " if older else "") + render.clean(t.get("name")), progress.slot_state(t),
                     t.get("worker") or "-", t.get("version", ""), progress.reason(t)])
    return render.table(["SLOT", "TASK", "STATE", "WORKER", "VERSION", "REASON"], rows, render.width(),
                        fixed=(0, 2, 4), floors={5: 20})


def describe(reply: dict[str, Any], now: float) -> str:
    """`service inspect` for people: the service as an aligned record, then its events."""
    from cube.cli.tasks import _when
    s = dict(reply["service"])
    shown: dict[str, Any] = {}
    for key in [*_INSPECT_ORDER, *sorted(set(s) - set(_INSPECT_ORDER))]:
        if key not in s:
            continue
        value = s[key]
        if key in ("spec", "previous_spec") and isinstance(value, dict):
            value = _spec(value)
        elif key == "rollout" and isinstance(value, dict):
            value = {k: (_when(v, now) if v else None) if k.endswith("_at") and isinstance(v, (int, float)) else v
                     for k, v in value.items() if k not in ("batches",)}
            if not value.get("state"):
                value = None
        elif key == "update" and isinstance(value, dict):
            value = {k: f"{v:g}s" if k in ("delay", "monitor") and isinstance(v, (int, float)) else v
                     for k, v in value.items()}
        elif key == "previous_version" and not value:
            value = None
        elif key.endswith("_at") and isinstance(value, (int, float)):
            value = _when(value, now) if value else None
        shown[key] = value
    rows = [[render.clock(e.get("time") or 0), e.get("message", "")] for e in reply.get("events", [])]
    events = render.table(["TIME", "MESSAGE"], rows, render.width(), fixed=(0,))
    return "\n".join(render.record(shown)) + "\n\nEVENTS\n" + events


def _spec(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in [*_SPEC_ORDER, *sorted(set(spec) - set(_SPEC_ORDER))]:
        if key not in spec:
            continue
        value = spec[key]
        if key == "command" and isinstance(value, list):
            value = shlex.join(str(v) for v in value)
        out[key] = value
    return out

