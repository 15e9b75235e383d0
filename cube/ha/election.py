"""Leader election on an etcd lease (docs/ha.md, "Election and fencing").

Every manager holds a lease of `ttl` seconds, kept alive every `interval`, and tries to create
the leader key `<prefix>leader` bound to it (a transaction: create only if absent). The one that
created it leads; its **term** is the key's create revision, which grows with every new leader.
When the leader dies its lease expires, etcd deletes the key, and the next attempt of another
manager creates it.

Fencing: a leader trusts its lease only until `ttl - margin` after the last keepalive it *sent*
that etcd answered; etcd cannot expire the lease before `ttl` after receiving it, so the leader
stops leading (`leading(now)` turns false) strictly before another can be elected. A keepalive
that finds the lease gone, or the key held by another lease, deposes it at once. Deposition is
final for this object (the manager process exits and starts again as a follower).

The logic (`step`) is blocking and single-threaded, with the clock injected, so it is tested
with a fake etcd and a fake clock; `ElectionThread` runs it in the background. Every request it
makes is safe to repeat (a keepalive, a create-if-absent it recognizes as its own, a grant whose
lease, if unused, expires), so each goes on to the next etcd member when one does not answer.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from cube.store.base import StoreError
from cube.store.etcd import b64, unb64

log = logging.getLogger(__name__)

LEADER_KEY = "leader"  # under the store's prefix, outside every namespace (those contain NUL)


class EtcdCalls(Protocol):
    def call(self, path: str, body: dict[str, Any], write: bool = False) -> dict[str, Any]: ...


@dataclass
class Leader:
    """Who leads, as written in the leader key: its name and addresses, and its term."""
    name: str
    api: str  # host:port of its API socket
    workers: str  # host:port of its workers socket
    term: int = 0

    def value(self) -> bytes:
        return json.dumps({"name": self.name, "api": self.api, "workers": self.workers}).encode()

    @classmethod
    def parse(cls, raw: bytes, term: int) -> "Leader":
        try:
            d = json.loads(raw)
            return cls(str(d["name"]), str(d["api"]), str(d["workers"]), term)
        except (ValueError, KeyError, TypeError):
            return cls("?", "", "", term)


class Election:
    def __init__(self, etcd: EtcdCalls, key: bytes, me: Leader, ttl: float,
                 clock: Callable[[], float] = time.monotonic, margin: float | None = None):
        self.etcd = etcd
        self.key = key
        self.me = me
        self.ttl = max(1, math.ceil(ttl))  # etcd leases count whole seconds
        self.margin = max(0.25 * self.ttl, 0.5) if margin is None else margin
        self.clock = clock
        self.lease = 0  # our lease id (0: none)
        self.alive_at = -math.inf  # when we sent the last keepalive (or grant) etcd answered
        self.term = 0  # our term while we lead
        self.leader: Leader | None = None  # who leads, as last seen
        self.deposed = ""  # why we stopped leading (final)

    # ---- what the manager asks --------------------------------------------------------------
    def leading(self, now: float | None = None) -> bool:
        """True while we lead and our lease cannot have expired yet (see the module's docstring)."""
        now = self.clock() if now is None else now
        return bool(self.term) and not self.deposed and now < self.alive_at + self.ttl - self.margin

    # ---- one round: keep our lease, then lead or try to ------------------------------------------
    def step(self) -> None:
        if self.deposed:
            return
        try:
            self._keep_lease()
            self._campaign()
        except StoreError as e:  # etcd unreachable or in doubt: try again next round
            log.warning("election: %s", e)
        if self.term and not self.leading():
            self._depose(f"no keepalive answered for {self.ttl - self.margin:.1f}s")

    def _keep_lease(self) -> None:
        sent = self.clock()
        if self.lease:
            reply = self.etcd.call("/lease/keepalive", {"ID": self.lease}, write=False)
            ttl = int((reply.get("result") or {}).get("TTL") or -1)
            if ttl > 0:
                self.alive_at = sent
                return
            if self.term:
                self._depose("our lease expired")
                return
            self.lease = 0  # a follower's lease lapsed (it was paused): take a new one
        reply = self.etcd.call("/lease/grant", {"TTL": self.ttl, "ID": 0}, write=False)
        self.lease, self.alive_at = int(reply["ID"]), sent

    def _campaign(self) -> None:
        """Read the leader key (a linearizable read, no entry in etcd's log); only when it is
        absent, try to create it (a transaction, which etcd writes to its log on a majority):
        each manager asks several times a second, and only a change of leader should cost a write."""
        if self.deposed or not self.lease:
            return
        key = b64(self.key)
        held = self.etcd.call("/kv/range", {"key": key}, write=False).get("kvs") or []
        if held:
            self._held(held[0])
            return
        if self.term:  # our key is gone while we lead (deleted by hand?): never lead on under a new term
            self._depose("the leader key disappeared")
            return
        txn = {"compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
               "success": [{"request_put": {"key": key, "value": b64(self.me.value()), "lease": self.lease}}],
               "failure": [{"request_range": {"key": key}}]}
        reply = self.etcd.call("/kv/txn", txn, write=False)
        if reply.get("succeeded"):
            self._won(int(reply["header"]["revision"]))
            return
        kvs = ((reply.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        if kvs:  # (else gone between the compare and now: next round)
            self._held(kvs[0])

    def _held(self, kv: dict[str, Any]) -> None:
        """The leader key as etcd holds it: ours (we lead), or another's (we follow it)."""
        term, lease = int(kv.get("create_revision") or 0), int(kv.get("lease") or 0)
        if lease == self.lease:  # ours (our earlier attempt was applied, its answer lost)
            self._won(term)
            return
        if self.term:
            self._depose(f"the leader key is held by another manager (term {term})")
        self.leader = Leader.parse(unb64(kv.get("value", "")), term)

    def _won(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.leader = Leader(self.me.name, self.me.api, self.me.workers, term)
            log.info("election: %s leads, term %d (lease %x, ttl %ds)", self.me.name, term, self.lease, self.ttl)

    def _depose(self, why: str) -> None:
        if not self.deposed:
            self.deposed = why
            log.warning("election: %s no longer leads (term %d): %s", self.me.name, self.term, why)

    def resign(self) -> None:
        """On a clean stop: give the lease back, so another manager leads at once."""
        if self.lease:
            try:
                self.etcd.call("/kv/lease/revoke", {"ID": self.lease}, write=False)
            except StoreError as e:
                log.warning("election: could not give the lease back: %s", e)
        self.deposed = self.deposed or "resigned"


class ElectionThread:
    """Runs `election.step()` every `interval` seconds off the actor's loop, and tells the loop
    (`notify()` through call_soon_threadsafe) after every round in which something changed."""

    def __init__(self, election: Election, interval: float, notify: Callable[[], None], follow: float = 0.2):
        self.election = election
        self.interval = interval  # a leader's keepalives
        self.follow = min(follow, interval)  # a follower's attempts: it takes over this soon after the lease expired
        self.notify = notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        e = self.election
        seen: tuple[Any, ...] = ()
        while not self._stop.is_set():
            try:
                e.step()
            except Exception:  # an odd reply must not end the campaign silently: a failed round
                log.exception("election: a round failed; trying again")
            now = (e.term, e.deposed, e.leader)
            if now != seen:
                seen = now
                self.notify()
            if e.deposed:
                return
            self._stop.wait(self.interval if e.term else self.follow)

    def stop(self, resign: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval + 3)
        if resign:
            self.election.resign()
