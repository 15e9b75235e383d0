"""The cluster's event log: numbering, persisting, publishing, replaying and pruning events.

The ZeroMQ Guide's Clone pattern (docs/architecture.md, "The event log"): every change of a
task, a service or a node is an event with one cluster-wide sequence number, stored in the
Store's `eventlog` namespace under that number, and published on the events PUB socket only once
stored (persist, adopt, publish). A client replays stored events with `events.since` and follows
the live ones; the numbers tell it what it missed.

- Numbers are handed out once each, in memory, and never reused: a refused write leaves a gap.
  They survive a manager restart: the highest stored number is read back at start-up (the
  `meta/event_seq` hint, then the log's keys after it, since concurrent writes may land out of
  order). The hint only shortens that scan: it goes with the first event of each loop turn (the
  AsyncStore's flush), not with every event, and with every prune batch (set to the last number
  handed out), so a number whose key was pruned is never below it.
- A task's event is written in the same Store batch as the task (`ops`); a node's or a
  service's goes with the change it records where there is one (`record(..., ops=)`); the
  AsyncStore sends every batch of a loop turn as one request, so no event costs a round trip.
- The log is bounded by count (`kept`) and by age (`max_age`, the manager's --retention):
  `prune` deletes its oldest entries, a chunk at a time, on a timer.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cube.manager.storage import AsyncStore
from cube.messages.events import HEARTBEAT, MAX_PAGE, matches
from cube.store.base import Op
from cube.wire.errors import CubeError

log = logging.getLogger(__name__)

LOG, META, SEQ_KEY = "eventlog", "meta", "event_seq"
KEPT = 100_000  # events kept at most (cube-manager --events-kept)
PRUNE_CHUNK = 1000  # keys deleted in one batch: a small transaction on etcd too (docs/ha.md, --max-txn-ops)
MAX_GAPS = 1000  # missing numbers a replay page names at most

Publish = Callable[[str, dict[str, Any]], None]  # (topic / message type, body)
Done = Callable[[Any, CubeError | None], None]


def key(seq: int) -> str:
    """Keys sort as numbers do."""
    return f"{seq:012d}"


class EventLog:
    def __init__(self, store: AsyncStore, publish: Publish | None = None, kept: int = KEPT,
                 max_age: float = 24 * 3600.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.send = publish or (lambda topic, body: None)
        self.kept = max(1, kept)
        self.max_age = max_age
        self.clock = clock
        self.seq = 0  # the last number handed out
        self.published = 0  # the highest number published
        self.first = 1  # the oldest number that may still be stored (lower ones are pruned)
        self.first_time: float | None = None  # its time, once read (None: not known)
        self._pruning = False
        # One hint per loop turn: the batches of a turn go to the Store as one request (storage.py).
        self._loop = getattr(getattr(store, "actor", None), "loop", None)  # None (a test's store): every event
        self._hinted = False  # this turn's batches carry the hint already

    # ---- start-up -----------------------------------------------------------------------------------
    def load(self, done: Callable[[int | None, CubeError | None], None]) -> None:
        """The highest stored number and the oldest, read back after a restart."""
        def got_hint(hint: Any, error: CubeError | None) -> None:
            if error is not None:
                done(None, error)
                return
            self.seq = max(self.seq, int(hint or 0))
            self.store.list_page(LOG, beyond, after=key(self.seq))

        def beyond(body: Any, error: CubeError | None) -> None:  # written after the hint: out of order
            if error is not None:
                done(None, error)
                return
            items = body["items"]
            if items:
                self.seq = max(self.seq, int(items[-1][0]))
                if body.get("more"):
                    self.store.list_page(LOG, beyond, after=items[-1][0])
                    return
            self.published = self.seq
            self.store.list_page(LOG, oldest, limit=1)

        def oldest(body: Any, error: CubeError | None) -> None:
            if error is not None:
                done(None, error)
                return
            if body["items"]:
                k, v = body["items"][0]
                self.first, self.first_time = int(k), float(v.get("time") or 0)
            else:
                self.first, self.first_time = self.seq + 1, None
            done(self.seq, None)
        self.store.get(META, SEQ_KEY, got_hint)

    # ---- writing -------------------------------------------------------------------------------------
    def number(self, event: dict[str, Any]) -> dict[str, Any]:
        """Give `event` the next number (once: a write refused later leaves a gap, never a repeat)."""
        self.seq += 1
        event["seq"] = self.seq
        event.setdefault("time", self.clock())
        return event

    def ops(self, event: dict[str, Any]) -> list[Op]:
        """The writes that store a numbered event: to go in the batch of the change it records.
        The first event of a loop turn carries the `meta/event_seq` hint; the others are found
        after it by the start-up scan."""
        ops: list[Op] = [("put", LOG, key(event["seq"]), event)]
        if not self._hinted:
            ops.append(("put", META, SEQ_KEY, event["seq"]))
            if self._loop is not None:
                self._hinted = True
                self._loop.call_later(0, self._next_turn)
        return ops

    def _next_turn(self) -> None:
        self._hinted = False

    def record(self, event: dict[str, Any], topic: str, ops: list[Op] | None = None,
               done: Done | None = None) -> dict[str, Any]:
        """Number `event`, store it with `ops` (one batch), then publish it on `topic`; `done`
        gets (event, None) once stored and published, or (None, error)."""
        self.number(event)

        def written(_: Any, error: CubeError | None) -> None:
            if error is None:
                self.publish(topic, event)
            if done is not None:
                done(None if error else event, error)
        self.store.batch([*(ops or []), *self.ops(event)], written)
        return event

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        """Send a stored event (its `seq` at least) to the subscribers."""
        self.published = max(self.published, int(body.get("seq") or 0))
        self.send(topic, body)

    def heartbeat(self, started: float) -> None:
        """Followers learn the latest number (a lost tail shows) and that the manager is there."""
        self.send(HEARTBEAT, {"seq": self.published, "time": self.clock(), "started": started})

    # ---- reading ---------------------------------------------------------------------------------------
    def read(self, after: int, done: Callable[[dict[str, Any] | None, CubeError | None], None],
             until: int | None = None, limit: int = MAX_PAGE, filters: dict[str, list[str]] | None = None) -> None:
        """One page of stored events with after < seq <= until, oldest first, filtered:
        `{events, next, more, gaps}`; `next` is the last number looked at (pass it back as
        `after`); `gaps` the numbers in the range looked at that the Store does not hold (a write
        refused, or not stored yet), above the ones pruned."""
        limit = max(1, min(limit, MAX_PAGE))
        floor = max(after, self.first - 1)  # numbers below `first` were pruned: not gaps

        def got(body: Any, error: CubeError | None) -> None:
            if error is not None:
                done(None, error)
                return
            out, gaps, last, more = [], [], after, bool(body.get("more"))
            prev = floor
            for k, ev in body["items"]:
                seq = int(k)
                if until is not None and seq > until:
                    more = False
                    break
                gaps.extend(range(prev + 1, min(seq, prev + 1 + MAX_GAPS - len(gaps))))
                last = prev = seq
                if not filters or matches(ev, filters):
                    out.append(ev)
            if until is not None and (last >= until or not more):
                gaps.extend(range(max(prev, until - MAX_GAPS) + 1, until + 1)[:MAX_GAPS - len(gaps)])
                last, more = max(last, until), False  # the range was read to its end
            done({"events": out, "next": last, "more": more, "gaps": gaps}, None)
        self.store.list_page(LOG, got, after=key(max(0, after)), limit=limit)

    def seek(self, when: float, done: Callable[[int | None, CubeError | None], None]) -> None:
        """The number to read after for the events at `when` or later: a bisection over the
        stored numbers, one small read a step (about 17 for 100,000 events). Stored events below
        `lo` are older than `when`; those from `hi` on are not."""
        lo, hi = self.first, self.seq + 1

        def step() -> None:
            if lo >= hi:
                done(lo - 1, None)
                return
            mid = (lo + hi) // 2
            self.store.list_page(LOG, lambda body, error: judged(mid, body, error), after=key(mid - 1), limit=1)

        def judged(mid: int, body: Any, error: CubeError | None) -> None:
            nonlocal lo, hi
            if error is not None:
                done(None, error)
                return
            found = int(body["items"][0][0]) if body["items"] else None
            if found is None or found >= hi:  # nothing stored in [mid, hi)
                hi = mid
            elif float(body["items"][0][1].get("time") or 0) < when:
                lo = found + 1
            else:
                hi = found
            step()
        step()

    # ---- retention ---------------------------------------------------------------------------------------
    def prune(self) -> None:
        """Delete the oldest events beyond `kept` or older than `max_age`, a chunk at a time
        (the next chunk as soon as one is done, so a burst of events cannot outrun it)."""
        if self._pruning:
            return
        beyond_count = self.seq - self.kept  # numbers up to this one go (a gap makes it a little eager)
        if self.first <= beyond_count:
            self._delete(self.first, min(beyond_count, self.first + PRUNE_CHUNK - 1), None)
            return
        horizon = self.clock() - self.max_age
        if self.first > self.seq or (self.first_time is not None and self.first_time >= horizon):
            return
        self._pruning = True
        upper = self.seq

        def got(body: Any, error: CubeError | None) -> None:
            self._pruning = False
            if error is not None:
                return
            old: list[int] = []
            newer = None  # (seq, time) of the first event to keep
            for k, ev in body["items"]:
                t = float(ev.get("time") or 0)
                if t >= horizon:  # times follow numbers: the rest are newer still
                    newer = (int(k), t)
                    break
                old.append(int(k))
            if not old:
                self.first, self.first_time = newer if newer is not None else (upper + 1, None)
            else:
                self._delete(self.first, old[-1], newer[1] if newer is not None else None)
        self.store.list_page(LOG, got, after=key(self.first - 1), limit=PRUNE_CHUNK)

    def _delete(self, first: int, last: int, next_time: float | None) -> None:
        self._pruning = True

        def written(_: Any, error: CubeError | None) -> None:
            self._pruning = False
            if error is not None:
                log.warning("events: could not prune events %d..%d: %s", first, last, error)
                return
            self.first, self.first_time = max(self.first, last + 1), next_time
            log.debug("events: pruned events %d..%d", first, last)
            self.prune()
        # The hint goes with the deletes: a restart never hands out a number whose key is gone.
        hint: list[Op] = [("put", META, SEQ_KEY, max(self.seq, last))]
        self.store.batch([("delete", LOG, key(s), None) for s in range(first, last + 1)] + hint, written)
