"""A blocking request/reply client ("lazy pirate"): for the CLI and for an actor's local peers.

A request that gets no answer in time raises Unavailable, and the socket is thrown away so a
late reply cannot be mistaken for the answer to the next request; replies are also matched on
`re`, so a stray one is ignored. A refused connection raises Unreachable at once, not after the
timeout; a request larger than a frame is refused before anything is sent. With CURVE (`curve`, cube/security/curve.py) a handshake the
server turns down raises Refused at once: "refused these credentials" is not "cannot reach".
"""
from __future__ import annotations

import time
from typing import Any, Callable

import zmq

from cube.wire import codec, sockets
from cube.wire.handshake import REFUSED, UNREACHABLE, HandshakeWatch
from cube.wire.envelope import REPLY_ERROR, Envelope, decode
from cube.wire.errors import BAD_REQUEST, FORBIDDEN, CubeError, Unavailable

class Refused(CubeError):
    """The server would not complete the handshake: an unknown or revoked key, a wrong server key,
    or no CURVE at all against a server that requires it."""

    def __init__(self, message: str):
        super().__init__(FORBIDDEN, message)


class Unreachable(Unavailable):
    """Nothing listens at the address (connection refused): the request was not sent."""


class Client:
    def __init__(self, address: str, name: str = "client", timeout: float = 3.0,
                 ctx: zmq.Context | None = None, curve: sockets.Security | None = None):
        self.address = address
        self.name = name
        self.timeout = timeout
        self.ctx = ctx or zmq.Context.instance()
        self.curve = curve
        self._sock: zmq.Socket | None = None
        self._watch: HandshakeWatch | None = None

    def call(self, msg_type: str, body: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send a request and return the reply body; raise CubeError / Unavailable."""
        env = Envelope(msg_type, body or {}, sender=self.name)
        payload = env.encode()
        if len(payload) > codec.MAX_FRAME:
            raise CubeError(BAD_REQUEST, f"the request is {len(payload) >> 10} KiB; a message may carry at most "
                                         f"{codec.MAX_FRAME >> 10} KiB")
        sock = self._socket()
        self._watch.forget_failures()
        try:
            sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.close()
            raise Unavailable(f"cannot reach {self.address}: not connected") from None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._watch.monitor, zmq.POLLIN)
        while True:
            left = deadline - time.monotonic()
            ready = dict(poller.poll(left * 1000)) if left > 0 else {}
            if self._watch.monitor in ready:
                self._check_handshake()
                if sock not in ready:
                    continue
            if sock not in ready:
                self.close()
                raise Unavailable(f"no answer from {self.address} within "
                                  f"{self.timeout if timeout is None else timeout:g}s")
            try:
                reply = decode(sock.recv_multipart()[-1])
            except CubeError:
                continue  # garbage on our own socket: not our answer
            if reply.re != env.id:
                continue
            if reply.type == REPLY_ERROR:
                raise CubeError(str(reply.body.get("code", "error")), str(reply.body.get("message", "")))
            return reply.body

    def send_raw(self, frames: list[bytes]) -> None:
        """Send frames as they are (chaos scripts and tests use this to send garbage)."""
        self._socket().send_multipart(frames)

    def _check_handshake(self) -> None:
        verdict = self._watch.verdict()
        where = self.address.removeprefix("tcp://")
        if verdict == UNREACHABLE:
            self.close()
            raise Unreachable(f"cannot reach {where}: connection refused")
        if verdict == REFUSED:
            self.close()
            raise Refused(f"the manager at {where} refused these credentials")

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            def watch(sock: zmq.Socket) -> None:
                self._watch = HandshakeWatch(sock)
            # Not `immediate`: the first request must wait for the connect in progress.
            self._sock = sockets.dealer(self.ctx, self.address, curve=self.curve, before_connect=watch)
        return self._sock

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


def all_pages(call: Callable[[str, dict[str, Any]], dict[str, Any]], msg_type: str, body: dict[str, Any],
              key: str) -> list[dict[str, Any]]:
    """Every row of a paged list (`task.ls`, `node.ls`): each reply holds a page and a `continue`
    token for the next, empty on the last. `call(msg_type, body)` makes one request."""
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        reply = call(msg_type, {**body, "continue": token} if token else body)
        rows += reply[key]
        token = reply.get("continue") or ""
        if not token:
            return rows
