"""The cluster's event log (docs/protocol.md, "Events"): numbered events, their replay, the streams.

Every change of a task, a service or a node is one event with a cluster-wide sequence number
`seq` (docs/architecture.md, "The event log"). Clients read stored events with `events.since`
(paged) and follow the live ones on the events PUB socket; the filters below mean the same on
both sides, so a follower can filter what it replays and what it receives alike.
"""
from __future__ import annotations

from typing import Any

from cube.wire.schema import NUMBER, Field, opt, register

SINCE = "events.since"  # replay stored events after a seq (or from a time), one page a reply
NODE_EVENT = "node.event"  # PUB stream: joined, lost, back, drained, activated, revoked, removed
HEARTBEAT = "events.heartbeat"  # PUB stream, every HEARTBEAT_INTERVAL: the latest seq published
TASK_EVENT = "task.event"  # cube.messages.task.EVENT
SERVICE_EVENT = "service.event"  # cube.messages.service.EVENT
TOPICS = (TASK_EVENT, SERVICE_EVENT, NODE_EVENT, HEARTBEAT)

TYPES = ("task", "service", "node")
FILTER_KEYS = ("type", "task", "service", "node")
def topic_of(msg_type: str, body: dict) -> str:
    """The PUB topic frame of an event: a task event's also names its state ("task.event.Running"),
    so a subscriber to "task.event.Failed" gets failures only, filtered at the publisher, while one
    to "task.event" still gets every task event (topics match by prefix)."""
    state = body.get("state") if msg_type == TASK_EVENT else None
    return f"{msg_type}.{state}" if isinstance(state, str) and state else msg_type


HEARTBEAT_INTERVAL = 1.0  # seconds; a follower that hears nothing for a few of them checks the manager
MAX_PAGE = 1000  # events a reply holds at most (the Store's pages are bounded in bytes too)
MIN_PREFIX = 4  # a task id prefix this long at least matches task=PREFIX

_FILTER = opt(list, items=str, max_len=32)
register(SINCE, {"seq": opt(int), "time": opt(NUMBER), "until": opt(int), "limit": opt(int),
                 "type": _FILTER, "task": _FILTER, "service": _FILTER, "node": _FILTER})
register(NODE_EVENT, {"seq": Field(int), "node": Field(str), "action": Field(str), "time": Field(NUMBER),
                      "reason": opt(str)})
register(HEARTBEAT, {"seq": Field(int), "time": Field(NUMBER), "started": opt(NUMBER)})

API = {SINCE}  # read-only credentials may replay (env values are never in an event)


class FilterError(ValueError):
    """A filter that cannot mean anything: named, so the user can fix it."""


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    """`["task=web", "type=node"]` -> `{"task": ["web"], "type": ["node"]}`; values of one key are
    alternatives (OR), different keys must all match (AND), as `docker events --filter` does."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise FilterError(f"filter {item!r} is not KEY=VALUE (keys: {', '.join(FILTER_KEYS)})")
        if key not in FILTER_KEYS:
            raise FilterError(f"filter {item!r}: unknown key {key!r}; use one of {', '.join(FILTER_KEYS)}")
        value = value.strip()
        if key == "type" and value not in TYPES:
            raise FilterError(f"filter {item!r}: type is one of {', '.join(TYPES)}")
        out.setdefault(key, []).append(value)
    return out


def filters_of(body: dict[str, Any]) -> dict[str, list[str]]:
    """The filters of an `events.since` body (already schema-checked)."""
    return {k: list(body[k]) for k in FILTER_KEYS if body.get(k)}


def matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Whether `event` passes every filter. task=X: its name or id is X, or its id starts with X
    (4 characters at least, as `task inspect` takes a prefix);
    service=X: the service's events and its tasks'; node=X: the node's events and the tasks on it."""
    kind = event.get("type", "task")
    for key, values in filters.items():
        if key == "type":
            ok = kind in values
        elif key == "task":
            ok = kind == "task" and any(event.get("name") == v or event.get("task_id") == v or (
                len(v) >= MIN_PREFIX and event.get("task_id", "").startswith(v)) for v in values)
        elif key == "service":
            ok = event.get("service", "") in values and kind in ("task", "service")
        elif key == "node":
            ok = (event.get("node") if kind == "node" else event.get("worker") if kind == "task" else None) in values
        else:
            ok = True
        if not ok:
            return False
    return True
