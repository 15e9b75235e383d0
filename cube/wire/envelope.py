"""The envelope every Cube message travels in (docs/protocol.md).

On the wire it is one msgpack map: v, id, type, from, ts, re, body. In memory it also carries
the ROUTER route it came from, who sent it (on an authenticated socket) and, once the dispatcher
has seen it, a way to answer it.
"""
from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from cube.wire.codec import pack, unpack
from cube.wire.errors import BAD_ENVELOPE, BAD_FRAME, CubeError

VERSION = 1
REPLY_OK = "ok"
REPLY_ERROR = "error"


_ID_PREFIX = uuid.uuid4().hex[:12]  # unique to this process: ids never repeat across processes
_ID_COUNTER = itertools.count(1)


def _new_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:12], itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)  # a forked actor must not repeat its parent's ids


def new_id() -> str:
    """A unique message id: a random per-process prefix and a counter (a uuid4 each is slow)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


@dataclass
class Envelope:
    type: str
    body: dict[str, Any] = field(default_factory=dict)
    sender: str = ""
    id: str = field(default_factory=new_id)
    ts: float = field(default_factory=time.time)
    re: str | None = None
    v: int = VERSION
    route: list[bytes] = field(default_factory=list, compare=False, repr=False)
    # Who sent it, as the receiving actor established (never from the frame): the CURVE key of its
    # connection (ZAP User-Id), and what that key is allowed to be (a worker's name, a client's role).
    peer: str = field(default="", compare=False, repr=False)
    principal: str = field(default="", compare=False, repr=False)
    respond: Callable[..., None] | None = field(default=None, compare=False, repr=False)

    @property
    def is_reply(self) -> bool:
        return self.type in (REPLY_OK, REPLY_ERROR)

    def to_map(self) -> dict[str, Any]:
        return {"v": self.v, "id": self.id, "type": self.type, "from": self.sender,
                "ts": self.ts, "re": self.re, "body": self.body}

    def encode(self) -> bytes:
        return pack(self.to_map())

    def reply(self, body: dict[str, Any] | None = None, sender: str = "") -> "Envelope":
        return Envelope(REPLY_OK, body or {}, sender=sender, re=self.id, route=self.route)

    def error(self, code: str, message: str, sender: str = "") -> "Envelope":
        return Envelope(REPLY_ERROR, {"code": code, "message": message},
                        sender=sender, re=self.id, route=self.route)


def decode(frame: bytes) -> Envelope:
    """Envelope from one frame; raises CubeError (bad_frame / bad_envelope) with a reason."""
    data = unpack(frame)
    if not isinstance(data, dict):
        raise CubeError(BAD_FRAME, f"frame must be a msgpack map, got {type(data).__name__}")
    if data.get("v") != VERSION:
        raise CubeError(BAD_ENVELOPE, f"unsupported protocol version {data.get('v')!r}; this is v{VERSION}")
    ident, kind, sender, ts, body, re = (data.get("id"), data.get("type"), data.get("from"), data.get("ts"),
                                         data.get("body"), data.get("re"))
    # exact types (what msgpack decodes to; type(True) is bool, so a bool never passes for ts)
    if type(ident) is not str or type(kind) is not str or type(sender) is not str \
            or type(ts) not in _NUMBER or type(body) is not dict:
        for key, want in _CHECKS:
            value = data.get(key)
            if not isinstance(value, want) or isinstance(value, bool):
                raise CubeError(BAD_ENVELOPE, f"envelope field {key!r} is missing or not {_name(want)}")
    if not kind or not ident:
        raise CubeError(BAD_ENVELOPE, "envelope fields 'id' and 'type' must not be empty")
    if re is not None and type(re) is not str:
        raise CubeError(BAD_ENVELOPE, "envelope field 're' must be a string or nil")
    if body and set(map(type, body)) != _STR:
        raise CubeError(BAD_ENVELOPE, "body keys must be strings")
    return Envelope(type=kind, body=body, sender=sender, id=ident, ts=float(ts), re=re)


_NUMBER = frozenset({int, float})
_STR = frozenset({str})
_CHECKS = (("id", str), ("type", str), ("from", str), ("ts", (int, float)), ("body", dict))


def reply_id_hint(frame: bytes) -> str | None:
    """Best effort: the id of a frame that failed to decode, so its error reply can say `re`."""
    try:
        data = unpack(frame)
        return data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    except CubeError:
        return None


def _name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
