"""Socket factories with the options every Cube socket needs.

ROUTER sockets are created with ROUTER_MANDATORY so a message to a vanished peer, or one that
would exceed the high-water mark, raises instead of being silently dropped; the sender counts
and logs it (see Actor.send). LINGER is 0 everywhere: an actor that stops must not hang.
"""
from __future__ import annotations

from typing import Callable, Protocol

import zmq


class Security(Protocol):
    """CURVE settings (cube/security/curve.py), applied before the socket binds or connects."""

    def apply(self, sock: zmq.Socket) -> None: ...

SNDHWM = 10_000
RCVHWM = 10_000
MAXMSGSIZE = 4 << 20  # a peer sending more is disconnected by ZeroMQ before it costs us memory
RECONNECT_IVL_MAX = 2000  # ms: ZeroMQ's own reconnects back off (doubling from 100 ms) up to this


def _common(sock: zmq.Socket, curve: Security | None = None) -> zmq.Socket:
    if curve is not None:
        curve.apply(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.MAXMSGSIZE, MAXMSGSIZE)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX)  # no reconnect storm after a restart
    return sock


def router(ctx: zmq.Context, bind: str, curve: Security | None = None, sndhwm: int = SNDHWM) -> zmq.Socket:
    """`sndhwm` bounds the replies queued for each peer: one that does not read cannot pin memory."""
    sock = _common(ctx.socket(zmq.ROUTER), curve)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.bind(bind)
    return sock


def dealer(ctx: zmq.Context, connect: str, identity: str | None = None,
           immediate: bool = False, curve: Security | None = None,
           before_connect: Callable[[zmq.Socket], object] | None = None) -> zmq.Socket:
    """`immediate`: refuse to queue while not connected (for peers that retry on their own);
    `before_connect`: e.g. attach a monitor, which must see the first connection's events."""
    sock = _common(ctx.socket(zmq.DEALER), curve)
    if before_connect is not None:
        before_connect(sock)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity.encode())
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(connect)
    return sock


def publisher(ctx: zmq.Context, bind: str | None = None, connect: str | None = None,
              curve: Security | None = None) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.PUB), curve)
    if bind:
        sock.bind(bind)
    if connect:
        sock.connect(connect)
    return sock


def subscriber(ctx: zmq.Context, bind: str | None = None, connect: str | None = None,
               topics: tuple[bytes, ...] = (b"",), curve: Security | None = None) -> zmq.Socket:
    sock = _common(ctx.socket(zmq.SUB), curve)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    if bind:
        sock.bind(bind)
    if connect:
        sock.connect(connect)
    return sock


def tcp(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def connectable(address: str) -> str:
    """A bind address such as tcp://0.0.0.0:5557 made into one a peer can connect to."""
    return address.replace("://0.0.0.0:", "://127.0.0.1:").replace("://*:", "://127.0.0.1:")
