"""Errors that travel on the wire as `error` replies: a code for programs, a message for people."""
from __future__ import annotations

import re

BAD_FRAME = "bad_frame"  # not msgpack, too big, not a map
BAD_ENVELOPE = "bad_envelope"  # a map, but not our envelope (version, id, type...)
UNKNOWN_TYPE = "unknown_type"
BAD_BODY = "bad_body"  # the body does not match the type's schema
BAD_REQUEST = "bad_request"  # well-formed but wrong (e.g. a bad task file)
NOT_FOUND = "not_found"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"  # a peer did not answer in time, or refused: the request was NOT applied
IN_DOUBT = "in_doubt"  # no answer from a peer: the request may or may not have been applied
INTERNAL = "internal"
FORBIDDEN = "forbidden"  # these credentials may not do this (e.g. a read-only client starting a task)
NOT_JOINED = "not_joined"  # a worker key that is not (or no longer) bound to a worker name
NOT_LEADER = "not_leader"  # a manager that does not lead: "not leader: the leader is H:P" (docs/ha.md)


LEADER_IS = re.compile(r"the leader is (\S+)$")


def leader_in(message: str) -> str | None:
    """The address a `not_leader` error names ("not leader: the leader is H:P"), if any."""
    m = LEADER_IS.search(message or "")
    return m.group(1) if m else None


class CubeError(Exception):
    """An error with a code; raised by handlers and turned into an `error` reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class Unavailable(CubeError):
    """The peer did not answer in time (dead, restarting, or unreachable)."""

    def __init__(self, message: str):
        super().__init__(UNAVAILABLE, message)
