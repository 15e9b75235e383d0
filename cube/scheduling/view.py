"""ClusterView: the scheduler's picture of the cluster, fed by the metrics stream.

Why a view and not "ask the nodes": the book samples every node's CPU twice, 3 s apart, inside
each placement. Cube's Scheduler actor instead feeds every decoded metrics sample to `update()`
as it arrives and decides from what it already knows, in microseconds.

Two sources make up what a node has left:

* the latest **sample** (kept per node name): capacity offered to Cube, observed usage, and
  `reserved` = the sum of what the node's Cube tasks asked for, with their ids in `task_ids`;
* the **ledger** of reservations made here since then (`reserve()`, done by `place()`): a task
  just placed is not in any sample yet, so without the ledger a burst of placements between two
  samples would all see the same free space and pile onto one node.

Effective reserved = sample.reserved + ledger entries whose task id the sample does not list.
An entry leaves the ledger when a later sample *from the node it was reserved on* lists its task
id (the sample's `reserved` now counts it: no double counting), when `release(task_id)` is
called (the manager gave up on that placement or the task ended), or after `reservation_timeout`
seconds (default 30: the task never showed up, e.g. it finished between two samples or the start
was lost). A sample from a different node listing the id does not drop it: that is usually the
old node still reporting a task being moved away.

Ordering of samples (`update`): a sample whose `seq` is not above the held one is a duplicate or
arrived late and is ignored, unless its `ts` (the sender's clock) is later than the held sample's
`ts`: then the worker restarted and its counter started again, so the sample is accepted and its
`ts` becomes a floor; any later sample stamped before that floor belongs to the previous
incarnation and is ignored even though its seq looks newer.

Liveness uses the receiver's clock (`now`, default `time.monotonic()`): a node is alive while
`now - arrival of its last accepted sample <= max(stale_after, 3 x the sample's interval)`
(stale_after: default 5 s, the heartbeat grace; the interval grows in a large cluster).
Only accepted samples refresh it: a replayed old sample proves nothing about now.

Speed: per-node numbers live in numpy columns that are updated in place, one slot per node,
when a sample arrives or a reservation changes; a decision is a handful of vectorised
operations over them (see algorithms.py). The LIEB powers that depend only on the node are
cached there too, so epvm computes just the "after this task" powers per decision. Slots are
kept dense (forget() moves the last node into the hole), so no decision skips empty slots.
The view is not thread-safe: the Scheduler actor owns it and calls it from one thread.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Mapping

import numpy as np

from .model import (BOOK_CPU_DIVISOR, LIEB, MAX_JOBS, STALE_SAMPLES, Demand, NodeSample, NodeState,
                    Placement)

if TYPE_CHECKING:
    from .algorithms import Algorithm

_MAX_EXPONENT = 1000.0  # LIEB ** 1000 ~ 1e187: no real node gets near it, and it is still finite


def _lieb(exponent: float) -> float:
    """LIEB ** exponent with the exponent capped, so a sample claiming absurd load or task counts
    cannot raise OverflowError (float ** 1e18 does). Capped powers would score such a node as
    free (up == down), so `_refresh` also keeps it out of placement."""
    return LIEB ** min(exponent, _MAX_EXPONENT)

#: Column name -> dtype. Memory and disk stay int64 so the fit test is exact in bytes.
_COLUMNS: dict[str, Any] = {
    "arrival": np.float64,      # receiver's clock when the last accepted sample arrived
    "stale_limit": np.float64,  # seconds after arrival the node turns stale (_stale_limit)
    "cpus": np.float64,         # cores offered to Cube
    "memory": np.int64,         # bytes offered
    "disk": np.int64,
    "free_cpu": np.float64,     # offered - effective reserved (may go negative: over-committed)
    "free_memory": np.int64,
    "free_disk": np.int64,
    "cpu_usage": np.float64,    # observed fraction 0..1 of the whole machine
    "tasks": np.float64,        # effective task count: sample.task_count + pending reservations
    "load": np.float64,         # cpu busy share, see _refresh
    "mem": np.float64,          # memory busy share, see _refresh
    "inv_cpus": np.float64,     # 1 / cpus, or 0 when the node offers no cpu
    "inv_memory": np.float64,   # 1 / memory, or 0
    # LIEB powers that depend only on the node, computed once per change instead of once per
    # decision (epvm's cost: only the "after the task" powers depend on the task).
    "lieb_load": np.float64,    # LIEB ** load
    "lieb_mem": np.float64,     # LIEB ** mem
    "lieb_up": np.float64,      # LIEB ** ((tasks + 1) / MAX_JOBS)
    "lieb_down": np.float64,    # LIEB ** (tasks / MAX_JOBS)
    "book_mem_alloc": np.float64,  # epvm-book: memory_used kB + reserved / 1000
    "book_node_memory": np.float64,  # epvm-book: memory_total kB (at least 1)
    "lieb_book_cpu": np.float64,  # LIEB ** (cpu_usage / 2**0.8)
    "lieb_book_mem": np.float64,  # LIEB ** (book_mem_alloc / book_node_memory)
}


@dataclass(slots=True)
class NodeTable:
    """Columnar snapshot the algorithms work on: index i is the same node in every column.

    The columns are views into the ClusterView's arrays: valid until the view changes next, and
    never to be written by an algorithm. `alive` is computed for the `now` the table was asked
    for. `rank[i]` is node i's position in name order (for stable tie-breaking and round-robin).
    """

    names: list[str]
    index: dict[str, int]
    sorted_names: list[str]
    rank: np.ndarray
    alive: np.ndarray
    now: float
    stale_after: float
    arrival: np.ndarray
    stale_limit: np.ndarray
    cpus: np.ndarray
    memory: np.ndarray
    disk: np.ndarray
    free_cpu: np.ndarray
    free_memory: np.ndarray
    free_disk: np.ndarray
    cpu_usage: np.ndarray
    tasks: np.ndarray
    load: np.ndarray
    mem: np.ndarray
    inv_cpus: np.ndarray
    inv_memory: np.ndarray
    lieb_load: np.ndarray
    lieb_mem: np.ndarray
    lieb_up: np.ndarray
    lieb_down: np.ndarray
    book_mem_alloc: np.ndarray
    book_node_memory: np.ndarray
    lieb_book_cpu: np.ndarray
    lieb_book_mem: np.ndarray
    # Host ports taken per node (sample + pending reservations) and the node's address, by the
    # same index as the columns; lists, not columns: only tasks with fixed host ports look.
    held_ports: list[frozenset[str]] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    sharing: dict[str, set[int]] = field(default_factory=dict)  # address -> the nodes advertising it

    @property
    def n(self) -> int:
        return len(self.names)

    def ports_free(self, i: int, ports: frozenset[str]) -> bool:
        """Whether none of `ports` is taken for node i. Ports belong to an address, not to a
        worker: workers advertising one address (several on one host) publish on the same ports,
        so what one holds or has reserved is taken for all of them, at once."""
        address = self.addresses[i]
        group = self.sharing.get(address, ()) if address else ()
        return all(ports.isdisjoint(self.held_ports[j]) for j in (group or (i,)))

    def port_taken(self, i: int, port: str) -> bool:
        """Whether `port` is taken for node i (see ports_free)."""
        return not self.ports_free(i, frozenset((port,)))


@dataclass(slots=True)
class _Reservation:
    node: str
    task_id: str
    demand: Demand
    expires: float


@dataclass(slots=True)
class _Node:
    name: str
    slot: int
    sample: NodeSample
    arrival: float
    floor_ts: float = float("-inf")  # samples stamped before this are from an older incarnation
    ledger: dict[str, _Reservation] = field(default_factory=dict)


class ClusterView:
    """Latest sample per node + reservation ledger, with place() to decide and reserve at once."""

    def __init__(self, stale_after: float = 5.0, reservation_timeout: float = 30.0,
                 clock=time.monotonic) -> None:
        self.stale_after = float(stale_after)
        self.reservation_timeout = float(reservation_timeout)
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._names: list[str] = []  # slot -> name
        self._held: list[frozenset[str]] = []  # slot -> host ports taken (see NodeTable.held_ports)
        self._addresses: list[str] = []  # slot -> the node's advertised address
        self._sharing: dict[str, set[int]] = {}  # address -> slots advertising it
        self._reservations: dict[str, _Reservation] = {}
        self._expiry: deque[_Reservation] = deque()  # in reservation order (clock is monotonic)
        self._cap = 0
        self._cols: dict[str, np.ndarray] = {}
        self._grow(16)
        self._table: NodeTable | None = None  # rebuilt when membership changes
        self._algorithms: dict[str, Algorithm] = {}

    # ------------------------------------------------------------------ samples and membership
    def update(self, sample: Mapping[str, Any] | NodeSample, now: float | None = None) -> bool:
        """Store a node's metrics sample; returns False when it was ignored as old/duplicate."""
        s = sample if isinstance(sample, NodeSample) else NodeSample.from_dict(sample)
        now = self._now(now)
        node = self._nodes.get(s.name)
        if node is None:
            node = _Node(s.name, len(self._names), s, now)
            self._nodes[s.name] = node
            if node.slot == self._cap:
                self._grow(self._cap * 2)
            self._names.append(s.name)
            self._held.append(frozenset())
            self._addresses.append("")
            self._table = None
        else:
            held = node.sample
            if s.ts < node.floor_ts:
                return False  # from before the worker's last restart
            if s.seq <= held.seq:
                if not s.ts > held.ts:
                    return False  # duplicate or late
                node.floor_ts = s.ts  # counter went back and clock went forward: a restart
            node.sample, node.arrival = s, now
            for task_id in [t for t in node.ledger if t in s.task_ids]:
                self._drop(node.ledger[task_id])
        self._refresh(node)
        return True

    def forget(self, name: str) -> bool:
        """Drop a node and its pending reservations (the manager decided it is gone)."""
        node = self._nodes.pop(name, None)
        if node is None:
            return False
        for r in list(node.ledger.values()):
            self._reservations.pop(r.task_id, None)
        last = len(self._names) - 1
        if node.slot != last:  # keep slots dense: move the last node into the hole
            moved = self._nodes[self._names[last]]
            for col in self._cols.values():
                col[node.slot] = col[last]
            moved.slot = node.slot
            self._names[node.slot] = moved.name
            self._held[node.slot] = self._held[last]
            moved_address = self._addresses[last]
            self._share(node.slot, "")
            self._share(last, "")
            self._share(node.slot, moved_address)
        else:
            self._share(node.slot, "")
        self._names.pop()
        self._held.pop()
        self._addresses.pop()
        self._table = None
        return True

    # ------------------------------------------------------------------ reservations
    def reserve(self, node: str, task_id: str, demand: Demand, now: float | None = None) -> bool:
        """Record a placement made since the node's last sample.

        A task already reserved elsewhere is moved (one task, one reservation). Returns False
        (and records nothing) when the node's latest sample already lists the task: its
        `reserved` counts it already. Raises KeyError for a node the view does not know.
        """
        n = self._nodes.get(node)
        if n is None:
            raise KeyError(f"unknown node {node!r}")
        now = self._now(now)
        self.release(task_id)
        if task_id in n.sample.task_ids:
            return False
        r = _Reservation(node, task_id, demand, now + self.reservation_timeout)
        n.ledger[task_id] = r
        self._reservations[task_id] = r
        self._expiry.append(r)
        self._refresh(n)
        return True

    def release(self, task_id: str) -> bool:
        """Forget the reservation for a task (placement abandoned, or the task ended)."""
        r = self._reservations.get(task_id)
        if r is None:
            return False
        self._drop(r)
        return True

    def reservations(self, node: str | None = None) -> dict[str, Demand]:
        """Pending reservations (task id -> demand), for one node or all."""
        return {t: r.demand for t, r in self._reservations.items()
                if node is None or r.node == node}

    def _drop(self, r: _Reservation) -> None:
        if self._reservations.get(r.task_id) is r:
            del self._reservations[r.task_id]
        node = self._nodes.get(r.node)
        if node is not None and node.ledger.get(r.task_id) is r:
            del node.ledger[r.task_id]
            self._refresh(node)

    def _expire(self, now: float) -> None:
        q = self._expiry
        while q and (q[0].expires <= now or self._reservations.get(q[0].task_id) is not q[0]):
            self._drop(q.popleft())

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def table(self, now: float | None = None) -> NodeTable:
        """The columnar snapshot for the algorithms, with `alive` computed for `now`."""
        now = self._now(now)
        self._expire(now)
        t = self._table
        if t is None:
            t = self._table = self._build_table()
        t.alive = (now - t.arrival) <= t.stale_limit  # same expression as NodeState.alive
        t.now = now
        return t

    def names(self) -> set[str]:
        """Names of every node with a sample (cheap: no state is computed)."""
        return set(self._nodes)

    def nodes(self, now: float | None = None) -> list[NodeState]:
        """Every known node's effective state, in name order."""
        now = self._now(now)
        self._expire(now)
        return [self._state(self._nodes[name], now) for name in sorted(self._nodes)]

    def get(self, name: str, now: float | None = None) -> NodeState | None:
        node = self._nodes.get(name)
        if node is None:
            return None
        now = self._now(now)
        self._expire(now)
        return self._state(node, now)

    def alive(self, now: float | None = None) -> list[str]:
        """Names of live nodes, in name order."""
        return [s.name for s in self.nodes(now) if s.alive]

    def describe(self, now: float | None = None) -> list[dict[str, Any]]:
        """One plain row per node for `cube node ls` and friends (JSON-friendly).

        `reserved` and `task_ids` are the latest sample's, as the worker reported them (no
        ledger): what the worker itself holds, which the chaos invariant worker-slots compares
        with the manager's tasks (docs/chaos.md)."""
        rows = []
        for s in self.nodes(now):
            sample = self._nodes[s.name].sample  # as the worker reported it, without the ledger
            rows.append({
                "name": s.name, "address": s.address,
                "state": "alive" if s.alive else "stale", "age": round(s.age, 3),
                "cpus": s.cpus, "cpu_free": round(s.free_cpu, 6), "cpu_usage": s.cpu_usage,
                "memory": s.memory, "memory_free": s.free_memory,
                "memory_used": s.memory_used, "memory_total": s.memory_total,
                "disk": s.disk, "disk_free": s.free_disk,
                "tasks": s.task_count, "pending": len(s.pending),
                "reserved": {"cpu": sample.reserved_cpu, "memory": sample.reserved_memory,
                             "disk": sample.reserved_disk},
                "task_ids": sorted(sample.task_ids),
                "ports": sorted(sample.ports),  # host ports taken there (listening, or a task's)
            })
        return rows

    # ------------------------------------------------------------------ deciding
    def place(self, task_id: str, demand: Demand, algorithm: "str | Algorithm" = "epvm",
              exclude: Collection[str] = (), now: float | None = None, *,
              with_scores: bool | None = None) -> Placement:
        """Feasibility -> score -> pick, and reserve the winner for `task_id`: one call.

        Returns a Placement whose `node` is None (with a reason) when the task fits nowhere;
        nothing is reserved then. On success the ledger already holds the reservation; call
        `release(task_id)` if the placement is abandoned (e.g. the worker refused it).
        """
        now = self._now(now)
        algo = self._algorithm(algorithm)
        p = algo.decide(self.table(now), demand, exclude, with_scores=with_scores)
        if p.node is not None:
            self.reserve(p.node, task_id, demand, now)
            algo.commit(p.node)
        return p

    def decide(self, demand: Demand, algorithm: "str | Algorithm" = "epvm",
               exclude: Collection[str] = (), now: float | None = None, *,
               with_scores: bool | None = None) -> Placement:
        """Like place() but a dry run: reserves nothing and does not advance round-robin."""
        algo = self._algorithm(algorithm)
        return algo.decide(self.table(now), demand, exclude, with_scores=with_scores)

    def _algorithm(self, algorithm: "str | Algorithm") -> "Algorithm":
        if not isinstance(algorithm, str):
            return algorithm
        algo = self._algorithms.get(algorithm)
        if algo is None:  # one instance per name, so round-robin keeps its turn across calls
            from .algorithms import make_scheduler
            algo = self._algorithms[algorithm] = make_scheduler(algorithm)
        return algo

    # ------------------------------------------------------------------ internals
    def _share(self, slot: int, address: str) -> None:
        """Move `slot` to `address` in the index of nodes sharing an address ("" = none)."""
        old = self._addresses[slot]
        if old and old in self._sharing:
            self._sharing[old].discard(slot)
            if not self._sharing[old]:
                del self._sharing[old]
        self._addresses[slot] = address
        if address:
            self._sharing.setdefault(address, set()).add(slot)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else float(now)

    def _grow(self, cap: int) -> None:
        for name, dtype in _COLUMNS.items():
            new = np.zeros(cap, dtype=dtype)
            old = self._cols.get(name)
            if old is not None:
                new[: len(old)] = old
            self._cols[name] = new
        self._cap = cap
        self._table = None

    def _build_table(self) -> NodeTable:
        n = len(self._names)
        order = sorted(range(n), key=self._names.__getitem__)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        cols = {k: v[:n] for k, v in self._cols.items()}
        index = {nm: i for i, nm in enumerate(self._names)}
        return NodeTable(names=list(self._names), index=index,
                         sorted_names=[self._names[i] for i in order], rank=rank,
                         alive=np.zeros(n, dtype=bool), now=0.0, stale_after=self.stale_after,
                         held_ports=self._held, addresses=self._addresses, sharing=self._sharing, **cols)

    def _refresh(self, node: _Node) -> None:
        """Recompute one node's columns from its sample and ledger.

        load and mem are "how busy is this node" shares used by epvm: the larger of what the
        machine shows (cpu_usage; memory_used / memory_total) and what Cube's running tasks asked
        for (sample.reserved / offered), plus what was reserved since the sample (those tasks are
        in neither number yet). Taking the max means a node whose tasks are idle still counts as
        promised, and a node busy with other work still counts as busy.
        """
        s, i, c = node.sample, node.slot, self._cols
        led_cpu = sum(r.demand.cpu for r in node.ledger.values())
        led_mem = sum(r.demand.memory for r in node.ledger.values())
        led_disk = sum(r.demand.disk for r in node.ledger.values())
        led_ports = [r.demand.ports for r in node.ledger.values() if r.demand.ports]
        self._held[i] = s.ports.union(*led_ports) if led_ports else s.ports
        if self._addresses[i] != s.address:
            self._share(i, s.address)
        inv_cpus = 1.0 / s.cpus if s.cpus > 0 else 0.0
        inv_mem = 1.0 / s.memory if s.memory > 0 else 0.0
        used_share = s.memory_used / s.memory_total if s.memory_total > 0 else 0.0
        c["arrival"][i] = node.arrival
        c["stale_limit"][i] = self._stale_limit(s)
        c["cpus"][i] = s.cpus
        c["memory"][i] = s.memory
        c["disk"][i] = s.disk
        c["free_cpu"][i] = s.cpus - (s.reserved_cpu + led_cpu)
        c["free_memory"][i] = s.memory - (s.reserved_memory + led_mem)
        c["free_disk"][i] = s.disk - (s.reserved_disk + led_disk)
        c["cpu_usage"][i] = s.cpu_usage
        tasks = s.task_count + len(node.ledger)
        load = max(s.cpu_usage, s.reserved_cpu * inv_cpus) + led_cpu * inv_cpus
        mem = max(used_share, s.reserved_memory * inv_mem) + led_mem * inv_mem
        c["tasks"][i] = tasks
        c["load"][i] = load
        c["mem"][i] = mem
        c["inv_cpus"][i] = inv_cpus
        c["inv_memory"][i] = inv_mem
        c["lieb_load"][i] = _lieb(load)
        c["lieb_mem"][i] = _lieb(mem)
        c["lieb_up"][i] = _lieb((tasks + 1) / MAX_JOBS)
        c["lieb_down"][i] = _lieb(tasks / MAX_JOBS)
        book_alloc = s.memory_used / 1024 + (s.reserved_memory + led_mem) / 1000
        book_memory = max(s.memory_total / 1024, 1.0)  # guard a node reporting 0
        c["book_mem_alloc"][i] = book_alloc
        c["book_node_memory"][i] = book_memory
        c["lieb_book_cpu"][i] = _lieb(s.cpu_usage / BOOK_CPU_DIVISOR)
        c["lieb_book_mem"][i] = _lieb(book_alloc / book_memory)
        if not all(x <= _MAX_EXPONENT for x in (load, mem, (tasks + 1) / MAX_JOBS, book_alloc / book_memory)):
            c["arrival"][i] = -np.inf  # absurd or NaN numbers: treated as stale, never a candidate

    def _stale_limit(self, s: NodeSample) -> float:
        """A node is stale `stale_after` seconds after its last sample, or after STALE_SAMPLES
        missed ones when it samples more seldom (a large cluster's pace)."""
        return max(self.stale_after, STALE_SAMPLES * s.interval)

    def _state(self, node: _Node, now: float) -> NodeState:
        s, led = node.sample, node.ledger.values()
        return NodeState(
            name=node.name, address=s.address, alive=now - node.arrival <= self._stale_limit(s),
            age=now - node.arrival, cpus=s.cpus, memory=s.memory, disk=s.disk,
            reserved_cpu=s.reserved_cpu + sum(r.demand.cpu for r in led),
            reserved_memory=s.reserved_memory + sum(r.demand.memory for r in led),
            reserved_disk=s.reserved_disk + sum(r.demand.disk for r in led),
            cpu_usage=s.cpu_usage, memory_used=s.memory_used, memory_total=s.memory_total,
            task_count=s.task_count + len(node.ledger), pending=tuple(sorted(node.ledger)))
