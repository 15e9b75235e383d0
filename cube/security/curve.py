"""CURVE settings for a socket, applied before it binds or connects (the ZeroMQ Guide's Ironhouse).

A server socket proves the manager's key and asks the ZAP handler (zap.py) about each client key,
under a domain that says which socket it is; a client socket pins the server's public key.
"""
from __future__ import annotations

from dataclasses import dataclass

import zmq

from cube.security.keys import Keypair

# ZAP domains: one per kind of server socket, so a key admitted on one is not admitted on another.
API = "api"
WORKERS = "workers"
METRICS = "metrics"
EVENTS = "events"


@dataclass(frozen=True)
class CurveServer:
    keypair: Keypair
    domain: str

    def apply(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keypair.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keypair.public)
        sock.setsockopt(zmq.ZAP_DOMAIN, self.domain.encode())


@dataclass(frozen=True)
class CurveClient:
    keypair: Keypair
    server_key: bytes  # z85

    def apply(self, sock: zmq.Socket) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keypair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keypair.secret)
