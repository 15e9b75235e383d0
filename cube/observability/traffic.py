"""Message counters of an actor, by socket and message type.

cube/wire/actor.py calls `received`, `sent`, `refused` and `dropped` on its `traffic` (None when
metrics are off) for every message: kept cheap (a manager handles ~1,000 messages a second), so
each (socket, type) pair's counter child is looked up once and cached. Label values are bounded:
sockets have the few names the process gives them, and a received type is counted as itself only
if the actor handles it (or it is a reply), as "other" otherwise (a peer cannot mint series).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import Counter
from prometheus_client.registry import CollectorRegistry

from cube.wire.envelope import REPLY_ERROR, REPLY_OK

OTHER = "other"
KINDS = ("received", "sent", "refused", "dropped")
HELP = {
    "received": "Messages received and decoded, by socket and type",
    "sent": "Messages handed to ZeroMQ, by socket and type",
    "refused": "Messages refused (an error reply) or ignored (no answer) before any handler ran",
    "dropped": "Messages that could not be sent: the peer unreachable or too far behind (high-water mark)",
}


def message_counters(registry: CollectorRegistry) -> dict[str, Counter]:
    """cube_messages_{received,sent,refused,dropped}_total{socket,type}, in `registry`."""
    return {kind: Counter(f"cube_messages_{kind}", HELP[kind], ["socket", "type"], registry=registry)
            for kind in KINDS}


class Traffic:
    """What an actor's message paths count with. `label(sock)` names a socket (a few fixed
    names); `also[socket name]` is a further counter by type for messages sent there (e.g. the
    events published on the manager's events socket), except the types in `not_also` (e.g. the
    events socket's heartbeats, which are not events)."""

    def __init__(self, counters: dict[str, Counter], label: Callable[[Any], str], handled: Iterable[str],
                 also: dict[str, Counter] | None = None, not_also: Iterable[str] = ()):
        self.counters = counters
        self.label = label
        self.known = frozenset(handled) | {REPLY_OK, REPLY_ERROR}
        self.also = also or {}
        self.not_also = frozenset(not_also)
        self._children: dict[tuple[str, str, str], Any] = {}

    def _child(self, kind: str, sock: Any, msg_type: str) -> Any:
        name = self.label(sock)
        key = (kind, name, msg_type)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.counters[kind].labels(name, msg_type)
            extra = self.also.get(name)
            if kind == "sent" and extra is not None and msg_type not in self.not_also:
                child = self._children[key] = _Both(child, extra.labels(msg_type))
        return child

    def _bounded(self, msg_type: str) -> str:
        return msg_type if msg_type in self.known else OTHER

    def received(self, sock: Any, msg_type: str) -> None:
        self._child("received", sock, self._bounded(msg_type)).inc()

    def refused(self, sock: Any, msg_type: str) -> None:
        self._child("refused", sock, self._bounded(msg_type)).inc()

    def sent(self, sock: Any, msg_type: str) -> None:
        """Types we send are our own (a bounded set in the code)."""
        self._child("sent", sock, msg_type).inc()

    def dropped(self, sock: Any, msg_type: str) -> None:
        self._child("dropped", sock, msg_type).inc()


class _Both:
    def __init__(self, a: Any, b: Any):
        self.a, self.b = a, b

    def inc(self) -> None:
        self.a.inc()
        self.b.inc()
