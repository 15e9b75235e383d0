"""The Manager's side of the election (docs/ha.md): one place that says whether it may act.

With the etcd store every manager campaigns (cube/ha/election.py). A follower answers
`manager.ping` and refuses everything else with `not_leader` naming the leader's address on the
socket asked (its API for clients, its workers socket for workers), so clients and workers go
there. The leader loads the cluster from the Store when it is elected, and from then on places,
commands workers and runs health checks. A leader that loses its lease stops at once: the process
exits and its supervisor starts a fresh Manager, a follower (nothing half-led survives).

Without etcd (LevelDB, memory) there is one manager: it always leads, term 0.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from cube.config import ManagerConfig
from cube.ha.election import LEADER_KEY, Election, ElectionThread, Leader
from cube.wire.errors import NOT_LEADER, CubeError

log = logging.getLogger(__name__)

ALWAYS = {"manager.ping"}  # answered by every manager, leader or not
DEPOSED_EXIT = 75  # the Manager process's exit status when it stops leading (its supervisor restarts it)


class Leadership:
    def __init__(self, loop: Any, config: ManagerConfig, on_elected: Callable[[int], None],
                 exit: Callable[[int], None] = os._exit):
        self.loop = loop
        self.config = config
        self.on_elected = on_elected
        self.exit = exit
        self.election: Election | None = None
        self.thread: ElectionThread | None = None
        self.term = 0
        if config.ha:
            from cube.store.etcd import PREFIX, Etcd
            host = config.advertised_host
            me = Leader(f"{host}:{config.api_port}", f"{host}:{config.api_port}", f"{host}:{config.worker_port}")
            etcd = Etcd(config.etcd, timeout=max(0.5, config.lease_ttl / 3), tls=config.etcd_tls)
            self.election = Election(etcd, (PREFIX + LEADER_KEY).encode(), me, config.lease_ttl)
            interval = min(0.5, self.election.ttl / 4)
            self.thread = ElectionThread(self.election, interval,
                                         lambda: loop.call_soon_threadsafe(self._changed))

    @property
    def ha(self) -> bool:
        return self.election is not None

    def start(self) -> None:
        """Campaign (HA), or lead at once (a single manager)."""
        if self.thread is None:
            self.on_elected(0)
        else:
            self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop(resign=True)

    def leading(self) -> bool:
        """May this manager act now (place, command workers, write)? Checked against the clock,
        so a leader paused past its lease knows it before it does anything (fencing). A lapse is
        final: an elected manager whose lease may be gone steps down at once, even if a late
        keepalive answer would make the lease look good again (what it skipped meanwhile, it
        would not redo)."""
        if self.election is None:
            return True
        if self.term == 0:
            return False
        if not self.election.leading():
            self._deposed("its lease could not be kept alive")
            return False
        return True

    def check(self, workers: bool, msg_type: str, readable: bool = False) -> None:
        """The gate in front of every request (Manager.admit): only the leader serves, but for
        `readable` requests, which a follower answers from the Store (cube/manager/reads.py)."""
        if self.election is None or msg_type in ALWAYS or readable:
            return
        if self.term and self.election.leading():
            return
        if self.term:  # elected, but our lease may be gone: stop now, not at the next round
            self._deposed("its lease could not be kept alive")
        raise CubeError(NOT_LEADER, self.not_leader_message(workers))

    def not_leader_message(self, workers: bool) -> str:
        leader = self.election.leader if self.election else None
        # (a key naming this manager's own address is a previous run's, whose lease will expire)
        if leader is None or not leader.api or leader.term == self.term or leader.api == self.election.me.api:
            return "not leader: no leader elected yet; retry in a moment"
        return f"not leader: the leader is {leader.workers if workers else leader.api}"

    def view(self) -> dict[str, Any]:
        """For manager.ping: this manager's role, and who leads."""
        if self.election is None:
            return {"role": "leader", "term": 0}
        leader = self.election.leader
        lead = self.leading()
        named = leader.api if leader and (lead or leader.api != self.election.me.api) else ""
        return {"role": "leader" if lead else "follower", "term": leader.term if leader else 0, "leader": named}

    def _changed(self) -> None:
        e = self.election
        if e is None:
            return
        if e.deposed:  # also a win whose notice came after its lease lapsed: never half-elected
            if self.term:
                self._deposed(e.deposed)
            else:
                log.error("manager: the election ended (%s); exiting so a fresh follower campaigns", e.deposed)
                self.exit(DEPOSED_EXIT)
        elif e.term and not self.term and e.leading():
            self.term = e.term
            log.warning("manager: elected leader, term %d; taking over the cluster", self.term)
            self.on_elected(self.term)
        elif e.leader is not None and not self.term:
            log.info("manager: following %s (term %d)", e.leader.name, e.leader.term)

    def _deposed(self, why: str) -> None:
        log.error("manager: no longer the leader (term %d): %s; exiting so a fresh follower starts", self.term, why)
        self.exit(DEPOSED_EXIT)
