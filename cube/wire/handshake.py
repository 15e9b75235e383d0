"""What became of a connecting socket's handshakes, from its monitor (docs/security.md).

A peer refused at handshake gets no reply, ever, and ZeroMQ keeps reconnecting quietly: without
this, "refused these credentials" and "nothing listens there" would both look like a timeout.
The watch is attached before the socket connects, so no event is missed.

- REFUSED: the server's ZAP handler said no (an unknown or revoked key), or handshakes keep being
  cut short without a reason, which is what a wrong server key or a plaintext peer looks like
  from here (once could be a server dying mid-handshake, so it takes `unexplained_limit`);
- UNREACHABLE: the connection was refused before it ever came up (nothing listens there).
"""
from __future__ import annotations

import struct

import zmq

REFUSED = "refused"
UNREACHABLE = "unreachable"

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_EVENTS = _FAILED | zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED


def next_event(monitor: zmq.Socket) -> tuple[int, str] | None:
    """The next event waiting on a socket monitor (event, endpoint), or None. Its first frame is
    (event: uint16, value: int32); zmq.utils.monitor does the same but imports asyncio, a third of
    a CLI command's start-up."""
    try:
        frames = monitor.recv_multipart(zmq.NOBLOCK)
        return struct.unpack("=H", frames[0][:2])[0], frames[1].decode(errors="replace") if len(frames) > 1 else ""
    except (zmq.Again, zmq.ZMQError, struct.error, IndexError):
        return None


class HandshakeWatch:
    def __init__(self, sock: zmq.Socket, unexplained_limit: int = 3):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(_EVENTS)
        self.unexplained_limit = unexplained_limit
        self.connected = False  # the connection came up at least once
        self.unexplained = 0  # handshakes cut short without a reason since the last success

    def verdict(self) -> str | None:
        """Read the events that arrived; REFUSED, UNREACHABLE, or None (nothing decided)."""
        while True:
            got = next_event(self.monitor)
            if got is None:
                return None
            event = got[0]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected, self.unexplained = True, 0
            elif event == zmq.EVENT_CONNECT_RETRIED and not self.connected:
                return UNREACHABLE
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self.unexplained += 1
                if self.unexplained >= self.unexplained_limit:
                    return REFUSED
            elif event & _FAILED:
                return REFUSED

    def forget_failures(self) -> None:
        self.unexplained = 0

    def close(self) -> None:
        """Before the socket is closed: a monitor left attached would keep its address taken."""
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
