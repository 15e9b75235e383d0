"""`cube top`: a live view of the cluster, redrawn in place (rich), until q or Ctrl-C.

Each refresh asks the manager three read-only questions: `node.ls` (every worker, with what its
tasks reserve and what the machine really uses, as `cube node ls` shows), `manager.ping` with
`states` (tasks counted by state on the manager, not listed), and `events.since` for the events
after the last one shown, no more than it shows (the event log, docs/protocol.md, "Events").
Read-only credentials are enough. Into a pipe, or with --once, frames are printed one after
another instead.
"""
from __future__ import annotations

import collections
import os
import select
import sys
import time
from typing import Any

from cube.cli import api, render, session
from cube.cli.args import UsageError, command

PING = "manager.ping"  # cube.messages.node.PING
EVENTS_SINCE = "events.since"  # cube.messages.events.SINCE
STATES = ("Pending", "Scheduled", "Running", "Completed", "Failed")  # cube.model.state.State


class EventTail:
    """The newest `keep` events, read from the manager's event log after the last one seen, at most
    `keep` a request and two requests a refresh: when more than `keep` came since the last refresh,
    the rest is read from `last - keep` (the reply's `last` is the newest number), never the
    events in between, which would not be shown. A manager without an event log is noted once and
    not asked again."""

    def __init__(self, keep: int):
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(keep, 0))
        self.last: int | None = None
        self.missing = ""  # why there are no events to show

    def poll(self, call: Any) -> None:
        from cube.wire.errors import BAD_REQUEST, UNKNOWN_TYPE, CubeError
        keep = self.events.maxlen
        if self.missing or not keep:
            return
        try:
            if self.last is None:  # where "now" is, then the events just before it
                self.last = max(0, _newest(call(EVENTS_SINCE, {})) - keep)
            page = self._read(call, keep)
            if page.get("more"):
                start = max(self.last, _newest(page) - keep)
                if start > self.last:  # far behind: skip to the newest
                    self.events.clear()
                    self.last = start
                self._read(call, keep)
        except CubeError as e:
            if e.code == UNKNOWN_TYPE:
                self.missing = "this manager keeps no event log"
            elif e.code == BAD_REQUEST:  # e.g. a number beyond the newest (another manager): from now on
                self.last = None
            else:
                raise

    def _read(self, call: Any, keep: int) -> dict[str, Any]:
        page = call(EVENTS_SINCE, {"seq": self.last, "limit": keep})
        self.events.extend(page.get("events") or [])
        self.last = max(self.last or 0, int(page.get("next") or 0))
        return page


def _newest(reply: dict[str, Any]) -> int:
    """The newest event number an `events.since` reply gives (`last`; `next`, `after` from a
    manager that does not say)."""
    return int(reply.get("last") or reply.get("next") or reply.get("after") or 0)


def gather(conn: Any, tail: EventTail) -> dict[str, Any]:
    """One refresh's answers (CliError or CubeError when the manager does not answer)."""
    def call(msg_type: str, body: dict[str, Any]) -> dict[str, Any]:
        return session.call(conn, msg_type, body)
    ping = call(PING, {"states": True})
    nodes = session.pages(conn, api.NODE_LIST, {}, "nodes")
    tail.poll(call)
    return {"ping": ping, "nodes": nodes, "events": list(tail.events), "missing": tail.missing, "time": time.time()}


# ---- drawing ------------------------------------------------------------------------------------

def node_row(n: dict[str, Any]) -> list[str]:
    """NAME, STATE, CPU and MEMORY reserved of offered, HOST CPU, HOST MEM, TASKS (as `node ls`)."""
    m = n.get("metrics") or {}
    lost = n.get("state") == "lost"
    state = "LOST" if lost else str(n.get("state", ""))
    if n.get("availability") == "drain":
        state += " (drain)"
    cpus, memory = float(n.get("cpus") or 0), int(n.get("memory") or 0)
    if lost or not m:
        reserved_cpu = reserved_mem = host_cpu = host_mem = "-"
    else:
        reserved_cpu = f"{max(cpus - float(m.get('cpu_free', cpus)), 0):.2f}/{cpus:g}"
        reserved_mem = f"{render.size(max(memory - int(m.get('memory_free', memory)), 0))}/{render.size(memory)}"
        fresh = m.get("state") != "stale"
        host_cpu = render.percent(m.get("cpu_usage")) if fresh else "-"
        total = m.get("memory_total") or 0
        host_mem = render.percent(m.get("memory_used", 0) / total) if fresh and total else "-"
    return [render.clean(n.get("name", "")), render.clean(state), reserved_cpu, reserved_mem, host_cpu, host_mem,
            "-" if lost else str(n.get("tasks", 0))]


NODE_COLUMNS = ("NAME", "STATE", "CPU RESERVED", "MEMORY RESERVED", "HOST CPU", "HOST MEM", "TASKS")
DROPPED_FIRST = ("HOST MEM", "HOST CPU", "MEMORY RESERVED", "CPU RESERVED", "TASKS")  # NAME and STATE stay
NAME_MIN = 16  # a node's name is never squeezed below this (nor below its length, if shorter)


class NodeTable:
    """The nodes, as wide as the terminal allows: every cell on one line, names whole; on a narrow
    terminal the least important columns are left out (and the title says which), never a name."""

    def __init__(self, rows: list[list[str]]):
        self.rows = rows

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.table(options.max_width)

    def columns(self, width: int) -> list[str]:
        """The columns that fit in `width` cells, dropping them in DROPPED_FIRST order."""
        from rich.cells import cell_len
        need = {h: max([cell_len(h)] + [cell_len(r[i]) for r in self.rows]) + 3  # padding and a border
                for i, h in enumerate(NODE_COLUMNS)}
        shown = list(NODE_COLUMNS)
        for h in DROPPED_FIRST:
            if sum(need[c] for c in shown) + 1 <= width:
                break
            shown.remove(h)
        return shown

    def table(self, width: int) -> Any:
        from rich.table import Table
        shown = self.columns(width)
        hidden = [h for h in NODE_COLUMNS if h not in shown]
        title = ("Nodes (reserved: what placed tasks asked for; host: the machine's own use)" if not hidden else
                 f"Nodes ({', '.join(hidden)} hidden: a wider terminal shows them)")
        table = Table(title=title, title_justify="left", expand=False)
        longest = max([len(r[0]) for r in self.rows] + [4])
        for h in shown:
            table.add_column(h, no_wrap=True, overflow="ellipsis", justify="left" if h in ("NAME", "STATE") else "right",
                             min_width=min(longest, NAME_MIN) if h == "NAME" else None)
        for r in self.rows:
            table.add_row(*(r[NODE_COLUMNS.index(h)] for h in shown))
        return table


def event_line(ev: dict[str, Any]) -> list[str]:
    """TIME, #SEQ, what and why, for a task, service or node event."""
    kind = ev.get("type") or ("task" if "task_id" in ev else "node" if "node" in ev else "service")
    if kind == "node":
        what = f"node {ev.get('node', '')} {ev.get('action', '')}"
        why = ev.get("reason", "")
    elif kind == "service":
        what, why = f"service {ev.get('service', '')}", ev.get("message", "")
    else:
        name = ev.get("name") or (ev.get("task") or {}).get("name", "")
        what = f"{str(ev.get('task_id', ''))[:12]} {name} {ev.get('state', '')}".strip()
        why = ev.get("reason") or ev.get("worker") or ""
    return [time.strftime("%H:%M:%S", time.localtime(ev.get("time") or 0)), f"#{ev.get('seq', '')}",
            render.clean(what), render.clean(why)]


def view(snap: dict[str, Any] | None, where: str, interval: float, error: str = "") -> Any:
    """The whole screen as one rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    head = Text(f"cube top  {where}  {time.strftime('%H:%M:%S')}  every {interval:g}s  (q quits)", style="bold")
    parts: list[Any] = [head]
    if error:
        parts.append(Text(f"! {error}", style="red"))
    if snap is None:
        return Group(*parts)
    ping = snap["ping"]
    parts.append(Text(f"{render.clean(ping.get('name', 'manager'))} {ping.get('version', '')}, "
                      f"{ping.get('state', '')}, {ping.get('workers', 0)} workers ready, "
                      f"{ping.get('tasks', 0)} tasks kept"))
    parts.append(NodeTable([node_row(n) for n in sorted(snap["nodes"], key=lambda n: str(n.get("name", "")))]))
    states = ping.get("states") or {}
    counts = Table(title="Tasks by state", title_justify="left")
    for s in STATES:
        counts.add_column(s, justify="right")
    counts.add_row(*(str(states.get(s, 0)) for s in STATES))
    parts.append(counts)
    events = Table(title="Recent events", title_justify="left", expand=False)
    for h in ("TIME", "#", "WHAT", "WHY"):
        events.add_column(h, no_wrap=h != "WHY", overflow="ellipsis")
    for ev in reversed(snap["events"]):
        events.add_row(*event_line(ev))
    parts.append(events)
    if snap.get("missing"):
        parts.append(Text(f"(no events: {snap['missing']})", style="dim"))
    return Group(*parts)


# ---- the command --------------------------------------------------------------------------------

@command(example="cube top --interval 1")
def top(*, interval: float = 2.0, once: bool = False, events: int = 10, manager: str | None = None,
        credentials: str | None = None) -> int:
    """A live view of the cluster: nodes, tasks by state and recent events (q or Ctrl-C quits).

    Nodes show CPU and memory reserved of offered (what placed tasks asked for) beside the host's
    real use, as `cube node ls` does. Into a pipe, frames follow one another; --once prints one
    and exits. Read-only credentials are enough.

    Args:
        interval: seconds between refreshes (0.5 to 60)
        once: print one frame and exit
        events: how many recent events to show (0: none)
    """
    if not 0.5 <= interval <= 60:
        raise UsageError(f"--interval {interval:g}: between 0.5 and 60 seconds")
    if not 0 <= events <= 100:
        raise UsageError(f"--events {events}: between 0 and 100")
    from rich.console import Console
    conn = session.connect(manager, credentials)
    tail = EventTail(events)
    snap = gather(conn, tail)  # the first answer must come: an unreachable manager exits 1
    console = Console(file=sys.stdout, highlight=False)
    if once or not (sys.stdout.isatty() and sys.stdin.isatty()):
        return _frames(console, conn, tail, snap, interval, once)
    return _live(console, conn, tail, snap, interval)


def _frames(console: Any, conn: Any, tail: EventTail, snap: dict[str, Any], interval: float, once: bool) -> int:
    """Batch mode (like `top -b`): a frame per refresh, printed after the previous one."""
    try:
        while True:
            console.print(view(snap, conn.shown, interval))
            if once:
                return 0
            time.sleep(interval)
            snap = gather(conn, tail)
    except KeyboardInterrupt:
        return 0


def _live(console: Any, conn: Any, tail: EventTail, snap: dict[str, Any], interval: float) -> int:
    """Redrawn in place on the terminal's alternate screen; keys are read without waiting for Enter."""
    import termios
    import tty

    from rich.live import Live

    from cube.cli.session import CliError
    from cube.wire.errors import CubeError
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    error = ""
    try:
        tty.setcbreak(fd)  # q arrives at once; Ctrl-C still interrupts
        with Live(view(snap, conn.shown, interval), console=console, screen=True, auto_refresh=False) as live:
            while True:
                if _quit_pressed(fd, interval):
                    return 0
                try:
                    snap, error = gather(conn, tail), ""
                except (CliError, CubeError) as e:  # shown, and tried again at the next refresh
                    error = str(e)
                live.update(view(snap, conn.shown, interval, error), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int, wait: float) -> bool:
    """Wait up to `wait` seconds for a key; True for q or Q (or the end of input)."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            key = os.read(fd, 32)
            if not key or key[:1] in (b"q", b"Q"):
                return True
