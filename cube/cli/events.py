"""`cube events`: the cluster's numbered events, replayed from the manager's Store and followed live.

The ZeroMQ Guide's Clone pattern (docs/protocol.md, "Events"): subscribe first, then replay
stored events page by page (`events.since`), then print live ones, dropping those already
replayed. Every event has a cluster-wide number, so a follower knows exactly what it missed: a
gap in the live numbers, or a heartbeat announcing a number it never got, is filled by replaying
that range. A manager that stops answering ends the command with status 1.

With several managers (docs/ha.md) the events come from the leader: `events.since`, which only
the leader answers, names its events port, and the same request checks that it is still there
when the stream falls silent. When another manager leads (or the manager restarted), the command
subscribes to it and replays from the last number it printed: no gap, no repeat.
"""
from __future__ import annotations

import collections
import re
import sys
import time
from typing import Any, Callable

from cube.cli import render, session
from cube.cli.args import UsageError, command

SINCE = "events.since"  # cube.messages.events.SINCE
TOPICS = ("task.event", "service.event", "node.event", "events.heartbeat")  # cube.messages.events.TOPICS
HEARTBEAT = "events.heartbeat"
SILENCE = 5.0  # seconds without a message from the events socket before the manager is checked
LOST_AFTER = 30.0  # with several managers: seconds without a leader before the command gives up
MAX_HOLES = 10_000  # numbers the Store did not have when read, remembered in case they come late
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def since_value(text: str, now: float) -> dict[str, Any]:
    """`--since`: a number is an event number (`0`: every stored event); a duration (`90s`,
    `10m`, `2h`, `1d`, `1h30m`) is that long ago."""
    text = text.strip().lower()
    if text.isdecimal():
        return {"seq": int(text)}
    m = _DURATION.match(text)
    if not text or not m or not any(m.groups()):
        raise UsageError(f"--since: {text!r} is neither an event number (e.g. 0 or 1200) nor a duration "
                         f"(e.g. 90s, 10m, 2h, 1d)")
    seconds = sum(float(v or 0) * unit for v, unit in zip(m.groups(), (86400, 3600, 60, 1)))
    return {"time": now - seconds}


class Follower:
    """Prints each event once, in number order: replayed pages first, then live events.

    `fetch(body)` asks the manager for one page of `events.since`; `emit(event)` prints one. Live
    events at or below the last number replayed were replayed already and are dropped. A live
    number beyond the next one expected means some were lost on the way (the PUB socket drops
    what a slow subscriber cannot take): that range is replayed first. Numbers the Store did not
    hold when read (a write refused, or still in flight) are remembered as holes; one that comes
    live later is printed then.
    """

    def __init__(self, fetch: Callable[[dict[str, Any]], dict[str, Any]], emit: Callable[[dict[str, Any]], None],
                 filters: dict[str, list[str]], matches: Callable[[dict[str, Any], dict[str, list[str]]], bool]):
        self.fetch = fetch
        self.emit_one = emit
        self.filters = filters
        self.matches = matches
        self.last = 0  # every event numbered up to this one was printed, filtered out, or is a hole
        self.holes: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.first_reply: dict[str, Any] = {}

    def replay(self, start: dict[str, Any], until: int | None = None) -> None:
        """Every stored page from `start` ({seq} or {time}, or {} for now) up to `until`."""
        body = dict(start)
        while True:
            page = self.fetch({**body, **({"until": until} if until is not None else {}), **self.filters})
            if not self.first_reply:
                self.first_reply = page
                if "seq" not in start:  # a time, or now: the number it stands for
                    self.last = int(page.get("after") or page.get("next") or 0)
            for seq in page.get("gaps") or ():
                self._hole(seq)
            for ev in page["events"]:
                self._print(ev)
            self.last = max(self.last, int(page["next"]))
            if not page.get("more"):
                return
            body = {"seq": self.last}

    def live(self, ev: dict[str, Any]) -> None:
        seq = int(ev.get("seq") or 0)
        if seq in self.holes:
            del self.holes[seq]
            self._print(ev)
            return
        if seq <= self.last:
            return  # replayed already (or a copy)
        if seq > self.last + 1:
            self.replay({"seq": self.last}, until=seq - 1)
        self._print(ev)
        self.last = max(self.last, seq)

    def heard(self, latest: int) -> None:
        """A heartbeat: events up to `latest` were published; any not received were lost."""
        if latest > self.last:
            self.replay({"seq": self.last}, until=latest)

    def _print(self, ev: dict[str, Any]) -> None:
        if self.matches(ev, self.filters):
            self.emit_one(ev)

    def _hole(self, seq: int) -> None:
        self.holes[seq] = None
        while len(self.holes) > MAX_HOLES:
            self.holes.popitem(last=False)


def line(ev: dict[str, Any]) -> str:
    """One event for people: time, number, kind, what and why."""
    kind = ev.get("type", "task")
    when = time.strftime("%H:%M:%S", time.localtime(ev.get("time") or 0))
    if kind == "node":
        words = [ev.get("node", ""), ev.get("action", ""), ev.get("reason", "")]
    elif kind == "service":
        words = [ev.get("service", ""), ev.get("message", "")]
    else:
        words = [str(ev.get("task_id", ""))[:12], ev.get("name") or (ev.get("task") or {}).get("name", ""),
                 ev.get("state", ""), ev.get("worker") or "-", ev.get("reason", "")]
    return " ".join(render.clean(x) for x in [when, f"#{ev.get('seq')}", kind, *words] if x != "")


@command(example="cube events --since 10m --filter type=node")
def events(*, since: str = "", filter: list[str] | None = None, count: int = 0, timeout: float = 0.0,
           manager: str | None = None, credentials: str | None = None, json: bool = False) -> int:
    """Show the cluster's events: task, service and node changes, numbered (until Ctrl-C, --count or --timeout).

    With --since, stored events are replayed first, then live ones follow without a gap or a
    repeat. With several managers the leader's events are followed, and a new leader's after a
    failover. A manager that cannot be reached, or stops answering while followed, exits 1.

    Args:
        since: replay from here first: an event number (0: every stored event) or a duration (10m, 2h, 1d)
        filter: KEY=VALUE, repeatable: type=task|service|node, task=ID|NAME, service=NAME, node=NAME
        count: stop after this many events
        timeout: stop after this many seconds
        json: one JSON object a line (with the task's name)
    """
    import json as jsonlib

    from cube.messages.events import FilterError, matches, parse_filters
    try:
        filters = parse_filters(filter or [])
    except FilterError as e:
        raise UsageError(f"--filter: {e}") from None
    start = since_value(since, time.time()) if since else {}
    if count < 0 or timeout < 0:
        raise UsageError("--count and --timeout are 0 (no limit) or more")
    conn = session.connect(manager, credentials)
    several = len(conn.addresses) > 1
    # Leader-only (a follower answers `not_leader`, and the request goes to the leader, docs/ha.md),
    # so the events endpoint it names is the leader's: a follower's PUB socket carries nothing.
    here = session.call(conn, SINCE, {})
    if start.get("seq") is not None and start["seq"] > int(here.get("last") or 0):
        raise UsageError(f"--since {start['seq']}: there is no such event yet; the latest event is "
                         f"#{int(here.get('last') or 0)} (--since {int(here.get('last') or 0)} follows from now)")
    printed = [0]

    class Done(Exception):
        pass

    def emit(ev: dict[str, Any]) -> None:
        if json:
            print(jsonlib.dumps({k: v for k, v in ev.items() if k != "task"}), flush=True)
        else:
            print(line(ev), flush=True)
        printed[0] += 1
        if count and printed[0] >= count:
            raise Done()

    def fetch(body: dict[str, Any]) -> dict[str, Any]:
        return session.call(conn, SINCE, body)

    import zmq

    from cube.wire import sockets
    from cube.wire.envelope import decode
    from cube.wire.errors import CubeError

    def subscribe(reply: dict[str, Any]) -> tuple[Any, tuple[str, Any, Any]]:
        """A subscription to the events of the manager that sent `reply` (the leader), and who
        that is: (endpoint, its start time, its term)."""
        port = reply.get("events_port") or session.call(conn, "manager.ping", {}).get("events_port")
        if not port:
            raise session.CliError(f"the manager at {conn.shown} does not say where its events are published "
                                   f"(a cube-manager older than this cube?)")
        endpoint = f"tcp://{conn.host}:{int(port)}"
        sock = sockets.subscriber(zmq.Context.instance(), connect=endpoint,
                                  topics=tuple(t.encode() for t in TOPICS), curve=conn.curve)
        return sock, (endpoint, reply.get("started"), reply.get("term"))

    def check() -> dict[str, Any]:
        """Is the leader still there, and which manager is it? With several managers one may be
        elected meanwhile: asked again for up to LOST_AFTER seconds."""
        give_up = time.monotonic() + (LOST_AFTER if several else 0)
        warned = False
        while True:
            try:
                return session.call(conn, SINCE, {}, timeout=3.0)
            except session.CliError:
                if time.monotonic() >= give_up:
                    raise
                if not warned:
                    print("# no manager leads or answers; waiting for one", file=sys.stderr)
                    warned = True
                time.sleep(0.5)

    sub, source = subscribe(here)
    follower = Follower(fetch, emit, filters, matches)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        follower.replay(start)  # subscribed first: what is published meanwhile waits in the socket
        first = int(follower.first_reply.get("first") or 1)
        if start.get("seq") is not None and start["seq"] + 1 < first:
            print(f"# events before #{first} are no longer kept (cube-manager --retention, --events-kept)",
                  file=sys.stderr)
        heard, started = time.monotonic(), None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return 0
            wait = 0.5 if deadline is None else min(0.5, deadline - now)
            if sub.poll(max(1, int(wait * 1000))):
                try:
                    env = decode(sub.recv_multipart()[-1])
                except CubeError:
                    continue
                heard = time.monotonic()
                if env.type == HEARTBEAT:
                    if started is not None and env.body.get("started") != started:
                        print("# the manager restarted", file=sys.stderr)
                    started = env.body.get("started")
                    follower.heard(int(env.body.get("seq") or 0))
                else:
                    follower.live(env.body)
            elif time.monotonic() - heard > SILENCE:
                try:  # the events socket is quiet: is the leader still there, and the same one?
                    reply = check()
                except session.CliError as e:
                    print(f"cube events: lost the manager: {e}", file=sys.stderr)
                    return 1
                heard = time.monotonic()
                leader = (f"tcp://{conn.host}:{reply.get('events_port')}", reply.get("started"), reply.get("term"))
                if reply.get("events_port") and leader != source:
                    # Another leader (or the manager restarted): subscribe to it first, then
                    # replay from the last number printed (the Store has every event it published).
                    print(f"# following the events of the manager at {conn.shown}", file=sys.stderr)
                    sub.close(linger=0)
                    sub, source = subscribe(reply)
                    started = None
                    follower.replay({"seq": follower.last})
                else:
                    follower.heard(int(reply.get("last") or 0))
    except Done:
        return 0
    except session.CliError as e:
        if printed[0] or follower.first_reply:
            print(f"cube events: lost the manager: {e}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 0
    finally:
        sub.close(linger=0)
