"""Following a service after `create`, `scale`, `update` or `rollback` until it converges, or its
rollout ends paused or rolled back (issue 11): `service.ps` about every 0.3 s, a live table of its
slots on a terminal (rich, imported here and only when drawing one), a plain line per change
otherwise, then one outcome line and the exit status: 0 converged, 1 paused, rolled back, timed
out or no longer followable.

Converged: every slot 1..N holds a Running task at the service's version, no slot above N still
wants to run, and no update or rollback is under way.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Any

from cube.cli import api, render, session

POLL = 0.3  # seconds between two `service.ps`
ACTIVE = ("updating", "rollback_started")
PAUSED = ("paused", "rollback_paused")
ROLLED_BACK = "rollback_completed"


class Outcome:
    """How following ended: `code` is the exit status; a `warning` (or a failure) goes to stderr.
    (A plain class: a dataclass costs `cube --help` a few milliseconds to define.)"""

    __slots__ = ("code", "message", "service", "tasks", "warning")

    def __init__(self, code: int, message: str, service: dict[str, Any], tasks: list[dict[str, Any]],
                 warning: bool = False):
        self.code, self.message, self.service, self.tasks, self.warning = code, message, service, tasks, warning


def follow(conn: session.Conn, name: str, intent: str, first: dict[str, Any], timeout: float,
           show: bool) -> Outcome:
    """Poll the service until judge() has an outcome or `timeout` seconds passed. `intent` is
    create, scale, update or rollback; `first` the service as the request's reply showed it."""
    from cube.cli.output import warn
    from cube.wire.errors import NOT_FOUND, CubeError
    watching = rollout(first).get("state") in ACTIVE  # a rolled-back end is a failure only if we saw it start
    svc, tasks = first, []
    display = _display() if show else None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                reply = session.call(conn, api.SERVICE_PS, {"name": name})
            except CubeError as e:
                if e.code != NOT_FOUND:
                    raise
                return Outcome(1, f"{name} was removed while its {intent} was followed", svc, tasks)
            except session.CliError as e:
                return Outcome(1, f"{name}: the {intent} was accepted but cannot be followed: {e}", svc, tasks)
            svc, tasks = reply["service"], reply["tasks"]
            if display is not None:
                display.update(svc, tasks, time.monotonic() - deadline + timeout)
            watching = watching or rollout(svc).get("state") in ACTIVE
            outcome = judge(svc, tasks, intent, watching)
            if outcome is not None:
                return outcome
            if time.monotonic() >= deadline:
                return timed_out(svc, tasks, timeout)
            time.sleep(POLL)
    except KeyboardInterrupt:
        if display is not None:
            display.close()
            display = None
        warn(f"stopped following {name}; its {intent} goes on (`cube service ps {name}` shows it)")
        raise
    finally:
        if display is not None:
            display.close()


def judge(svc: dict[str, Any], tasks: list[dict[str, Any]], intent: str, watching: bool) -> Outcome | None:
    """The outcome the service shows now, or None to keep following."""
    r, name, version = rollout(svc), svc["name"], svc.get("version", 0)
    state = r.get("state", "")
    if state in PAUSED:
        what = "rollback" if state == "rollback_paused" else "update"
        hint = (f"`cube service rollback {name}` returns to version {svc.get('previous_version')}, "
                f"`cube service update {name} --force` tries again") if what == "update" else \
            f"`cube service ps {name}` shows why"
        return Outcome(1, f"{name}: the {what} to version {version} is paused: {detail(svc) or 'paused'}"
                          f"{_why(tasks, version)}; {hint}", svc, tasks)
    if state == ROLLED_BACK and watching and intent != "rollback":
        failed = r.get("from_version")
        return Outcome(1, f"{name}: the update to version {failed} failed and was rolled back to version "
                          f"{version}{_why(tasks, failed)}", svc, tasks)
    if state in ACTIVE:
        return None
    n = svc.get("replicas", 0)
    if converged(svc, tasks):
        if intent == "update" and state == "completed" and watching:
            return Outcome(0, f"{name}: updated to version {version}: {_count(n)} running", svc, tasks)
        if intent == "rollback":
            return Outcome(0, f"{name}: rolled back to version {version}: {_count(n)} running", svc, tasks)
        if intent == "scale":
            return Outcome(0, f"{name}: scaled to {n}: {_count(n)} running at version {version}", svc, tasks)
        return Outcome(0, f"{name}: {_count(n)} running at version {version}", svc, tasks)
    if state == "completed" and watching and r.get("failed"):  # failure_action continue: done, not whole
        failed = r["failed"]
        return Outcome(0, f"{name}: update to version {version} completed, but {len(failed)} of {n} slots failed "
                          f"(slot{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))}){_why(tasks, version)}",
                       svc, tasks, warning=True)
    return None


def converged(svc: dict[str, Any], tasks: list[dict[str, Any]]) -> bool:
    n, version = svc.get("replicas", 0), svc.get("version", 0)
    if rollout(svc).get("state") in ACTIVE:
        return False
    held = {t.get("slot") for t in tasks if _wanted(t) and t.get("state") == "Running" and t.get("version") == version}
    if any(slot not in held for slot in range(1, n + 1)):
        return False
    return not any(_wanted(t) and render.live(t) and t.get("slot", 0) > n for t in tasks)


def timed_out(svc: dict[str, Any], tasks: list[dict[str, Any]], timeout: float) -> Outcome:
    name, n, version = svc["name"], svc.get("replicas", 0), svc.get("version", 0)
    holders = holding(tasks)
    done = [s for s in range(1, n + 1) if s in holders and _done(holders[s], version)]
    waiting = next((s for s in range(1, n + 1) if s not in done), None)
    where = ""
    if waiting is not None:
        t = holders.get(waiting)
        where = f"; slot {waiting}: " + ("no task yet" if t is None else
                                         f"{slot_state(t)}" + (f" ({news(t)})" if news(t) else ""))
    state = rollout(svc).get("state")
    under_way = f"; its {label(svc)} goes on" if state in ACTIVE else ""
    return Outcome(1, f"{name}: not converged after {timeout:g}s: {len(done)} of {_count(n)} running at version "
                      f"{version}{where}{under_way}; `cube service ps {name}` follows it", svc, tasks)


def rollout(svc: dict[str, Any]) -> dict[str, Any]:
    return svc.get("rollout") or {}


def label(svc: dict[str, Any]) -> str:
    """The UPDATE column: the rollout's state, and what its message adds ("paused: 1 of 3
    replacements failed")."""
    r = rollout(svc)
    state, more = r.get("state", ""), detail(svc)
    if not state:
        return "-"
    base = {"updating": f"updating {r.get('from_version')}→{r.get('to_version')}",
            "rollback_started": f"rolling back {r.get('from_version')}→{r.get('to_version')}",
            "rollback_completed": f"rolled back to {r.get('to_version')}"}.get(state, state.replace("_", " "))
    return f"{base}: {more}" if more else base


def detail(svc: dict[str, Any]) -> str:
    """What the rollout's message says beyond its state ("1 of 3 replacements failed")."""
    text = render.clean(rollout(svc).get("message"))
    for said in ("updating", "rolling back", "update completed", "rolled back", "paused"):
        if text == said:
            return ""
        if text.startswith((said + "; ", said + ": ")):
            return text[len(said) + 2:]
    return text


def holding(tasks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each slot's task that holds it now: the newest that should run (a replacement before the
    task it replaces), else the newest."""
    out: dict[int, dict[str, Any]] = {}
    for t in sorted(tasks, key=lambda t: (_wanted(t), t.get("created_at") or 0)):
        out[t.get("slot", 0)] = t
    return out


def slot_state(t: dict[str, Any]) -> str:
    """STATE for a replica: "Stopped" (the service, a scale or an update stopped it, not a person:
    REASON says which), or what `task ls` says."""
    text = render.task_state(t)
    return "Stopped" if text == "Stopped (by user)" else text


def reason(t: dict[str, Any]) -> str:
    if t.get("state") == "Failed" and t.get("error") and not t.get("started_at"):
        return render.clean(t["error"])
    return render.clean(t.get("reason"))


def news(t: dict[str, Any]) -> str:
    """A task's reason, unless it only restates what the progress shows ("placed on w1")."""
    text = reason(t)
    return "" if re.match(r"^(?:service \S+ slot \d+|placed on \S+|running on \S+|submitted)$", text) else text


def _wanted(t: dict[str, Any]) -> bool:
    return t.get("desired") == "running"


def _done(t: dict[str, Any], version: int) -> bool:
    return _wanted(t) and t.get("state") == "Running" and t.get("version") == version


def _why(tasks: list[dict[str, Any]], version: Any) -> str:
    """Why the replacements of `version` failed, from the newest that did."""
    bad = [t for t in tasks if t.get("version") == version
           and (t.get("state") == "Failed" or (t.get("restart_count") or 0) > 0)]
    if not bad:
        return ""
    t = max(bad, key=lambda t: t.get("updated_at") or t.get("created_at") or 0)
    why = reason(t) or render.clean(t.get("error"))
    return f" (slot {t.get('slot')}: {why})" if why else ""


def _count(n: int) -> str:
    return f"{n} replica" + ("" if n == 1 else "s")


# ---- the display --------------------------------------------------------------------------------

class Lines:
    """Plain progress for a pipe (or a terminal without rich): a line whenever the rollout or a
    slot's task changes."""

    def __init__(self) -> None:
        self.rollout: tuple[Any, ...] | None = None
        self.slots: dict[int, tuple[Any, ...]] = {}

    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], elapsed: float) -> None:
        name, r = render.clean(svc["name"]), rollout(svc)
        key = (r.get("state"), r.get("message"), r.get("to_version"))
        if key != self.rollout:  # a rollout that ended before we came is not news
            if self.rollout is not None or r.get("state") in ACTIVE + PAUSED:
                print(f"{name}: {label(svc)}", flush=True)
            self.rollout = key
        for slot, t in sorted(holding(tasks).items()):
            if slot > svc.get("replicas", 0) and not (_wanted(t) and render.live(t)) and slot not in self.slots:
                continue  # a slot scaled away long ago
            row = (t.get("id"), slot_state(t), t.get("worker"), t.get("version"), news(t))
            if self.slots.get(slot) == row:
                continue
            self.slots[slot] = row
            why = f": {row[4]}" if row[4] and t.get("state") != "Running" else ""
            print(f"{name}.{slot}: {row[1]} on {render.clean(t.get('worker')) or '-'} "
                  f"(version {t.get('version')}){why}", flush=True)

    def close(self) -> None:
        pass


class Live:
    """A table of the slots redrawn in place (rich's Live), for a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live as RichLive
        self.console = Console(file=sys.stdout, highlight=False)
        self.live = RichLive(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def update(self, svc: dict[str, Any], tasks: list[dict[str, Any]], elapsed: float) -> None:
        self.live.update(self.render(svc, tasks, elapsed, self.console.size.height), refresh=True)

    @staticmethod
    def render(svc: dict[str, Any], tasks: list[dict[str, Any]], elapsed: float, height: int) -> Any:
        from rich.table import Table
        from rich.text import Text
        n, version = svc.get("replicas", 0), svc.get("version", 0)
        holders = holding(tasks)
        shown = sorted(s for s, t in holders.items() if s <= n or (_wanted(t) and render.live(t)))
        done = sum(1 for s in range(1, n + 1) if s in holders and _done(holders[s], version))
        missing = [s for s in range(1, n + 1) if s not in holders]
        title = (f"{render.clean(svc['name'])}  version {version}  {done}/{n} running  "
                 f"update: {label(svc)}  {elapsed:.0f}s")
        table = Table(title=Text(title, style="bold"), title_justify="left", box=None, pad_edge=False)
        for header in ("SLOT", "TASK", "STATE", "WORKER", "VERSION", "REASON"):
            table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=None if header != "REASON" else 60)
        rows = [(s, holders[s]) for s in shown] + [(s, None) for s in missing]
        rows.sort(key=lambda st: st[0])
        room = max(height - 5, 3)
        if len(rows) > room:  # the slots still moving first; the settled ones counted
            moving = [st for st in rows if st[1] is None or not _done(st[1], version)]
            rows = moving[: room - 1]
        for slot, t in rows:
            if t is None:
                table.add_row(str(slot), "-", Text("waiting", style="yellow"), "-", "-", "")
                continue
            ok = _done(t, version)
            style = "green" if ok else "red" if t.get("state") == "Failed" else "yellow"
            table.add_row(str(slot), Text(render.clean(t.get("name"))),
                          Text(("✓ " if ok else "") + slot_state(t), style=style),
                          Text(render.clean(t.get("worker")) or "-"), str(t.get("version", "")), Text(news(t)))
        hidden = len(shown) + len(missing) - len(rows)
        if hidden > 0:
            table.add_row("", Text(f"… {hidden} more slots ({done} running at version {version})", style="dim"),
                          "", "", "", "")
        return table

    def close(self) -> None:
        self.live.stop()


def _display() -> Lines | Live:
    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        try:
            return Live()
        except ImportError:  # rich is not installed: plain lines on the terminal too
            pass
    return Lines()
