"""The worker registry: who is connected, what they offer, and who has gone silent.

Liveness is by heartbeat age (the Paranoid Pirate pattern): a worker not heard from within the
grace period is lost. The registry only records; the Manager decides what losing one means.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

READY = "ready"
LOST = "lost"
HELLO_ALLOWANCE = 6.0  # seconds, on top of the grace period, for a remembered worker's hello
REMEMBERED = "remembered"  # known from the Store after a manager restart, no hello yet
ACTIVE, DRAIN = "active", "drain"


@dataclass
class WorkerRecord:
    name: str
    address: str
    cpus: float
    memory: int
    disk: int
    state: str = READY
    pid: int = 0
    last_seen: float = field(default_factory=time.monotonic)  # monotonic, for liveness
    last_seen_wall: float = field(default_factory=time.time)  # for people
    joined_at: float = field(default_factory=time.time)
    greeted: bool = True  # said hello to this manager process (False: only remembered from the Store)
    hello_clock: list[int] = field(default_factory=list)  # report clock of the hello that made it ready
    route_id: bytes = b""  # the connection its last authenticated message came on
    named_route: bool = False  # insecure mode: its connection's identity is its name
    availability: str = ACTIVE  # or DRAIN: no new work, its tasks move (`cube node drain`)

    @property
    def route(self) -> list[bytes]:
        """Where commands to it go: the connection it last spoke on (never a name a peer can
        claim; docs/security.md, "Identity"), or its name where workers name their connection
        (insecure mode)."""
        if self.route_id:
            return [self.route_id]
        return [self.name.encode()] if self.named_route else []  # none yet: commands wait for its hello

    @property
    def shown_state(self) -> str:
        """What `node ls` says: a worker only remembered from before a restart is not ready yet."""
        return REMEMBERED if self.state == READY and not self.greeted else self.state

    def to_dict(self) -> dict[str, Any]:
        """The record as stored (its real state)."""
        return {"name": self.name, "address": self.address, "cpus": self.cpus, "memory": self.memory,
                "disk": self.disk, "state": self.state, "last_seen": self.last_seen_wall,
                "joined_at": self.joined_at, "pid": self.pid, "availability": self.availability}

    def view(self) -> dict[str, Any]:
        """The record as `node ls` shows it."""
        return {**self.to_dict(), "state": self.shown_state}


class WorkerRegistry:
    def __init__(self, grace: float, named_routes: bool = False):
        self.grace = grace
        self.named_routes = named_routes
        self.workers: dict[str, WorkerRecord] = {}
        self.by_route: dict[bytes, str] = {}  # connection -> the worker that last spoke on it
        # Every placement pass sends who is schedulable and who is lost: with 1,000 workers and a
        # pass per new task, the lists are kept until a worker's state or availability changes.
        self._version = 0
        self._lists: dict[str, tuple[int, list[str]]] = {}

    def changed(self) -> None:
        """A worker's state, availability or greeting changed (the kept lists are stale)."""
        self._version += 1

    def _kept(self, which: str, make: Any) -> list[str]:
        hit = self._lists.get(which)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        made = make()
        self._lists[which] = (self._version, made)
        return made

    def stale_hello(self, name: str, clock: list[int] | None) -> bool:
        """A hello stamped before the one that last made this worker ready: a late copy."""
        old = self.workers.get(name)
        return bool(clock and old is not None and old.hello_clock and clock <= old.hello_clock)

    def hello(self, name: str, address: str, cpus: float, memory: int, disk: int, pid: int = 0,
              clock: list[int] | None = None) -> WorkerRecord:
        rec = WorkerRecord(name, address, cpus, memory, disk, pid=pid, hello_clock=list(clock or []),
                           named_route=self.named_routes)
        old = self.workers.get(name)
        if old:
            rec.joined_at = old.joined_at
            rec.route_id = old.route_id
            rec.availability = old.availability
        self.workers[name] = rec
        self.changed()
        return rec

    def remember(self, data: dict[str, Any]) -> None:
        """A worker known before a manager restart: it has one grace period to say hello.

        Until it does, its heartbeats are answered "say hello" (see `seen`): a worker that did not
        notice the restart must still reconcile, or a command lost with the old process is never
        re-sent and its task stays Scheduled.
        """
        rec = WorkerRecord(data["name"], data.get("address", ""), data.get("cpus", 0.0),
                           data.get("memory", 0), data.get("disk", 0), state=READY, greeted=False,
                           named_route=self.named_routes)
        # ...and the time its hello may take to get through: a hello refused while this manager
        # was loading is retried after a backoff (cube/wire/link.py).
        rec.last_seen += HELLO_ALLOWANCE
        rec.last_seen_wall = data.get("last_seen", 0.0)
        rec.availability = data.get("availability", ACTIVE)
        self.workers.setdefault(rec.name, rec)
        self.changed()

    def seen(self, name: str) -> WorkerRecord | None:
        """Heard from `name`: the record if it is ready and greeted, else None ("say hello").

        A worker only remembered from before a restart is alive too when it is heard: its grace
        period restarts, so one slow to say hello (busy starting containers) is not declared lost."""
        rec = self.workers.get(name)
        if rec and rec.state == READY:
            rec.last_seen = time.monotonic()
            rec.last_seen_wall = time.time()
            return rec if rec.greeted else None
        return None

    def track_route(self, name: str, route: list[bytes]) -> bool:
        """Remember the connection `name` spoke on; True if it changed (commands must follow)."""
        rec = self.workers.get(name)
        if rec is None or not route or rec.route_id == route[0]:
            return False
        self.by_route.pop(rec.route_id, None)
        rec.route_id = route[0]
        self.by_route[route[0]] = name
        return True

    def forget(self, name: str) -> None:
        rec = self.workers.pop(name, None)
        if rec is not None:
            self.by_route.pop(rec.route_id, None)
        self.changed()

    def touch_all(self) -> None:
        """Count every ready worker as just heard from (after the manager itself was deaf)."""
        now = time.monotonic()
        for rec in self.workers.values():
            if rec.state == READY:
                rec.last_seen = now

    def expire(self, now: float | None = None) -> list[WorkerRecord]:
        """Mark workers silent for longer than the grace period lost; return the newly lost."""
        now = time.monotonic() if now is None else now
        lost = []
        for rec in self.workers.values():
            if rec.state == READY and now - rec.last_seen > self.grace:
                rec.state = LOST
                lost.append(rec)
        if lost:
            self.changed()
        return lost

    def drained(self) -> frozenset[str]:
        return frozenset(n for n, r in self.workers.items() if r.availability == DRAIN)

    def schedulable(self) -> list[str]:
        """Workers new work may go to: connected, greeted, not draining (kept until a change)."""
        return self._kept("schedulable", lambda: [n for n in self.ready()
                                                  if self.is_ready(n) and self.workers[n].availability == ACTIVE])

    def lose(self, name: str) -> WorkerRecord | None:
        """Mark a worker lost now (removed by an operator), whatever its heartbeats say."""
        rec = self.workers.get(name)
        if rec is not None:
            rec.state = LOST
            self.changed()
        return rec

    def ready(self) -> list[str]:
        return sorted(n for n, r in self.workers.items() if r.state == READY)

    def live_count(self) -> int:
        """Workers that heartbeat (ready, greeted or not yet): what sets their pace (pace.py)."""
        return len(self._kept("ready", self.ready))

    def lost(self) -> list[str]:
        return self._kept("lost", lambda: sorted(n for n, r in self.workers.items() if r.state == LOST))

    def get(self, name: str) -> WorkerRecord | None:
        return self.workers.get(name)

    def is_ready(self, name: str) -> bool:
        """Connected and greeted: a worker only remembered from before a restart is not a target."""
        rec = self.workers.get(name)
        return bool(rec and rec.state == READY and rec.greeted)
