"""sock_diag (netlink) finds the same port holders as /proc/net, much faster with many connections."""
from __future__ import annotations

import socket

import pytest

from cube.actors import metrics, sockdiag


@pytest.fixture
def held():
    made = []
    for family, kind, address in [(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
                                  (socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
                                  (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
                                  (socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 0))]:
        s = socket.socket(family, kind)
        s.bind(address)
        if kind == socket.SOCK_STREAM:
            s.listen()
        made.append(s)
    connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a connected UDP socket holds its port too
    connected.bind(("127.0.0.1", 0))
    connected.connect(("127.0.0.1", 9))
    bound_only = socket.socket()  # bound, not listening: holds nothing Docker would trip on
    bound_only.bind(("127.0.0.1", 0))
    made += [connected, bound_only]
    yield made
    for s in made:
        s.close()


def test_the_same_holders_as_proc_net(held):
    found = sockdiag.holders()
    assert found is not None, "netlink sock_diag is available on Linux"
    assert sorted(found) == sorted(metrics._listeners())
    ports = {(proto, port) for proto, _, port in found}
    listener, listener6, udp, udp6, connected, bound_only = held
    for proto, s in [("tcp", listener), ("tcp", listener6), ("udp", udp), ("udp", udp6), ("udp", connected)]:
        assert (proto, s.getsockname()[1]) in ports
    assert ("tcp", bound_only.getsockname()[1]) not in ports


def test_without_netlink_the_caller_falls_back(monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError("no netlink here")
    monkeypatch.setattr(sockdiag.socket, "socket", refused)
    assert sockdiag.holders() is None
