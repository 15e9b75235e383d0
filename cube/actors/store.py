"""The Store actor: the only process that opens the manager's database.

It answers store.* requests over a ROUTER socket. Keeping LevelDB in one process means its
lock is never fought over, and a crash of any other actor cannot corrupt it.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from cube.messages import store as msg
from cube.store import Store, StoreError, open_store
from cube.store.base import pack
from cube.wire import sockets
from cube.wire.actor import Actor
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, NOT_FOUND, UNAVAILABLE, CubeError

log = logging.getLogger(__name__)

PAGE_ITEMS = 1000
PAGE_BYTES = 256 << 10  # well under the 1 MiB frame limit


class StoreActor(Actor):
    def __init__(self, store: Store, endpoint: str, name: str = "store"):
        super().__init__(name)
        self.store = store
        self.sock = sockets.router(self.loop.ctx, endpoint)
        self.serve(self.sock, accept=msg.ALL)

    def on_store_put(self, m: Envelope) -> dict[str, Any]:
        _in_time(m)
        with _store_errors():
            self.store.put(m.body["ns"], m.body["key"], m.body["value"])
        return {}

    def on_store_get(self, m: Envelope) -> dict[str, Any]:
        with _store_errors():
            value = self.store.get(m.body["ns"], m.body["key"])
        if value is None:
            raise CubeError(NOT_FOUND, f"no {m.body['key']!r} in {m.body['ns']!r}")
        return {"value": value}

    def on_store_delete(self, m: Envelope) -> dict[str, Any]:
        _in_time(m)
        with _store_errors():
            self.store.delete(m.body["ns"], m.body["key"])
        return {}

    def on_store_list(self, m: Envelope) -> dict[str, Any]:
        """One page of a namespace, so a large one never outgrows a frame; `more` says go on."""
        after = m.body.get("after") or ""
        limit = max(1, min(m.body.get("limit") or PAGE_ITEMS, PAGE_ITEMS))
        with _store_errors():
            items = self.store.list(m.body["ns"], m.body.get("prefix") or "", after, limit + 1)
        page, size = [], 0
        for k, v in items:
            size += len(pack(v)) + len(k)
            if page and (len(page) >= limit or size > PAGE_BYTES):
                break
            page.append([k, v])
        return {"items": page, "more": len(page) < len(items)}

    def on_store_count(self, m: Envelope) -> dict[str, Any]:
        with _store_errors():
            return {"count": self.store.count(m.body["ns"])}

    def on_store_batch(self, m: Envelope) -> dict[str, Any]:
        ops = []
        for i, op in enumerate(m.body["ops"]):
            kind, ns, key = op.get("op"), op.get("ns"), op.get("key")
            if kind not in ("put", "delete") or not isinstance(ns, str) or not isinstance(key, str):
                raise CubeError(BAD_REQUEST, f"store.batch: op {i} needs op put/delete, ns and key")
            ops.append((kind, ns, key, op.get("value")))
        _in_time(m)
        with _store_errors():
            self.store.batch(ops)
        return {"applied": len(ops)}

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.store.close()


def _in_time(m: Envelope) -> None:
    """Refuse a write whose deadline has passed, before the backend is touched.

    Its client has stopped waiting by then (e.g. this process was frozen with the request queued)
    and reported the write as failed, or is about to re-read what was applied: applying it now
    would make the Store hold what its client believes was never written.
    """
    deadline = m.body.get("deadline")
    if deadline is not None:
        late = time.time() - deadline
        if late > 0:  # (the refusal is logged with the other refusals)
            raise CubeError(UNAVAILABLE, f"{m.type} expired {late:.2f}s before the store got to it: "
                                         f"the write was not applied")


class _store_errors:
    """Turn backend errors into `bad_request` replies instead of crashing the actor."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is not None and isinstance(err, StoreError):
            raise CubeError(BAD_REQUEST, str(err)) from None
        return False


def run_store(endpoint: str, kind: str, path: str) -> None:
    """Process entry point."""
    StoreActor(open_store(kind, path), endpoint).run()
