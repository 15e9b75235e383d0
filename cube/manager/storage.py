"""The Manager's asynchronous client of the Store actor: requests on the Manager's own loop.

Nothing here waits. Every call sends a request and returns; `done(result, error)` runs on the loop
when the answer comes. Errors keep their meaning (docs/protocol.md, "Errors"): a CubeError is an
answer (e.g. `unavailable`: a write refused unapplied, its deadline passed), `Unavailable` means no
answer came in time: a write may have been applied before its deadline, or never.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import zmq

from cube.messages import store as msg
from cube.observability import manager_metrics as metrics
from cube.store.base import Op, write_deadline
from cube.wire.actor import Actor
from cube.wire.envelope import REPLY_ERROR, Envelope
from cube.wire.errors import IN_DOUBT, NOT_FOUND, UNAVAILABLE, CubeError, Unavailable

Done = Callable[[Any, CubeError | None], None]
MAX_COALESCED = 100  # batches per request; with `solo` for large ones, far below the frame limit
WRITES = frozenset({msg.BATCH, msg.PUT, msg.DELETE})  # timed: cube_store_commit_seconds


class AsyncStore:
    def __init__(self, actor: Actor, sock: zmq.Socket, timeout: float = 2.0):
        self.actor = actor
        self.sock = sock
        self.timeout = timeout
        self.term = 0  # while leading: every write is fenced by it at the Store (docs/ha.md)
        self._queued: list[tuple[list[Op], Done]] = []

    def _call(self, msg_type: str, body: dict[str, Any], done: Done, timeout: float | None = None,
              pick: Callable[[dict[str, Any]], Any] = lambda b: b) -> None:
        wait = self.timeout if timeout is None else timeout
        if self.term and "deadline" in body:  # a write
            body["term"] = self.term

        sent = time.perf_counter() if msg_type in WRITES else None

        def on_reply(reply: Envelope | None) -> None:
            if sent is not None:  # the Store's commit as this Manager sees it: one round trip
                if reply is None:
                    metrics.store_unanswered.inc()
                else:
                    metrics.store_commit_seconds.observe(time.perf_counter() - sent)
            if reply is None:
                done(None, Unavailable(f"the store did not answer {msg_type} within {wait:g}s"))
            elif reply.type == REPLY_ERROR:
                done(None, CubeError(str(reply.body.get("code", "error")), str(reply.body.get("message", ""))))
            else:
                done(pick(reply.body), None)
        self.actor.request(self.sock, Envelope(msg_type, body), on_reply, timeout=wait)

    # ---- writes: they carry a deadline a little short of our wait (docs/architecture.md) ----------
    def batch(self, ops: list[Op], done: Done, solo: bool = False) -> None:
        """Write `ops` atomically. Batches asked for in one turn of the loop go out as one request
        (one synced write at the Store, one round trip): they succeed or fail together. A `solo`
        batch (a large one) goes alone, so a request never nears the frame limit."""
        if solo:
            self._send([(ops, done)])
            return
        self._queued.append((ops, done))
        if len(self._queued) == 1:
            self.actor.loop.call_later(0, self._send_queued)

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        for i in range(0, len(queued), MAX_COALESCED):
            self._send(queued[i:i + MAX_COALESCED])

    def _send(self, group: list[tuple[list[Op], Done]]) -> None:
        body = {"ops": [{"op": o, "ns": n, "key": k, "value": v} for ops, _ in group for o, n, k, v in ops],
                "deadline": write_deadline(self.timeout)}

        def answered(result: Any, error: CubeError | None) -> None:
            if (error is not None and len(group) > 1 and not isinstance(error, Unavailable)
                    and error.code not in (UNAVAILABLE, IN_DOUBT)):
                # Refused as a whole (a bad key, a value that cannot be encoded, too large):
                # nothing was applied; each batch is sent alone, so only the bad one fails.
                for one in group:
                    self._send([one])
                return
            for _, done in group:
                done(result, error)
        self._call(msg.BATCH, body, answered)

    def put(self, ns: str, key: str, value: Any, done: Done) -> None:
        self._call(msg.PUT, {"ns": ns, "key": key, "value": value, "deadline": write_deadline(self.timeout)}, done)

    def delete(self, ns: str, key: str, done: Done) -> None:
        self._call(msg.DELETE, {"ns": ns, "key": key, "deadline": write_deadline(self.timeout)}, done)

    # ---- reads ------------------------------------------------------------------------------------
    def get(self, ns: str, key: str, done: Done) -> None:
        def got(body: Any, error: CubeError | None) -> None:
            if error is not None and error.code == NOT_FOUND and not isinstance(error, Unavailable):
                done(None, None)
            else:
                done(body["value"] if body else None, error)
        self._call(msg.GET, {"ns": ns, "key": key}, got)

    def list_all(self, ns: str, done: Done, prefix: str = "") -> None:
        """Every (key, value) of a namespace, one page per request."""
        items: list[tuple[str, Any]] = []

        def page(body: Any, error: CubeError | None, after: str = "") -> None:
            if error is not None:
                done(None, error)
                return
            items.extend((k, v) for k, v in body["items"])
            if body.get("more") and body["items"]:
                self._call(msg.LIST, {"ns": ns, "prefix": prefix, "after": items[-1][0]}, page, timeout=10.0)
            else:
                done(items, None)
        self._call(msg.LIST, {"ns": ns, "prefix": prefix, "after": ""}, page, timeout=10.0)

    def list_page(self, ns: str, done: Done, prefix: str = "", after: str = "", limit: int = 1000) -> None:
        self._call(msg.LIST, {"ns": ns, "prefix": prefix, "after": after, "limit": limit}, done, timeout=10.0)
