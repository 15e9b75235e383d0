"""`cube task start`: build the task from a file and flags, refuse what is invalid before sending,
send it so that a retry is never a second task, then watch it briefly and tell the truth: started,
waiting for room (and why), or failed to start (and why), like `nomad job run`."""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any

from cube.cli import api, render, session
from cube.cli.session import CliError, Conn, NotReached

WATCH = 3.0  # seconds `start` watches a new task (0 with --detach)
_POLL = 0.15
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")


@dataclass(frozen=True)
class Outcome:
    """What the watch saw of a new task: `status` is started, waiting, starting or failed (or
    detached: not watched)."""

    task: dict[str, Any]
    status: str
    message: str = ""


def build(file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The spec to send: the file's, with the flags given on top; an id chosen here."""
    from cube.model.task import TaskSpecError, new_task_id, task_from_spec, unwrap_event
    try:
        # The book's task event file: its Task is the task (and the flags apply to it).
        spec = merge(unwrap_event(read(file)) if file is not None else {}, flags)
        # chosen here unless the file names it, so a retried submit is not a second task
        spec["id"] = spec.pop("id", None) or spec.pop("ID", None) or new_task_id()
        task_from_spec(spec)  # fail early, with the field named, before anything is sent
    except TaskSpecError as e:
        raise CliError(f"bad task{where(file)}: {e}") from None
    return spec


def task_flags(*, image: str | None, cmd: str | None, env: list[str] | None, cpu: float | None,
               memory: str | None, disk: str | None, port: list[str] | None, restart: str | None,
               max_restarts: int | None, health: str | None, pids_limit: int | None) -> dict[str, Any]:
    """The task fields the command line's task flags give (None: not given)."""
    return {"image": image, "command": cmd, "env": env, "cpu": cpu, "memory": memory, "disk": disk,
            "ports": port, "restart": restart, "max_restarts": max_restarts, "health": health,
            "pids_limit": pids_limit}


def merge(spec: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The flags given, on top of a file's fields, once checked for what only a command line gets
    wrong (an empty --name, an --env that is not KEY=VALUE)."""
    for key in ("name", "image"):
        if flags.get(key) is not None and not flags[key].strip():
            raise CliError(f"--{key} must not be empty")
    for item in flags.get("env") or []:
        if not _ENV.match(item):
            raise CliError(f"--env {item!r} is not KEY=VALUE; give one --env per variable "
                           f"(--env A=1 --env B=2)")
    from cube.model.task import canonical_field
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    # A flag replaces the file's field under any of its names (the book's "Image" for --image).
    kept = {k: v for k, v in spec.items() if not isinstance(k, str) or canonical_field(k) not in given}
    return {**kept, **given}


def where(file: str | None) -> str:
    return " from stdin" if file == "-" else f" file {file}" if file else ""


def read(path: str, what: str = "task") -> dict[str, Any]:
    """A JSON object from a file, or stdin for '-' (`what` names it in errors: task, service)."""
    import json

    from cube.wire.codec import MAX_FRAME
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            if sys.stdin is None:
                raise CliError(f"no stdin to read the {what} from")
            if sys.stdin.isatty():
                print(f"cube: reading the {what} from stdin (end with Ctrl-D)", file=sys.stderr)
            text = sys.stdin.read(MAX_FRAME + 1)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_FRAME + 1)
    except OSError as e:
        raise CliError(f"cannot read {what} file {where}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{what} file {where} is not UTF-8 text") from None
    if len(text) > MAX_FRAME:
        raise CliError(f"{what} file {where} is too large: over {MAX_FRAME >> 10} KiB, more than a request to "
                       f"the manager may carry")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{what} file {where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(spec, dict):
        raise CliError(f"{what} file {where} must hold a JSON object")
    return spec


def send(conn: Conn, spec: dict[str, Any]) -> dict[str, Any]:
    """task.start, once more with the same id if nothing answered (idempotent on the manager),
    then asked for by id: the task the manager accepted, or CliError saying what is known."""
    from cube.wire.errors import IN_DOUBT, NOT_FOUND, UNAVAILABLE, CubeError
    tid = spec["id"]
    failure: Exception | None = None
    for _ in range(2):
        try:
            return session.call(conn, api.TASK_START, {"task": spec})["task"]
        except NotReached as e:
            if not e.sent:  # refused at once: nothing arrived, nothing to ask about
                raise CliError(f"{e}; the task was not created") from None
            failure = e
        except CubeError as e:  # the manager's Store did not answer in time
            if e.code not in (UNAVAILABLE, IN_DOUBT):
                raise
            failure = e
    try:
        return session.call(conn, api.TASK_INSPECT, {"id": tid})["task"]
    except (CliError, CubeError) as e:
        if isinstance(e, CubeError) and e.code == NOT_FOUND:
            raise CliError(f"task {tid} was not created (the manager or its store did not answer in time); "
                           f"retry") from None
        raise CliError(f"task {tid} may or may not have been created (last error: {failure}); "
                       f"check with `cube task inspect {tid}`") from None


def watch(conn: Conn, task: dict[str, Any], seconds: float) -> Outcome:
    """Follow a new task for up to `seconds`: it started, it waits for room, or it failed."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = judge(task, final=time.monotonic() >= deadline)
        if outcome is not None:
            return outcome
        time.sleep(_POLL)
        try:
            task = session.call(conn, api.TASK_INSPECT, {"id": task["id"]})["task"]
        except CliError:  # accepted, then the manager went quiet: say what we know
            return Outcome(task, "starting", f"task {task['id'][:12]} was accepted; its start could not be followed")


def judge(t: dict[str, Any], final: bool) -> Outcome | None:
    """The outcome a task shows now, or None to keep watching."""
    short, state, reason = t["id"][:12], t.get("state"), render.clean(t.get("reason"))
    ran = bool(t.get("started_at")) or t.get("exit_code") is not None  # a container that never ran has no code
    if state == "Failed" and ran:  # it started; how its program ended is the program's business
        return Outcome(t, "started", f"warning: task {short} started, then exited with code "
                                     f"{t.get('exit_code')}: {reason}")
    if state in ("Running", "Completed") or ran:
        return Outcome(t, "started")
    restart_due = t.get("desired") == "running" and (t.get("not_before") or 0) > 0
    if state == "Failed" and restart_due and t.get("port_conflicts"):  # not the task's fault: it moves on
        if not final:
            return None
        where = render.clean(", ".join(sorted(t["port_conflicts"])))
        return Outcome(t, "waiting", f"warning: task {short} could not get its host port on {where}; it is "
                                     f"being placed on another worker: {reason}")
    if state == "Failed":
        why = render.clean(t.get("error")) or reason or "no reason given"
        again = ""
        if restart_due:
            again = (f"; it will be tried again (restart {t.get('restart_count', 0) + 1}), "
                     f"`cube task stop {short}` gives up")
        return Outcome(t, "failed", f"task {short} failed to start: {why}{again}")
    if state == "Pending" and reason and reason != "submitted":
        return Outcome(t, "waiting", f"warning: task {short} was accepted but cannot be placed now: {reason}")
    if not final:
        return None
    if state == "Pending":
        return Outcome(t, "waiting", f"warning: task {short} was accepted but is not placed yet; "
                                     f"`cube task inspect {short}` shows why")
    return Outcome(t, "starting", f"task {short} is still starting on {render.clean(t.get('worker')) or '?'}; "
                                  f"`cube task inspect {short}` follows it")
