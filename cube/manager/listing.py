"""Paged, filtered lists (pure logic): `task.ls` and `node.ls` never outgrow a frame.

Like Kubernetes' `limit`/`continue`: a page holds at most `limit` items and at most PAGE_BYTES of
encoded rows; its `continue` token, given back, starts the next page right after the last row
(tasks in creation order, then id; nodes by name), so rows added or removed meanwhile never make
a page repeat or skip a row that stayed. By default only live tasks are listed (Docker's `ps`);
`all` adds finished ones.
"""
from __future__ import annotations

import base64
import bisect
import itertools
import json
from typing import Any, Callable, Iterable

from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task
from cube.wire import codec
from cube.wire.errors import BAD_REQUEST, CubeError

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
PAGE_BYTES = 512 << 10  # half the frame limit: room for the envelope and the token


HIDDEN = "<hidden>"


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """A task record without its env values (they may be secrets): for lists, events and
    read-only clients; only `task inspect` by an admin shows them (docs/security.md)."""
    if record.get("env"):
        return {**record, "env": {k: HIDDEN for k in record["env"]}}
    return record


def public_view(t: Task) -> dict[str, Any]:
    return redact(t.to_dict())


def finished(t: Task) -> bool:
    """Done for good: nothing more will happen to it (what `task ls` hides without --all)."""
    if t.state == State.COMPLETED:
        return True
    if t.state == State.FAILED:
        return t.desired != DESIRED_RUNNING or not (t.not_before > 0 and t.restart.allows(t.exit_code, t.restart_count))
    return False


def task_filter(body: dict[str, Any]) -> Callable[[Task], bool]:
    states = {s.lower() for s in _list(body.get("state"))}
    workers = set(_list(body.get("worker")))
    names = set(_list(body.get("name")))
    every = bool(body.get("all")) or bool(states)

    def keep(t: Task) -> bool:
        if not every and finished(t):
            return False
        if states and t.state.value.lower() not in states:
            return False
        if workers and t.worker not in workers:
            return False
        return not names or t.name in names
    return keep


def page(rows: Iterable[Any], key: Callable[[Any], list[Any]], render: Callable[[Any], dict[str, Any]],
         body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """One page of `rows` (already filtered), sorted by `key`, after the body's `continue` token."""
    limit = limit_of(body)
    after = _decode(body.get("continue") or "")
    ordered = sorted(rows, key=key)
    if after is not None:
        try:
            ordered = [r for r in ordered if key(r) > after]
        except TypeError:  # a token of another listing, or made up: not comparable with our keys
            raise CubeError(BAD_REQUEST, "bad continue token: pass back the one a list reply gave") from None
    return _fill(((key(r), r) for r in ordered), render, limit)


class Index:
    """Keys of the listed rows in order, kept up to date, so a page costs its own size (plus the
    rows a filter skips), not a sort of every row."""

    def __init__(self) -> None:
        self.keys: list[tuple[Any, ...]] = []
        self._key_of: dict[str, tuple[Any, ...]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def put(self, row_id: str, key: tuple[Any, ...]) -> None:
        if self._key_of.get(row_id) == key:
            return
        self.remove(row_id)
        self._key_of[row_id] = key
        if not self.keys or key > self.keys[-1]:
            self.keys.append(key)  # the common case: the newest row
        else:
            bisect.insort(self.keys, key)

    def remove(self, row_id: str) -> None:
        key = self._key_of.pop(row_id, None)
        if key is not None:
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]


def page_indexed(index: Index, lookup: Callable[[tuple[Any, ...]], Any], keep: Callable[[Any], bool],
                 render: Callable[[Any], dict[str, Any]], body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Like `page`, walking an Index from the `continue` token instead of sorting every row."""
    limit = limit_of(body)
    after = _decode(body.get("continue") or "")
    try:
        start = bisect.bisect_right(index.keys, tuple(after)) if after is not None else 0
    except TypeError:
        raise CubeError(BAD_REQUEST, "bad continue token: pass back the one a list reply gave") from None
    rows = ((key, row) for key in itertools.islice(index.keys, start, None)
            if (row := lookup(key)) is not None and keep(row))
    return _fill(rows, render, limit)


def _fill(keyed_rows: Iterable[tuple[Any, Any]], render: Callable[[Any], dict[str, Any]],
          limit: int) -> tuple[list[dict[str, Any]], str]:
    """Render rows in order until `limit` rows or PAGE_BYTES; the token names the last row given."""
    out: list[dict[str, Any]] = []
    size = 0
    last: Any = None
    for key, row in keyed_rows:
        rendered = render(row)
        size += len(codec.pack(rendered))
        if out and (len(out) >= limit or size > PAGE_BYTES):
            return out, _encode(list(last))
        out.append(rendered)
        last = key
    return out, ""


def limit_of(body: dict[str, Any]) -> int:
    limit = body.get("limit") or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise CubeError(BAD_REQUEST, f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _encode(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode(token: str) -> list[Any] | None:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise CubeError(BAD_REQUEST, "bad continue token: pass back the one a list reply gave") from None
    if not isinstance(key, list):
        raise CubeError(BAD_REQUEST, "bad continue token: pass back the one a list reply gave")
    return key
