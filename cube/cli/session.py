"""Talking to the manager: where it is, which credentials prove who we are, and one request.

Every failure becomes a CliError with the one line a person needs: "cannot reach" only when
nothing answered (or nothing listens), "refused these credentials" when the handshake was turned
down, the manager's own message otherwise. ZeroMQ and the credentials' CURVE keys are imported
on the first request, not before: help and usage errors must not pay for them.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

API_PORT = 5555  # cube.config.API_PORT (importing cube.config is not needed to say so)
EVENTS_PORT = 5558  # cube.config.EVENTS_PORT
CREDENTIALS_ENV = "CUBE_CREDENTIALS"  # cube.security.credentials.ENV
DEFAULT_TIMEOUT = 3.0
LOADING_WAIT = 10.0  # how long a command waits for a manager that is loading its state
_ADDRESS = re.compile(r"^(?:tcp://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+|\*)(?::([0-9]{1,5}))?$")


class CliError(Exception):
    """Something the user must fix or know; printed as one line, exit status 1."""


@dataclass(frozen=True)
class Conn:
    """Where the manager is and how to prove who we are (docs/security.md, "Credentials")."""

    address: str  # tcp://host:port of the API, or several comma-separated (managers: docs/ha.md)
    creds: Any  # cube.security.credentials.Credentials, or None (an insecure local manager)

    @property
    def curve(self) -> Any:
        return self.creds.curve() if self.creds else None

    @property
    def addresses(self) -> list[str]:
        return self.address.split(",")

    @property
    def current(self) -> str:
        """The manager we talk to: the leader, once one answered or was named (docs/ha.md)."""
        return _current.get(self.address) or self.addresses[0]

    @property
    def host(self) -> str:
        return self.current.removeprefix("tcp://").rsplit(":", 1)[0]

    @property
    def shown(self) -> str:
        return self.current.removeprefix("tcp://")


_current: dict[str, str] = {}  # Conn.address -> the address of the manager that leads


def address(value: str, source: str) -> str:
    """tcp://HOST:PORT from what a person typed (HOST:PORT or tcp://HOST:PORT), or several
    comma-separated (the managers of one cluster, docs/ha.md)."""
    if "," in value:
        parts = [p for p in value.split(",") if p.strip()]
        if not parts:
            raise CliError(f"{source} {value!r} is not HOST:PORT (e.g. 127.0.0.1:{API_PORT})")
        return ",".join(address(p, source) for p in parts)
    m = _ADDRESS.match(value.strip())
    if not m:
        raise CliError(f"{source} {value!r} is not HOST:PORT (e.g. 127.0.0.1:{API_PORT})")
    if m.group(2) is None:
        raise CliError(f"{source} {value!r} has no port; use HOST:PORT, e.g. {m.group(1)}:{API_PORT}")
    if not 0 < int(m.group(2)) < 65536:
        raise CliError(f"{source} {value!r}: port {m.group(2)} is not between 1 and 65535")
    return f"tcp://{m.group(1)}:{int(m.group(2))}"


def connect(manager: str | None, credentials: str | None) -> Conn:
    """--manager, else $CUBE_MANAGER, else the credentials' manager, else 127.0.0.1:5555."""
    from cube.security.credentials import Credentials, CredentialsError, locate
    path = locate(credentials or "")
    try:
        creds = Credentials.load(path) if path else None
    except CredentialsError as e:
        raise CliError(str(e)) from None
    if manager:
        return Conn(address(manager, "--manager"), creds)
    if os.environ.get("CUBE_MANAGER"):
        return Conn(address(os.environ["CUBE_MANAGER"], "CUBE_MANAGER"), creds)
    if creds is not None:
        return Conn(address(creds.manager, f"the manager in {path}"), creds)
    return Conn(f"tcp://127.0.0.1:{API_PORT}", None)


_clients: dict[tuple[Conn, str], Any] = {}


def call(conn: Conn, msg_type: str, body: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict:
    """One request and its reply body. CliError when the manager is not there or refuses us;
    the manager's CubeError (with its code) when it answered with an error.

    With several managers (docs/ha.md) a follower's `not_leader` answer names the leader, and the
    request goes there; a manager that does not answer is skipped for the next one (a repeated
    request is harmless: a start names its task id, a stop or a read can be repeated)."""
    from cube.wire.client import Client, Refused, Unreachable
    from cube.wire.errors import NOT_LEADER, UNAVAILABLE, CubeError, Unavailable, leader_in
    deadline = time.monotonic() + LOADING_WAIT
    tried: set[str] = set()  # managers that did not answer
    sent: Exception | None = None  # a request that got no answer may have arrived
    while True:
        where = conn.current
        client = _clients.get((conn, where))
        if client is None:  # one connection (one CURVE handshake) per manager for every request of a command
            client = _clients[(conn, where)] = Client(where, name="cli", timeout=timeout, curve=conn.curve)
        try:
            reply = client.call(msg_type, body, timeout=timeout)
            leader = reply.get("leader") if reply.get("role") == "follower" else None
            if leader and f"tcp://{leader}" not in (where, *tried) and time.monotonic() < deadline:
                _current[conn.address] = f"tcp://{leader}"  # a follower's ping: ask the leader (events, top)
                continue
            return reply
        except Unavailable as e:
            tried.add(where)
            others = [a for a in conn.addresses if a not in tried]
            if not isinstance(e, Unreachable):
                sent = e
            if others:  # gone or frozen: another manager may lead (requests are safe to repeat: ids)
                _current[conn.address] = others[0]
                continue
            raise unreachable(conn, sent or e, timeout) from None
        except Refused:
            if conn.creds is None:
                raise CliError(f"the manager at {conn.shown} needs credentials: set --credentials or "
                               f"{CREDENTIALS_ENV} (cube-manager writes DATA_DIR/admin.credentials)") from None
            raise CliError(f"the manager at {conn.shown} refused these credentials "
                           f"({conn.creds.name}); were they revoked, or issued by another manager?") from None
        except CubeError as e:  # a manager that just started is still loading: wait a little
            if e.code == NOT_LEADER and time.monotonic() < deadline:
                leader = leader_in(e.message)
                if leader and f"tcp://{leader}" != where:
                    if f"tcp://{leader}" in tried:  # it did not answer: it may be back by now
                        tried.discard(f"tcp://{leader}")
                        time.sleep(0.2)
                    _current[conn.address] = f"tcp://{leader}"
                else:  # no leader yet (one is being elected)
                    time.sleep(0.2)
                continue
            if e.code != UNAVAILABLE or "loading" not in e.message or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class NotReached(CliError):
    """Nothing answered. `sent` says whether the request may have arrived (a timeout) or surely
    did not (the connection was refused)."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


def unreachable(conn: Conn, error: Exception, timeout: float) -> NotReached:
    from cube.wire.client import Unreachable  # a refused connection, told at once
    if isinstance(error, Unreachable):
        return NotReached(f"cannot reach the manager at {conn.shown}: connection refused; is cube-manager "
                          f"running there? Set --manager or CUBE_MANAGER.", sent=False)
    return NotReached(f"cannot reach the manager at {conn.shown} (no answer within {timeout:g}s); is "
                      f"cube-manager running? Set --manager or CUBE_MANAGER.", sent=True)


def pages(conn: Conn, msg_type: str, body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Every row of a paged list, following `continue` tokens."""
    from cube.wire.client import all_pages
    return all_pages(lambda t, b: call(conn, t, b), msg_type, body, key)


def close() -> None:
    """Close every connection this process opened (at exit: a lingering socket delays it)."""
    while _clients:
        _clients.popitem()[1].close()
