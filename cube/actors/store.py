"""The Store actor: the only process that opens the manager's database.

It answers store.* requests over a ROUTER socket. Keeping LevelDB in one process means its
lock is never fought over, and a crash of any other actor cannot corrupt it.

Group commit (docs/architecture.md, "The Store"): writes that arrive together (every write read
in one pass over the socket) are applied as one synced WriteBatch, and each is acknowledged only
after that batch is on disk. Writes keep their order; a read first flushes the writes received
before it, so it always sees them. A write whose deadline has passed is refused unapplied.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from cube.chaos import hook
from cube.messages import store as msg
from cube.store import Store, StoreError, open_store
from cube.store.base import Op, StoreFenced, StoreInDoubt, StoreUnavailable, pack
from cube.wire import sockets
from cube.wire.actor import Actor, handles
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, NOT_FOUND, NOT_LEADER, UNAVAILABLE, CubeError

log = logging.getLogger(__name__)

PAGE_ITEMS = 1000
PAGE_BYTES = 256 << 10  # well under the 1 MiB frame limit


@dataclass
class PendingWrite:
    request: Envelope
    ops: list[Op]


class StoreActor(Actor):
    def __init__(self, store: Store, endpoint: str, name: str = "store"):
        super().__init__(name)
        self.store = store
        self.sock = sockets.router(self.loop.ctx, endpoint)
        self.serve(self.sock, accept=msg.ALL)
        self._pending: list[PendingWrite] = []
        self.groups = 0  # synced batches written (for tests and benchmarks)

    # ---- writes: queued, then applied together ----------------------------------------------------
    @handles(msg.PUT)
    def on_put(self, m: Envelope) -> None:
        self._queue(m, [("put", m.body["ns"], m.body["key"], m.body["value"])])

    @handles(msg.DELETE)
    def on_delete(self, m: Envelope) -> None:
        self._queue(m, [("delete", m.body["ns"], m.body["key"], None)])

    @handles(msg.BATCH)
    def on_batch(self, m: Envelope) -> None:
        ops: list[Op] = []
        for i, op in enumerate(m.body["ops"]):
            kind, ns, key = op.get("op"), op.get("ns"), op.get("key")
            if kind not in ("put", "delete", "delete_prefix") or not isinstance(ns, str) or not isinstance(key, str):
                raise CubeError(BAD_REQUEST, f"store.batch: op {i} needs op put/delete/delete_prefix, ns and key")
            ops.append((kind, ns, key, op.get("value")))
        self._queue(m, ops)

    def _queue(self, m: Envelope, ops: list[Op]) -> None:
        _in_time(m)
        with _store_errors():
            for _, ns, key, _ in ops:  # a bad key fails its own request, not the group
                Store.check(ns, key)
        self._pending.append(PendingWrite(m, ops))
        if len(self._pending) == 1:
            self.loop.call_later(0, self.flush)  # after this pass over the socket

    def flush(self) -> None:
        """Apply every queued write in one synced batch, then answer each."""
        pending, self._pending = self._pending, []
        live = []
        for w in pending:
            try:
                _in_time(w.request)
                live.append(w)
            except CubeError as e:  # it waited in the queue past its deadline
                self._answer(w, error=e)
        runs: list[list[PendingWrite]] = []  # in order; one leader's term per run (docs/ha.md)
        for w in live:
            if runs and runs[-1][0].request.body.get("term") == w.request.body.get("term"):
                runs[-1].append(w)
            else:
                runs.append([w])
        for run in runs:
            self._apply(run, run[0].request.body.get("term") or 0)

    def _batch(self, ops: list[Op], term: int) -> None:
        """A leader's writes are applied only while it still leads (etcd compares its term)."""
        self.store.batch(ops, term=term)

    def _apply(self, live: list[PendingWrite], term: int) -> None:
        try:
            self._batch([op for w in live for op in w.ops], term)
            self.groups += 1
        except StoreFenced as e:  # another manager leads now: nothing applied
            for w in live:
                self._answer(w, error=CubeError(NOT_LEADER, str(e)))
            return
        except StoreUnavailable as e:  # etcd unreachable: nothing applied, say so
            for w in live:
                self._answer(w, error=CubeError(UNAVAILABLE, f"the write was not applied: {e}"))
            return
        except StoreInDoubt as e:  # sent, not answered: no answer, so each client reads it back
            log.warning("store: %d writes in doubt: %s", len(live), e)
            return
        except StoreError:  # one bad write must not fail the others: apply them one by one
            for w in live:
                try:
                    self._batch(w.ops, term)
                    self._answer(w, {"applied": len(w.ops)})
                except StoreInDoubt:
                    pass  # no answer: its client reads it back
                except StoreError as e:
                    code = (NOT_LEADER if isinstance(e, StoreFenced) else
                            UNAVAILABLE if isinstance(e, StoreUnavailable) else BAD_REQUEST)
                    self._answer(w, error=CubeError(code, str(e)))
            return
        for w in live:
            self._answer(w, {"applied": len(w.ops)})

    def _answer(self, w: PendingWrite, body: dict[str, Any] | None = None, error: CubeError | None = None) -> None:
        if w.request.respond:
            w.request.respond(body, error=error)

    # ---- reads: see every write received before them -------------------------------------------
    @handles(msg.GET)
    def on_get(self, m: Envelope) -> dict[str, Any]:
        self.flush()
        with _store_errors():
            value = self.store.get(m.body["ns"], m.body["key"])
        if value is None:
            raise CubeError(NOT_FOUND, f"no {m.body['key']!r} in {m.body['ns']!r}")
        return {"value": value}

    @handles(msg.LIST)
    def on_list(self, m: Envelope) -> dict[str, Any]:
        """One page of a namespace, so a large one never outgrows a frame; `more` says go on."""
        self.flush()
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

    @handles(msg.COUNT)
    def on_count(self, m: Envelope) -> dict[str, Any]:
        self.flush()
        with _store_errors():
            return {"count": self.store.count(m.body["ns"])}

    def on_stop(self) -> None:
        self.flush()
        self.store.close()


def _in_time(m: Envelope) -> None:
    """Refuse a write whose deadline has passed, before the backend is touched.

    Its client has stopped waiting by then (e.g. this process was frozen with the request queued)
    and reported the write as failed, or is about to re-read what was applied: applying it now
    would make the Store hold what its client believes was never written.
    """
    deadline = m.body.get("deadline")
    if deadline is not None:
        late = time.monotonic() - deadline  # the same clock as write_deadline's
        if late > 0:  # (the refusal is logged with the other refusals)
            raise CubeError(UNAVAILABLE, f"{m.type} expired {late:.2f}s before the store got to it: "
                                         f"the write was not applied")


class _store_errors:
    """Turn backend errors into `bad_request` replies instead of crashing the actor."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if isinstance(err, (StoreUnavailable, StoreInDoubt)):  # etcd: try again later
            raise CubeError(UNAVAILABLE, str(err)) from None
        if err is not None and isinstance(err, StoreError):
            raise CubeError(BAD_REQUEST, str(err)) from None
        return False


def run_store(endpoint: str, kind: str, path: str, etcd: str = "", etcd_tls: Any = None) -> None:
    """Process entry point."""
    actor = StoreActor(open_store(kind, path, etcd, etcd_tls), endpoint)
    hook.attach(actor)
    actor.run()
