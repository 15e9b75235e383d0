"""Sockets holding a port, asked of the kernel over netlink (sock_diag), as `ss -l` does.

The kernel filters by state, so the answer is the few listeners, not every connection: on a host
with thousands of connections (a manager's host, a benchmark's simulated workers) reading and
parsing /proc/net/tcp took ~30 ms a sample. Returns None when netlink is not available (the
caller reads /proc/net then).
"""
from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
# What holds a port (/proc/net's "0A" for TCP; "07" and "01" for UDP: bound, unconnected or connected)
STATES = {"tcp": (socket.IPPROTO_TCP, 1 << TCP_LISTEN),
          "udp": (socket.IPPROTO_UDP, (1 << TCP_CLOSE) | (1 << TCP_ESTABLISHED))}
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI48s")  # inet_diag_req_v2: family, protocol, ext, pad, states, id


def holders() -> list[tuple[str, str, int]] | None:
    """(proto, ip, port) of every socket holding a port in this network namespace, or None."""
    found: list[tuple[str, str, int]] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
            s.settimeout(2.0)
            for proto, (number, states) in STATES.items():
                for family in (socket.AF_INET, socket.AF_INET6):
                    found += [(proto, ip, port) for ip, port in _dump(s, family, number, states)]
    except OSError:
        return None
    return found


def _dump(s: socket.socket, family: int, protocol: int, states: int) -> list[tuple[str, int]]:
    body = _REQUEST.pack(family, protocol, 0, 0, states, b"\0" * 48)
    s.send(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
    out: list[tuple[str, int]] = []
    size = 4 if family == socket.AF_INET else 16
    while True:
        data = s.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR or length < _HEADER.size:
                raise OSError("sock_diag refused the request")
            msg = offset + _HEADER.size  # inet_diag_msg: family, state, timer, retrans, then the id
            port = struct.unpack_from(">H", data, msg + 4)[0]
            if port:
                out.append((socket.inet_ntop(family, data[msg + 8:msg + 8 + size]), port))
            offset += (length + 3) & ~3
