"""`cube`: the command-line client (python-fire).

    cube task start [FILE] [--image ... --name ... --cmd ... --port ... --memory ...]
    cube task stop ID | ls | inspect ID | logs ID
    cube node ls | rm NAME
    cube events
    cube join-token [--rotate]
    cube credentials create NAME [--role admin|read-only] [--output FILE]

Every command takes --credentials FILE (default: $CUBE_CREDENTIALS, else ~/.config/cube/credentials)
and --manager HOST:PORT (default: $CUBE_MANAGER, else the credentials' manager, else
127.0.0.1:5555); most take --json. Failures print one line on stderr and exit non-zero.
"""
from __future__ import annotations

import json as jsonlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from cube.cli import render
from cube.cli.chaos import Chaos
from cube.config import API_PORT, EVENTS_PORT
from cube.messages import node as node_msg
from cube.messages import task as task_msg
from cube.model.task import TaskSpecError, new_task_id, task_from_spec
from cube.security.credentials import ENV as CREDENTIALS_ENV
from cube.security.credentials import Credentials, CredentialsError, locate
from cube.wire.client import Client, Refused, all_pages
from cube.wire.errors import IN_DOUBT, NOT_FOUND, UNAVAILABLE, CubeError, Unavailable

DEFAULT_TIMEOUT = 3.0
LOADING_WAIT = 10.0  # how long a command waits for a manager that is loading its state


class CliError(Exception):
    """Something the user must fix; printed as one line, exit status 1."""


def _manager(manager: str | None) -> str:
    address = manager or os.environ.get("CUBE_MANAGER") or f"127.0.0.1:{API_PORT}"
    return address if "://" in address else f"tcp://{address}"


@dataclass(frozen=True)
class Conn:
    """Where the manager is and how to prove who we are (docs/security.md, "Credentials")."""

    address: str  # tcp://host:port of the API
    creds: Credentials | None

    @property
    def curve(self) -> Any:
        return self.creds.curve() if self.creds else None


def _conn(manager: str | None, credentials: str | None) -> Conn:
    """--manager, else $CUBE_MANAGER, else the credentials' manager, else 127.0.0.1:5555."""
    path = locate(credentials or "")
    try:
        creds = Credentials.load(path) if path else None
    except CredentialsError as e:
        raise CliError(str(e)) from None
    if manager or os.environ.get("CUBE_MANAGER") or creds is None:
        return Conn(_manager(manager), creds)
    return Conn(_manager(creds.manager), creds)


def _call(conn: Conn, msg_type: str, body: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict:
    address = conn.address
    client = Client(address, name="cli", timeout=timeout, curve=conn.curve)
    deadline = time.monotonic() + LOADING_WAIT
    try:
        while True:
            try:
                return client.call(msg_type, body)
            except Unavailable:
                raise
            except Refused:
                if conn.creds is None:
                    raise CliError(f"the manager at {address.removeprefix('tcp://')} needs credentials: "
                                   f"set --credentials or {CREDENTIALS_ENV} (cube-manager writes "
                                   f"DATA_DIR/admin.credentials)") from None
                raise
            except CubeError as e:  # a manager that just started is still loading: wait a little
                if e.code != UNAVAILABLE or "loading" not in e.message or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except Unavailable:
        raise CliError(f"cannot reach the manager at {address.removeprefix('tcp://')} "
                       f"(no answer within {timeout:g}s); is cube-manager running? "
                       f"Set --manager or CUBE_MANAGER.") from None
    finally:
        client.close()


def _all_pages(conn: Conn, msg_type: str, body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return all_pages(lambda t, b: _call(conn, t, b), msg_type, body, key)


def _print_json(obj: Any) -> None:
    print(jsonlib.dumps(obj, indent=2, sort_keys=True, default=str))


class Task:
    """Start, stop, list and inspect tasks."""

    def start(self, file: str | None = None, image: str | None = None, name: str | None = None,
              cmd: Any = None, env: Any = None, cpu: float | None = None, memory: Any = None,
              disk: Any = None, port: Any = None, restart: str | None = None,
              max_restarts: int | None = None, health: str | None = None, pids_limit: int | None = None,
              manager: str | None = None, credentials: str | None = None, json: bool = False) -> None:
        """Submit a task from a JSON file (or '-' for stdin) and/or flags; prints its id."""
        spec: dict[str, Any] = _read_spec(file) if file else {}
        flags = {"image": image, "name": name, "command": cmd, "env": env, "cpu": cpu, "memory": memory,
                 "disk": disk, "ports": port, "restart": restart, "max_restarts": max_restarts,
                 "health": health, "pids_limit": pids_limit}
        spec.update({k: v for k, v in flags.items() if v is not None})
        if isinstance(spec.get("env"), (list, tuple)):
            spec["env"] = [str(e) for e in spec["env"]]
        spec.setdefault("id", new_task_id())  # chosen here, so a retried submit is not a second task
        try:
            tid = task_from_spec(spec).id  # fail early, with the field named, before anything is sent
        except TaskSpecError as e:
            raise CliError(f"bad task{' file ' + file if file else ''}: {e}") from None
        task, failure = None, None
        for _ in range(2):  # one more try with the same id: idempotent on the manager
            try:
                task = _call(_conn(manager, credentials), task_msg.START, {"task": spec})["task"]
                break
            except (CliError, CubeError) as e:  # no answer, or the manager's Store did not answer
                if isinstance(e, CubeError) and e.code not in (UNAVAILABLE, IN_DOUBT):
                    raise
                failure = e
        if task is None:  # did either try create it after all? Ask by id.
            try:
                task = _call(_conn(manager, credentials), task_msg.INSPECT, {"id": tid})["task"]
            except (CliError, CubeError) as e:
                if isinstance(e, CubeError) and e.code == NOT_FOUND:
                    raise CliError(f"task {tid} was not created (the manager or its store did not answer "
                                   f"in time); retry") from None
                raise CliError(f"task {tid} may or may not have been created (last error: {failure}); "
                               f"check with `cube task inspect {tid}`") from None
        if json:
            _print_json(task)
        else:
            print(task["id"])

    def stop(self, id: str, manager: str | None = None, credentials: str | None = None, json: bool = False) -> None:
        """Stop a task (any state); its container is stopped and removed."""
        task = _call(_conn(manager, credentials), task_msg.STOP, {"id": str(id)})["task"]
        if json:
            _print_json(task)
        else:
            print(task["id"])

    def ls(self, all: bool = False, state: str | None = None, worker: str | None = None,
           name: str | None = None, manager: str | None = None, credentials: str | None = None, json: bool = False) -> None:
        """List tasks: ID, NAME, STATE, WORKER, IMAGE, PORTS, CREATED.

        Live tasks only unless -a/--all (like `docker ps`); --state, --worker, --name filter
        (comma-separated values)."""
        body: dict[str, Any] = {"all": bool(all)}
        for key, value in (("state", state), ("worker", worker), ("name", name)):
            if value not in (None, ""):
                body[key] = [v for v in str(value).split(",") if v]
        tasks = _all_pages(_conn(manager, credentials), task_msg.LIST, body, "tasks")
        if json:
            _print_json(tasks)
            return
        now = time.time()
        rows = [[t["id"][:12], t["name"], _state(t), t["worker"] or "-", t["image"],
                 render.ports(t.get("host_ports") or {}, t.get("ports") or []),
                 render.ago(t["created_at"], now), t["restart_count"], render.clip(t.get("reason", ""), 60)]
                for t in tasks]
        print(render.table(["ID", "NAME", "STATE", "WORKER", "IMAGE", "PORTS", "CREATED", "RESTARTS", "REASON"], rows))

    def inspect(self, id: str, manager: str | None = None, credentials: str | None = None, json: bool = False) -> None:
        """Show a task and its event history (state, time, worker, reason)."""
        reply = _call(_conn(manager, credentials), task_msg.INSPECT, {"id": str(id)})
        if json:
            _print_json(reply)
            return
        t = reply["task"]
        for key in ("id", "name", "image", "command", "state", "desired", "worker", "container_id",
                    "host_ports", "exit_code", "error", "restart_count", "attempt", "reason"):
            value = t.get(key)
            print(f"{key + ':':15} {'-' if value in (None, '', [], {}) else value}")
        r = t["restart"]
        print(f"{'restart:':15} {r['name']} (max {r['max_restarts']}, backoff {r['backoff']:g}s to {r['backoff_max']:g}s)")
        if t.get("not_before") and t["state"] == "Failed" and t["desired"] == "running":
            print(f"{'next restart:':15} in {max(0.0, t['not_before'] - time.time()):.1f}s")
        if t.get("health"):
            h = t["health"]
            print(f"{'health:':15} GET {h['path']} every {h['interval']:g}s, {h['threshold']} failures restart")
        print("\nEVENTS")
        rows = [[e["seq"], time.strftime("%H:%M:%S", time.localtime(e["time"])) + f".{int(e['time'] % 1 * 1000):03d}",
                 e["state"], e.get("worker") or "-", e.get("reason", "")] for e in reply["events"]]
        print(render.table(["SEQ", "TIME", "STATE", "WORKER", "REASON"], rows))

    def logs(self, id: str, tail: int = 100, manager: str | None = None, credentials: str | None = None) -> None:
        """Print the last lines of the task's container output."""
        print(_call(_conn(manager, credentials), task_msg.LOGS, {"id": str(id), "tail": int(tail)}, timeout=8.0)["logs"], end="")


class Node:
    """Inspect and remove workers."""

    def rm(self, name: str, manager: str | None = None, credentials: str | None = None) -> None:
        """Remove a worker: its key is revoked (it cannot connect again) and its tasks move."""
        reply = _call(_conn(manager, credentials), node_msg.REMOVE, {"name": str(name)})
        print(f"removed {reply['name']}" + ("; its key is revoked" if reply.get("revoked") else ""))

    def ls(self, manager: str | None = None, credentials: str | None = None, json: bool = False) -> None:
        """List nodes: NAME, ADDRESS, STATE, CPU, MEMORY, DISK, TASKS, LAST SEEN."""
        nodes = _all_pages(_conn(manager, credentials), node_msg.LIST, {}, "nodes")
        if json:
            _print_json(nodes)
            return
        now = time.time()
        rows = []
        for n in nodes:
            m = n.get("metrics") or {}
            if m:  # reserved by Cube's tasks / offered, and how busy the machine really is
                cpu = f"{n['cpus'] - m['cpu_free']:.2f}/{n['cpus']:g} ({m['cpu_usage']:.0%})"
                mem = f"{render.mib(n['memory'] - m['memory_free'])}/{render.mib(n['memory'])}"
            else:
                cpu, mem = f"-/{n['cpus']:g}", f"-/{render.mib(n['memory'])}"
            rows.append([n["name"], n["address"], n["state"], cpu, mem, render.gib(m.get("disk_free")),
                         n["tasks"], render.ago(n["last_seen"], now)])
        print(render.table(["NAME", "ADDRESS", "STATE", "CPU(used/total)", "MEMORY(MiB used/total)",
                            "DISK FREE(GiB)", "TASKS", "LAST SEEN"], rows))


def events(manager: str | None = None, credentials: str | None = None, events_port: int = 0, count: int = 0,
           timeout: float = 0.0, json: bool = False) -> None:
    """Follow the live stream of task events (until Ctrl-C, --count events or --timeout seconds)."""
    import zmq

    from cube.wire import sockets
    from cube.wire.envelope import decode
    conn = _conn(manager, credentials)
    host = conn.address.removeprefix("tcp://").rsplit(":", 1)[0]
    if not events_port:
        events_port = int(conn.creds.events.rsplit(":", 1)[1]) if conn.creds else EVENTS_PORT
    sub = sockets.subscriber(zmq.Context.instance(), connect=f"tcp://{host}:{events_port}",
                             topics=(task_msg.EVENT.encode(),), curve=conn.curve)
    seen, last_seq = 0, None
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while not count or seen < count:
            wait = 1000 if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            if deadline is not None and wait == 0:
                break
            if not sub.poll(wait):
                continue
            try:
                ev = decode(sub.recv_multipart()[-1]).body
            except CubeError:
                continue
            if last_seq is not None and ev["seq"] > last_seq + 1:
                print(f"# missed {ev['seq'] - last_seq - 1} events; `cube task ls` shows the current state",
                      file=sys.stderr)
            last_seq = ev["seq"]
            seen += 1
            if json:
                print(jsonlib.dumps({k: v for k, v in ev.items() if k != "task"}), flush=True)
            else:
                name = (ev.get("task") or {}).get("name", "")
                print(f"{time.strftime('%H:%M:%S', time.localtime(ev['time']))} #{ev['seq']} "
                      f"{ev['task_id'][:12]} {name} {ev['state']} {ev.get('worker') or '-'} {ev.get('reason', '')}",
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(linger=0)


def join_token(rotate: bool = False, manager: str | None = None, credentials: str | None = None) -> None:
    """Print the command that joins a worker to this cluster; --rotate makes a new token first
    (workers that already joined are not affected)."""
    reply = _call(_conn(manager, credentials), node_msg.JOIN_TOKEN, {"rotate": bool(rotate)})
    print(reply["command"])


class CredentialsCmd:
    """Issue client credentials."""

    def create(self, name: str, role: str = "admin", output: str | None = None,
               manager: str | None = None, credentials: str | None = None) -> None:
        """Issue credentials NAME with --role admin|read-only; written to --output FILE (0600), else printed."""
        reply = _call(_conn(manager, credentials), node_msg.CREDENTIALS, {"name": str(name), "role": str(role)})
        creds = Credentials.from_dict(reply["credentials"])
        if output:
            creds.save(str(output))
            print(f"{creds.role} credentials {creds.name!r} written to {output}")
        else:
            _print_json(creds.to_dict())


def _state(t: dict[str, Any]) -> str:
    if t["desired"] == "stopped" and t["state"] in ("Scheduled", "Running"):
        return t["state"] + " (stopping)"
    return t["state"]


def _read_spec(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as e:
        raise CliError(f"cannot read task file {path}: {e.strerror}") from None
    try:
        spec = jsonlib.loads(text)
    except jsonlib.JSONDecodeError as e:
        raise CliError(f"task file {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(spec, dict):
        raise CliError(f"task file {path} must hold a JSON object")
    return spec


class Cube:
    """Cube: a container orchestrator. Commands: task, node, events, join-token, credentials, chaos."""

    def __init__(self) -> None:
        self.task = Task()
        self.node = Node()
        self.events = events
        self.chaos = Chaos()
        self.join_token = join_token  # `cube join-token` (fire reads - as _)
        self.credentials = CredentialsCmd()


def main(argv: list[str] | None = None) -> None:
    import fire
    try:
        fire.Fire(Cube, command=argv, name="cube")
    except CliError as e:
        print(f"cube: {e}", file=sys.stderr)
        sys.exit(1)
    except CubeError as e:
        print(f"cube: {e.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
