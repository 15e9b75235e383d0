"""`cube task ...`: start, stop, restart, list, inspect and read the logs of tasks.

A command returns its exit status (None is 0). Commands on several ids act on each and report
each: one failure does not hide the others, and the status is 1 if any failed.
"""
from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from cube.cli import api, render, session
from cube.cli.args import UsageError, command
from cube.cli.output import print_json, warn

STATES = ("pending", "scheduled", "running", "completed", "failed")
SORTS = {"id": "id", "name": "name", "state": "state", "worker": "worker", "image": "image",
         "created": "created_at", "restarts": "restart_count"}
ALL_LINES = 2**31 - 1  # `--tail all`
_INSPECT_ORDER = ("id", "name", "image", "command", "state", "desired", "worker", "container_id", "ports",
                  "host_ports", "env", "cpu", "memory", "disk", "pids_limit", "restart", "health", "exit_code",
                  "error", "restart_count", "attempt", "reason", "created_at", "started_at", "finished_at",
                  "updated_at", "not_before")


class Task:
    """Start, stop, restart, list and inspect tasks."""

    @command(example="cube task start --image cube-busybox:latest --name web --port 8080")
    def start(self, file: str | None = None, *, image: str | None = None, name: str | None = None,
              cmd: str | None = None, env: list[str] | None = None, cpu: float | None = None,
              memory: str | None = None, disk: str | None = None, port: list[str] | None = None,
              restart: str | None = None, max_restarts: int | None = None, health: str | None = None,
              pids_limit: int | None = None, detach: bool = False, manager: str | None = None,
              credentials: str | None = None, json: bool = False) -> int:
        """Submit a task from a JSON file ('-': stdin) and/or flags; print its id.

        Invalid tasks are refused before anything is sent, with the field named. Then the task is
        watched for up to 3 seconds: a task that waits for room is accepted with a warning and the
        reason (exit 0); one that failed to start (say, its image cannot be pulled) prints why and
        exits 1.

        Args:
            file: a JSON task file, or '-' for stdin (flags given too override its fields)
            image: the container image
            name: a name unique among live tasks (default: the image's name and the id's start)
            cmd: the command, split like a shell does ('httpd -f -p 8080')
            env: a variable KEY=VALUE; repeat the flag for each
            cpu: cores to reserve (0.5)
            memory: memory to reserve and limit (64m, 1g)
            disk: disk to reserve (1g)
            port: a port to publish: CONTAINER on a free host port (8080, 53/udp) or HOST:CONTAINER on that host port (8081:80); repeat the flag for each
            restart: restart policy: no, on-failure (default) or always
            max_restarts: restarts at most (default 3)
            health: an HTTP path probed on the task's port (/health)
            pids_limit: most processes the container may run
            detach: do not watch the task start
            manager: the manager's HOST:PORT (default $CUBE_MANAGER, else the credentials')
            credentials: a credentials file (default $CUBE_CREDENTIALS, else ~/.config/cube/credentials)
            json: print the task as JSON
        """
        from cube.cli import submit
        flags = {"name": name, **submit.task_flags(
            image=image, cmd=cmd, env=env, cpu=cpu, memory=memory, disk=disk, port=port, restart=restart,
            max_restarts=max_restarts, health=health, pids_limit=pids_limit)}
        spec = submit.build(file, flags)
        conn = session.connect(manager, credentials)
        task = submit.send(conn, spec)
        outcome = submit.Outcome(task, "detached") if detach else submit.watch(conn, task, submit.WATCH)
        if json:
            print_json(outcome.task)
        else:
            print(outcome.task["id"])
        if outcome.message:
            warn(outcome.message)
        return 1 if outcome.status == "failed" else 0

    @command(example="cube task stop web 7e12a3f0")
    def stop(self, *ids: str, manager: str | None = None, credentials: str | None = None,
             json: bool = False) -> int:
        """Stop tasks by id, id prefix or name; their containers are removed.

        Args:
            ids: task ids, id prefixes or names
            json: print each stopped task as JSON
        """
        return change(ids, api.TASK_STOP, manager, credentials, json)

    @command(example="cube task restart web")
    def restart(self, *ids: str, manager: str | None = None, credentials: str | None = None,
                json: bool = False) -> int:
        """Restart tasks: a new container for a running one; a stopped one runs again.

        Args:
            ids: task ids, id prefixes or names
            json: print each restarted task as JSON
        """
        return change(ids, api.TASK_RESTART, manager, credentials, json)

    @command(example="cube task ls -a --state failed --sort name", short={"a": "all", "q": "quiet"})
    def ls(self, *, all: bool = False, quiet: bool = False, state: list[str] | None = None,
           worker: list[str] | None = None, name: list[str] | None = None, sort: str | None = None,
           manager: str | None = None, credentials: str | None = None, json: bool = False) -> int:
        """List tasks: the live ones, or all with -a (like `docker ps`).

        Args:
            all: finished tasks too
            quiet: only the ids, one a line
            state: only tasks in this state (pending, scheduled, running, completed, failed); repeatable, or a,b
            worker: only tasks on this worker; repeatable, or a,b
            name: only tasks with this name; repeatable, or a,b
            sort: order by id, name, state, worker, image, created (default) or restarts; -FIELD reverses
            json: every field of every task, as JSON
        """
        body: dict[str, Any] = {"all": bool(all)}
        for key, values in (("state", state), ("worker", worker), ("name", name)):
            wanted = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
            if key == "state":
                wanted = [_state_filter(v) for v in wanted]
            if wanted:
                body[key] = wanted
        order = _sort_key(sort)
        tasks = session.pages(session.connect(manager, credentials), api.TASK_LIST, body, "tasks")
        if order is not None:
            field, reverse = order
            numeric = field in ("created_at", "restart_count")
            tasks.sort(key=lambda t: (t.get(field) or 0) if numeric else str(t.get(field) or ""), reverse=reverse)
        if json:
            print_json(tasks)
        elif quiet:
            for t in tasks:
                print(render.clean(t["id"]))
        else:
            print(task_table(tasks, time.time()))
        return 0

    @command(example="cube task inspect web")
    def inspect(self, *ids: str, manager: str | None = None, credentials: str | None = None,
                json: bool = False) -> int:
        """Show tasks in full, with their history of events.

        Args:
            ids: task ids, id prefixes or names
            json: the task and its events as JSON (a list for several ids)
        """
        return show_each(session.connect(manager, credentials), api.TASK_INSPECT, "id", ids, describe, json)

    @command(example="cube task logs web --tail 20 -f", short={"f": "follow"})
    def logs(self, *ids: str, tail: str = "100", attempt: int | None = None, follow: bool = False,
             manager: str | None = None, credentials: str | None = None) -> int:
        """Print tasks' output, stdout and stderr interleaved (a header per task when several).

        A container's output outlives it: the worker that ran it keeps the end of it (the last
        MiB by default) after the container is removed, so a failed task's output can be read,
        and so can an earlier attempt's after a restart.

        --follow follows one attempt, as `kubectl logs -f` does: when it ends the command ends,
        even if the task then restarts (`--attempt N -f` follows a later one). A task that has not
        run yet is waited for, and so is a manager that restarts (said on stderr).

        Args:
            ids: task ids, id prefixes or names
            tail: how many lines from the end: a number (0 prints none) or 'all'
            attempt: which run of the task: 1 is its first (default: the latest)
            follow: keep printing new output until the attempt ends (then exit 0) or Ctrl-C; one task, one attempt
        """
        lines = _tail(tail)
        if follow and len(ids) != 1:
            raise UsageError("--follow: give one task")
        if attempt is not None and attempt < 1:
            raise UsageError(f"--attempt: {attempt} is not an attempt (1 is a task's first run)")
        conn = session.connect(manager, credentials)

        def one(i: str) -> None:
            if len(ids) > 1:
                print(f"==> {render.clean(i)} <==", flush=True)
            print_logs(conn, i, lines, attempt, follow)
        return each(ids, one)


FOLLOW_EVERY = 0.5  # seconds between two reads of a followed attempt that had nothing new
RETRY_EVERY = 1.0  # seconds between two tries while following and the manager does not answer


def print_logs(conn: Any, ref: str, tail: int, attempt: int | None, follow: bool,
               out: Any = None, sleep: Callable[[float], None] = time.sleep, err: Any = None) -> None:
    """Page through one attempt's output (docs/protocol.md, "Logs"): every reply is bounded and
    carries a cursor; the next request asks for what follows it. Following, a reply with nothing
    new is asked again after FOLLOW_EVERY, until the manager says the attempt has ended.

    Following, a task that has not run yet is waited for (its first attempt is followed), and a
    manager that stops answering (restarting, or a new leader being elected) or a worker not
    connected is asked again every RETRY_EVERY until it answers: a request with a cursor can be
    repeated without a line printed twice. One attempt is followed, as `kubectl logs -f` does:
    when it ends the command ends, even if the task restarts (`--attempt N` reads a later one)."""
    import sys
    out = out or sys.stdout
    err = err or sys.stderr
    body: dict[str, Any] = {"id": ref, "tail": tail}
    if attempt:
        body["attempt"] = attempt
    if follow:
        body["follow"] = True
    last = "\n"
    said_waiting = False
    answered = False  # a manager answered once: one that stops answering is waited for
    while True:
        reply = _logs_request(conn, body, follow and answered, sleep, err)
        answered = True
        if follow and reply.get("waiting") and not reply.get("attempt"):
            if not said_waiting:
                err.write(f"# task {render.clean(ref)} has not run yet ({render.clean(str(reply['waiting']))}); "
                          f"waiting for its first attempt\n")
                err.flush()
                said_waiting = True
            sleep(FOLLOW_EVERY)
            continue
        text = render.clean_text(reply.get("logs") or "")
        if text:
            out.write(text)
            out.flush()
            last = text[-1]
        if not reply.get("cursor"):  # a manager older than cursors: one reply is all there is
            break
        # Pinned to the attempt first read: a restart meanwhile does not switch a follower over.
        body = {"id": ref, "cursor": reply["cursor"], "attempt": reply.get("attempt") or attempt}
        if follow:
            body["follow"] = True
        if reply.get("more"):
            continue
        if not follow or reply.get("ended", True):
            break
        sleep(FOLLOW_EVERY)
    if last != "\n":
        out.write("\n")
        out.flush()


def _logs_request(conn: Any, body: dict[str, Any], patient: bool, sleep: Callable[[float], None],
                  err: Any) -> dict[str, Any]:
    """One task.logs request; `patient` (following, after a first answer): a manager that does not
    answer or is unavailable (loading, no leader, the worker not connected yet) is asked again
    until it answers, said once on stderr."""
    from cube.wire.errors import UNAVAILABLE, CubeError
    waited = False
    while True:
        try:
            reply = session.call(conn, api.TASK_LOGS, body, timeout=8.0)
        except session.NotReached as e:
            if not patient:
                raise
            why = str(e)
        except CubeError as e:
            if not patient or e.code != UNAVAILABLE:
                raise
            why = e.message
        else:
            if waited:
                err.write("# answered again; following on\n")
                err.flush()
            return reply
        if not waited:
            err.write(f"# {why}; asking again every {RETRY_EVERY:g}s (Ctrl-C stops)\n")
            err.flush()
            waited = True
        sleep(RETRY_EVERY)


def each(ids: tuple[str, ...], act: Callable[[str], Any]) -> int:
    """Act on every id; the manager's refusals are one line each and make the status 1."""
    from cube.wire.errors import UNKNOWN_TYPE, CubeError
    status = 0
    for i in ids:
        try:
            act(i)
        except CubeError as e:
            if e.code == UNKNOWN_TYPE:
                raise session.CliError(f"the manager does not know this command ({e.message}); "
                                       f"it is older than this cube") from None
            warn(e.message)
            status = 1
    return status


def show_each(conn: Any, msg_type: str, field: str, refs: tuple[str, ...],
              describe: Callable[[dict[str, Any], float], str], json: bool) -> int:
    """`inspect` of several things: each reply described (a blank line between), or as JSON."""
    replies: list[dict[str, Any]] = []

    def one(ref: str) -> None:
        reply = session.call(conn, msg_type, {field: ref})
        if not json:
            if replies:
                print()
            print(describe(reply, time.time()))
        replies.append(reply)
    status = each(refs, one)
    if json and replies:
        print_json(replies[0] if len(refs) == 1 else replies)
    return status


def change(ids: tuple[str, ...], msg_type: str, manager: str | None, credentials: str | None,
           json: bool) -> int:
    """`stop`/`restart`: each task's id as it is done (or all of them as JSON at the end)."""
    conn = session.connect(manager, credentials)
    done: list[dict[str, Any]] = []

    def act(i: str) -> None:
        task = session.call(conn, msg_type, {"id": i})["task"]
        done.append(task)
        if not json:
            print(render.clean(task["id"]), flush=True)
    status = each(ids, act)
    if json and done:
        print_json(done[0] if len(ids) == 1 else done)
    return status


def task_table(tasks: list[dict[str, Any]], now: float) -> str:
    rows = [[t["id"][:12], t["name"], render.task_state(t), t.get("worker") or "-", t["image"],
             render.ports(t.get("host_ports") or {}, t.get("ports") or []) if render.live(t) else "-",
             render.ago(t.get("created_at") or 0, now), t.get("restart_count", 0), t.get("reason", "")]
            for t in tasks]
    return render.table(["ID", "NAME", "STATE", "WORKER", "IMAGE", "PORTS", "CREATED", "RESTARTS", "REASON"],
                        rows, render.width(), fixed=(0, 2, 6, 7), floors={8: 20})


def describe(reply: dict[str, Any], now: float) -> str:
    """`task inspect` for people: the task as an aligned record, then its events."""
    t = dict(reply["task"])
    shown: dict[str, Any] = {}
    for key in [*_INSPECT_ORDER, *sorted(set(t) - set(_INSPECT_ORDER))]:
        if key not in t:
            continue
        value = t[key]
        if key in ("report_clock", "ran_on", "output", "output_attempt"):  # bookkeeping, or shown below
            continue
        if key == "port_conflicts":  # workers whose host had its fixed port taken, recently
            if not value:
                continue
            value = ", ".join(sorted(value))
        if key == "state":
            value = _state_detail(t)
        elif key == "command" and isinstance(value, list):
            value = shlex.join(str(v) for v in value)
        elif key in ("memory", "disk") and isinstance(value, int) and value:
            value = f"{render.size(value)} ({value})"
        elif (key.endswith("_at") or key == "not_before") and isinstance(value, (int, float)):
            value = _when(value, now) if value else None
        shown[key] = value
    rows = [[e.get("seq"), render.clock(e.get("time") or 0), e.get("state"), e.get("worker") or "-",
             e.get("reason", "")] for e in reply.get("events", [])]
    events = render.table(["SEQ", "TIME", "STATE", "WORKER", "REASON"], rows, render.width(), fixed=(0, 1, 2))
    return "\n".join(render.record(shown)) + _output(t) + "\n\nEVENTS\n" + events


def _output(t: dict[str, Any]) -> str:
    """The last lines a failed attempt printed (kept by the manager: shown even when its worker is gone)."""
    text = render.clean_text(t.get("output") or "").rstrip("\n")
    if not text:
        return ""
    lines = "\n".join("  " + line for line in text.split("\n"))
    return f"\n\nOUTPUT (last lines of attempt {t.get('output_attempt') or '?'}; all of it: cube task logs)\n{lines}"


def _state_detail(t: dict[str, Any]) -> str:
    label = render.task_state(t)
    if label.startswith("Stopped"):
        return f"{t['state']} (stopped by user)"
    return label


def _when(ts: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    if ts > now:
        return f"{stamp} (in {ts - now:.1f}s)"
    return f"{stamp} ({render.ago(ts, now)})"


def _tail(tail: str) -> int:
    text = tail.strip().lower()
    if text == "all":
        return ALL_LINES
    if not text.isdecimal() or not text.isascii():
        raise UsageError(f"--tail: {tail!r} is not a number of lines or 'all'")
    return min(int(text), ALL_LINES)


def _state_filter(value: str) -> str:
    v = value.lower()
    if v not in STATES:
        import difflib
        close = difflib.get_close_matches(v, STATES, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (one of {', '.join(STATES)})"
        raise UsageError(f"--state: {value!r} is not a task state{hint}")
    return v


def _sort_key(sort: str | None) -> tuple[str, bool] | None:
    if sort is None:
        return None
    reverse = sort.startswith("-")
    key = sort.removeprefix("-").lower()
    if key not in SORTS:
        import difflib
        close = difflib.get_close_matches(key, SORTS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (one of {', '.join(SORTS)})"
        raise UsageError(f"--sort: {sort!r} is not a column{hint}")
    return SORTS[key], reverse
