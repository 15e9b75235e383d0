"""The gate: ZAP decides, at handshake, which CURVE keys may connect to which server socket.

zmq.auth's ThreadAuthenticator answers ZAP requests on its own thread; `allow` functions, one per
domain (curve.py), say yes or no to a client key (z85 text). A refused key never reaches a
handler: ZeroMQ drops the connection. The ZAP User-Id of an admitted connection is its key, so
every message received on it can be traced to the key that sent it (Actor.serve, `authenticated`).

HandshakeCounter counts what the gate and the CURVE mechanism turn away (plaintext peers, wrong
server keys, refused keys) from the socket's monitor events, and logs them throttled.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from cube.logs import Throttled
from cube.wire.handshake import next_event

log = logging.getLogger(__name__)
Allow = Callable[[str], bool]


class _Provider:
    def __init__(self, allow: Allow, counts: dict[str, int], domain: str):
        self.allow, self.counts, self.domain = allow, counts, domain

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            ok = bool(self.allow(key.decode("ascii")))
        except Exception:  # a broken policy refuses; it must never kill the ZAP thread
            log.exception("zap: policy for %s failed", domain)
            ok = False
        if not ok:
            self.counts[self.domain] = self.counts.get(self.domain, 0) + 1
        return ok


class Gate:
    """The ZAP handler of one ZeroMQ context; `policies` maps a domain to who may connect."""

    def __init__(self, ctx: zmq.Context, policies: dict[str, Allow]):
        self.refused: dict[str, int] = {}  # domain -> keys refused (written on the ZAP thread)
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("cube.zap"))
        logging.getLogger("cube.zap").setLevel(logging.WARNING)
        self.auth.start()
        for domain, allow in policies.items():
            self.auth.configure_curve_callback(domain, credentials_provider=_Provider(allow, self.refused, domain))

    def stop(self) -> None:
        self.auth.stop()


_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol_error",  # e.g. a plaintext peer on a CURVE socket
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused_key",
}


class HandshakeCounter:
    """Counts failed handshakes on a server socket into `stats` (auth.<label>.<why>); the client
    side's verdicts are cube/wire/handshake.py's."""

    def __init__(self, loop: Any, sock: zmq.Socket, label: str, stats: dict[str, int]):
        self.label, self.stats = label, stats
        self.throttled = Throttled(log)
        mask = 0
        for event in _FAILURES:
            mask |= event
        self.monitor = sock.get_monitor_socket(mask)
        loop.add_reader(self.monitor, self._on_event)

    def _on_event(self, sock: zmq.Socket) -> None:
        for _ in range(100):
            got = next_event(sock)
            if got is None:
                return
            why = _FAILURES.get(got[0])
            if why is None:
                continue
            self.stats[f"auth.{self.label}.{why}"] = self.stats.get(f"auth.{self.label}.{why}", 0) + 1
            self.throttled.warning(f"{self.label}.{why}", "%s: refused a connection on %s (%s)",
                                   self.label, got[1], why)
