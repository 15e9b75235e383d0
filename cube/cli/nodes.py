"""`cube node ...`, `cube join-token` and `cube credentials create`: the cluster's workers and who
may join or speak to it."""
from __future__ import annotations

import time
from typing import Any

from cube.cli import api, render, session
from cube.cli.args import command
from cube.cli.output import print_json, warn


class Node:
    """List, drain, activate and remove workers."""

    @command(example="cube node ls")
    def ls(self, *, manager: str | None = None, credentials: str | None = None, json: bool = False) -> int:
        """List workers: reserved of offered capacity, and the hosts' real use.

        CPU and MEMORY are reserved/offered (what placed tasks asked for); HOST CPU and HOST MEM
        are the machine's own use. A lost worker is marked and its figures left blank. AVAILABILITY
        is active, or drain for a worker that takes no new work (`cube node drain`).

        Args:
            json: every field of every node, as JSON
        """
        nodes = session.pages(session.connect(manager, credentials), api.NODE_LIST, {}, "nodes")
        if json:
            print_json(nodes)
            return 0
        print(node_table(nodes, time.time()))
        return 0

    @command(example="cube node drain worker-2")
    def drain(self, *names: str, manager: str | None = None, credentials: str | None = None,
              json: bool = False) -> int:
        """Drain workers: no new work goes there, and their tasks move to other workers.

        A service's replica on a drained worker gets its replacement elsewhere first, then stops;
        other tasks restart elsewhere. `cube node activate` lets work back.

        Args:
            names: worker names
            json: print each node as JSON
        """
        return _availability(names, api.NODE_DRAIN, "drained; its tasks move to other workers", manager,
                             credentials, json)

    @command(example="cube node activate worker-2")
    def activate(self, *names: str, manager: str | None = None, credentials: str | None = None,
                 json: bool = False) -> int:
        """Activate drained workers: they take new work again (tasks that moved stay where they are).

        Args:
            names: worker names
            json: print each node as JSON
        """
        return _availability(names, api.NODE_ACTIVATE, "active; it takes new work again", manager,
                             credentials, json)

    @command(example="cube node rm worker-3")
    def rm(self, *names: str, manager: str | None = None, credentials: str | None = None) -> int:
        """Remove workers: their keys are revoked and their tasks move.

        Args:
            names: worker names
        """
        from cube.wire.errors import CubeError
        conn = session.connect(manager, credentials)
        status = 0
        for name in names:
            try:
                reply = session.call(conn, api.NODE_REMOVE, {"name": name})
            except CubeError as e:
                warn(e.message)
                status = 1
                continue
            print(f"removed {render.clean(reply['name'])}" + ("; its key is revoked" if reply.get("revoked") else ""))
        return status


def _availability(names: tuple[str, ...], msg_type: str, said: str, manager: str | None,
                  credentials: str | None, json: bool) -> int:
    from cube.cli.tasks import each
    conn = session.connect(manager, credentials)
    done: list[dict[str, Any]] = []

    def one(name: str) -> None:
        node = session.call(conn, msg_type, {"name": name})["node"]
        done.append(node)
        if not json:
            print(f"{render.clean(node.get('name', name))}: {said}", flush=True)
    status = each(names, one)
    if json and done:
        print_json(done[0] if len(names) == 1 else done)
    return status


def node_table(nodes: list[dict[str, Any]], now: float) -> str:
    rows = []
    for n in nodes:
        m = n.get("metrics") or {}
        lost = n.get("state") == "lost"
        offered_cpu, offered_mem = n.get("cpus", 0), n.get("memory", 0)
        if lost or not m:
            cpu = mem = host_cpu = host_mem = disk = "-"
            if not lost:  # no sample yet: what it offers is still known
                cpu, mem = f"-/{offered_cpu:g}", f"-/{render.size(offered_mem)}"
        else:
            cpu = f"{max(offered_cpu - m.get('cpu_free', offered_cpu), 0):.2f}/{offered_cpu:g}"
            mem = f"{render.size(max(offered_mem - m.get('memory_free', offered_mem), 0))}/{render.size(offered_mem)}"
            fresh = m.get("state") != "stale"  # a silent worker's last sample says little of now
            host_cpu = render.percent(m.get("cpu_usage")) if fresh else "-"
            total = m.get("memory_total") or 0
            host_mem = render.percent(m.get("memory_used", 0) / total) if fresh and total else "-"
            disk = render.size(m.get("disk_free"))
        rows.append([n["name"], n.get("address", ""), "LOST" if lost else n.get("state", ""),
                     n.get("availability") or "active", cpu, mem,
                     host_cpu, host_mem, disk, "-" if lost else n.get("tasks", 0),
                     render.ago(n.get("last_seen") or 0, now)])
    headers = ["NAME", "ADDRESS", "STATE", "AVAILABILITY", "CPU RESERVED", "MEMORY RESERVED", "HOST CPU",
               "HOST MEM", "DISK FREE", "TASKS", "LAST SEEN"]
    return render.table(headers, rows, render.width(), fixed=(2, 3, 4, 5, 6, 7, 8, 9, 10))


@command(example="cube join-token --rotate")
def join_token(*, rotate: bool = False, manager: str | None = None, credentials: str | None = None) -> int:
    """Print the command that joins a worker to this cluster.

    Args:
        rotate: make a new token first (workers that already joined are not affected)
    """
    reply = session.call(session.connect(manager, credentials), api.JOIN_TOKEN, {"rotate": bool(rotate)})
    print(render.clean(reply["command"]))
    return 0


class Credentials:
    """Issue, list and revoke client credentials."""

    @command(example="cube credentials ls")
    def ls(self, *, json: bool = False, manager: str | None = None, credentials: str | None = None) -> int:
        """List who holds credentials: NAME, ROLE, KEY (its first characters), CREATED."""
        rows = session.call(session.connect(manager, credentials), api.CREDENTIALS_LIST, {})["credentials"]
        if json:
            print_json(rows)
            return 0
        now = time.time()
        print(render.table(["NAME", "ROLE", "KEY", "CREATED"],
                           [[c["name"], c["role"], c["key"] + "…", render.ago(c.get("created") or 0, now)]
                            for c in rows], render.width()))
        return 0

    @command(example="cube credentials revoke dashboard")
    def revoke(self, name: str, *, manager: str | None = None, credentials: str | None = None) -> int:
        """Revoke every credentials issued as NAME: refused from their next request on.

        Args:
            name: the name they were issued under
        """
        reply = session.call(session.connect(manager, credentials), api.CREDENTIALS_REVOKE, {"name": name})
        print(f"revoked {reply['revoked']} credentials named {render.clean(reply['name'])!r}")
        return 0

    @command(example="cube credentials create alice --role read-only --output alice.credentials")
    def create(self, name: str, *, role: str = "admin", output: str | None = None,
               manager: str | None = None, credentials: str | None = None) -> int:
        """Issue credentials NAME; written to --output FILE (0600), else printed.

        Args:
            name: who they are for
            role: admin or read-only
            output: a file to write them to (mode 0600)
        """
        from cube.security.credentials import Credentials as Creds
        from cube.security.credentials import CredentialsError
        reply = session.call(session.connect(manager, credentials), api.CREDENTIALS, {"name": name, "role": role})
        try:
            creds = Creds.from_dict(reply["credentials"], "the manager's answer")
        except CredentialsError as e:
            raise session.CliError(str(e)) from None
        if output:
            try:
                creds.save(output)
            except OSError as e:
                raise session.CliError(f"cannot write {output}: {e.strerror}") from None
            print(f"{creds.role} credentials {creds.name!r} written to {output}")
        else:
            print_json(creds.to_dict())
        return 0
