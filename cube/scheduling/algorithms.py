"""Placement algorithms: feasibility -> score -> pick, the book's three-step interface.

Every algorithm works on a `NodeTable` (columns of per-node numbers, see view.py) and an array
of candidate indices, so a decision is a few numpy operations over the candidates rather than a
Python loop over nodes. The lowest score wins in all of them; ties go to the first name in
alphabetical order, so decisions are reproducible.

Feasibility (shared): the node is alive, not excluded, and for each resource the task asks for,
`demand <= offered - effective reserved` (an exact fit is allowed; cpu gets a 1e-9 core slack so
float sums such as 0.1 + 0.2 do not refuse an exact fit). A resource the task does not ask for
(0) is not checked, so a zero demand fits any live node, even an over-committed one. A task's
fixed host ports must all be free on the node's address: not listening there and not held by
another task placed or running on a worker of that address (NodeTable.ports_free).

Algorithms (`ALGORITHMS`, `make_scheduler(name)`):

roundrobin
    Feasible nodes taken in turn by name: the first name after the last node this instance
    placed on (wrapping around) scores 0.1, the rest 1.0 (the book's scores). The turn is kept
    by name, not index, so nodes joining or leaving do not reset or skip it.

greedy
    score = cpu_usage / 2**0.8. The book's divisor is kept so scores read like the book's; it is
    a constant factor and never changes the order. Greedy only sees the last sample: a burst
    of placements between two samples all lands on the same idle node (as in the book). That is
    why epvm is the default.

epvm-book
    The book's formula, kept only for comparison, with its units (MOSIX opportunity cost,
    LIEB = 1.53960071783900203869, maxJobs = 4, n = task count)::

        cpuLoad   = cpu_usage / 2**0.8
        memAlloc  = memory_used / 1024          (kB "from stats")
                    + reserved_memory / 1000    (the book's Node.MemoryAllocated, never filled in
                                                 the book; here the effective reservations)
        memPct    = memAlloc / (memory_total / 1024)   (the book's Node.Memory: total kB;
                                                    taken as at least 1 kB)
        newMemPct = (memAlloc + task.memory // 1000) / (memory_total / 1024)
        memCost   = LIEB**newMemPct + LIEB**((n+1)/4) - LIEB**memPct - LIEB**(n/4)
        cpuCost   = LIEB**cpuLoad + LIEB**((n+1)/4) - LIEB**cpuLoad - LIEB**(n/4)
        score     = memCost + cpuCost

    cpuCost cancels to the task-count term: the task's cpu never matters, and bytes, kB and
    "÷1000" are mixed in the memory term.

epvm (default)
    The same opportunity-cost shape, one unit (shares of what the node offers, from bytes and
    cores) and the task's own cpu counted. With n = effective task count (sample + pending
    reservations) and, per node, the "busy" shares the view keeps (view._refresh)::

        load    = max(cpu_usage, sample.reserved.cpu / cpus)        + pending cpu / cpus
        mem     = max(memory_used / memory_total,
                      sample.reserved.memory / memory)              + pending memory / memory
        newLoad = load + task.cpu / cpus
        newMem  = mem  + task.memory / memory
        memCost = LIEB**newMem  + LIEB**((n+1)/4) - LIEB**mem  - LIEB**(n/4)
        cpuCost = LIEB**newLoad + LIEB**((n+1)/4) - LIEB**load - LIEB**(n/4)
        score   = memCost + cpuCost

    The max() sees a node as full if either the machine is busy or Cube has promised its
    capacity; pending reservations are added on top because they are in neither number yet, so
    a burst spreads out before the next sample arrives. Memory is bytes over bytes throughout.
    cpu_usage is a fraction of the whole machine while the other cpu terms are shares of the
    cores offered to Cube: the sample carries no machine core count, and both read as "how
    busy, 0..1". (x / 0 is taken as 0: a node offering no cpu only takes tasks asking none.)

Speed: no candidate sampling. Scoring every feasible node is exact (the best node is always
found, which a Nomad-style bounded sample of log2(n) nodes cannot promise) and, vectorised, costs
tens of microseconds at 1,000 nodes; bench/placement.py measures it.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Callable, Collection

import numpy as np

from .model import BOOK_CPU_DIVISOR, CPU_EPSILON, LIEB, Demand, Placement, human_bytes
from .view import NodeTable

#: Placements carry a scores dict automatically when there are at most this many candidates.
SCORES_AUTO_LIMIT = 32


def feasible(t: NodeTable, demand: Demand, exclude: Collection[str] = ()) -> np.ndarray:
    """Indices of nodes that are alive, not excluded and have room for `demand`."""
    ok = t.alive & (t.free_cpu >= demand.cpu - CPU_EPSILON) if demand.cpu > 0 else t.alive.copy()
    if demand.memory > 0:
        ok &= t.free_memory >= demand.memory
    if demand.disk > 0:
        ok &= t.free_disk >= demand.disk
    for name in exclude:
        i = t.index.get(name)
        if i is not None:
            ok[i] = False
    if demand.ports:  # rare, and a set test per remaining node (and the nodes sharing its address)
        for i in np.flatnonzero(ok).tolist():
            if not t.ports_free(i, demand.ports):
                ok[i] = False
    return np.flatnonzero(ok)


class Algorithm:
    """Base: feasibility is shared; subclasses define score(); pick() takes the lowest."""

    name = "base"

    def candidates(self, t: NodeTable, demand: Demand,
                   exclude: Collection[str] = ()) -> np.ndarray:
        return feasible(t, demand, exclude)

    def score(self, t: NodeTable, demand: Demand, candidates: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pick(self, t: NodeTable, scores: np.ndarray, candidates: np.ndarray) -> int | None:
        """Position (in `candidates`) of the lowest score; ties go to the first name."""
        if len(candidates) == 0:
            return None
        k = int(np.argmin(scores))
        tied = np.flatnonzero(scores == scores[k])
        if len(tied) == 1:
            return k
        return int(tied[np.argmin(t.rank[candidates[tied]])])

    def commit(self, node: str) -> None:
        """Told after a placement on `node` was reserved (round-robin advances its turn)."""

    def decide(self, t: NodeTable, demand: Demand, exclude: Collection[str] = (), *,
               with_scores: bool | None = None) -> Placement:
        """Run the three steps; reserves nothing (ClusterView.place does that)."""
        cand = self.candidates(t, demand, exclude)
        if len(cand) == 0:
            return Placement(None, unplaceable(t, demand, exclude))
        scores = self.score(t, demand, cand)
        k = self.pick(t, scores, cand)
        assert k is not None
        table = None
        if with_scores or (with_scores is None and len(cand) <= SCORES_AUTO_LIMIT):
            table = {t.names[j]: s for j, s in zip(cand.tolist(), scores.tolist())}
        reason = f"{self.name}: lowest score {scores[k]:.6g} of {len(cand)} candidate(s)"
        return Placement(t.names[int(cand[k])], reason, table)


class RoundRobin(Algorithm):
    name = "roundrobin"

    def __init__(self) -> None:
        self.last: str | None = None

    def score(self, t: NodeTable, demand: Demand, candidates: np.ndarray) -> np.ndarray:
        rank = t.rank[candidates]
        if self.last is not None:  # names at or before the last one come after the wrap
            rank = np.where(rank >= bisect_right(t.sorted_names, self.last), rank, rank + t.n)
        scores = np.full(len(candidates), 1.0)
        scores[np.argmin(rank)] = 0.1
        return scores

    def commit(self, node: str) -> None:
        self.last = node


def _take(t: NodeTable, candidates: np.ndarray, *columns: str) -> list[np.ndarray]:
    """The candidates' values of some columns; no copy when every node is a candidate."""
    if len(candidates) == t.n:  # candidates are sorted indices, so this means all of them
        return [getattr(t, name) for name in columns]
    return [getattr(t, name)[candidates] for name in columns]


class Greedy(Algorithm):
    name = "greedy"

    def score(self, t: NodeTable, demand: Demand, candidates: np.ndarray) -> np.ndarray:
        (usage,) = _take(t, candidates, "cpu_usage")
        return usage / BOOK_CPU_DIVISOR


class Epvm(Algorithm):
    name = "epvm"

    def score(self, t: NodeTable, demand: Demand, candidates: np.ndarray) -> np.ndarray:
        up, down, mem, inv_memory, lieb_mem, load, inv_cpus, lieb_load = _take(
            t, candidates, "lieb_up", "lieb_down", "mem", "inv_memory", "lieb_mem", "load",
            "inv_cpus", "lieb_load")
        # LIEB**mem, LIEB**load and the task-count powers are cached per node by the view
        mem_cost = np.power(LIEB, mem + demand.memory * inv_memory) + up - lieb_mem - down
        if demand.cpu > 0:
            cpu_cost = np.power(LIEB, load + demand.cpu * inv_cpus) + up - lieb_load - down
        else:  # newLoad == load: the same numbers without the pow
            cpu_cost = lieb_load + up - lieb_load - down
        return mem_cost + cpu_cost


class EpvmBook(Algorithm):
    name = "epvm-book"

    def score(self, t: NodeTable, demand: Demand, candidates: np.ndarray) -> np.ndarray:
        up, down, alloc, node_memory, lieb_mem_pct, lieb_cpu = _take(
            t, candidates, "lieb_up", "lieb_down", "book_mem_alloc", "book_node_memory",
            "lieb_book_mem", "lieb_book_cpu")
        new_mem_pct = (alloc + float(demand.memory // 1000)) / node_memory
        mem_cost = np.power(LIEB, new_mem_pct) + up - lieb_mem_pct - down
        cpu_cost = lieb_cpu + up - lieb_cpu - down  # cancels, as in the book
        return mem_cost + cpu_cost


ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "roundrobin": RoundRobin,
    "greedy": Greedy,
    "epvm": Epvm,
    "epvm-book": EpvmBook,
}
DEFAULT_ALGORITHM = "epvm"


def make_scheduler(name: str = DEFAULT_ALGORITHM) -> Algorithm:
    """A fresh algorithm instance by name (round-robin instances keep their own turn)."""
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; choose one of "
                         f"{', '.join(ALGORITHMS)}") from None


# ---------------------------------------------------------------------- unplaceable reasons
def _cpu(x: float) -> str:
    if not abs(x) < 1e15:  # huge, inf or NaN (a demand of 1e308 cores): round() would raise
        return f"{x:.3g}"
    return f"{x:.1f}" if abs(x * 10 - round(x * 10)) < 1e-9 else f"{x:.3g}"


_RESOURCES = (  # label, demand attribute, free column, formatter
    ("cpu", "cpu", "free_cpu", _cpu),
    ("memory", "memory", "free_memory", human_bytes),
    ("disk", "disk", "free_disk", human_bytes),
)


def _amount(label: str, fmt: Callable[[float], str], x: float) -> str:
    return f"{fmt(x)} {label}" if label == "cpu" else f"{fmt(x)} of {label}"


def unplaceable(t: NodeTable, demand: Demand, exclude: Collection[str] = ()) -> str:
    """Why nothing fits, in words for the user; names the binding resource.

    Examples: "no live worker"; "no worker has 4.0 cpu free; largest free is 1.5 on w2";
    "no worker has 2.0 cpu and 1.0 GiB of memory free at once; most cpu free: 3.0 on w1 (with
    512.0 MiB of memory); most memory free: 4.0 GiB on w2 (with 1.0 cpu)".
    """
    stale = int(t.n - np.count_nonzero(t.alive))
    if stale == t.n:
        if not stale:
            return "no live worker"
        quiet = float(np.min(t.stale_limit))  # every one silent at least this long (its own limit or more)
        return f"no live worker ({stale} known, none heard from in the last {quiet:g} s)"
    live = t.alive.copy()
    excluded = sorted(n for n in set(exclude) if n in t.index and live[t.index[n]])
    for name in excluded:
        live[t.index[name]] = False
    notes = []
    if excluded:
        notes.append(f"excluded: {', '.join(excluded)}")
    if stale:
        notes.append(f"{stale} stale worker{'s' if stale > 1 else ''} not counted")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    if not live.any():
        return "no live worker outside the excluded" + suffix
    if demand.ports:
        held = _port_holders(t, demand.ports, live)
        for i in {i for holders in held.values() for i in holders}:
            live[i] = False
        taken = "; ".join(f"host port {port} is in use on {_names(t, holders)}"
                          for port, holders in sorted(held.items()) if holders)
        if not live.any():
            plural = "s" if len(demand.ports) > 1 else ""
            return f"no worker has host port{plural} {_list(sorted(demand.ports))} free: {taken}{suffix}"
        if taken:
            notes.insert(0, taken)
            suffix = f" ({'; '.join(notes)})"
    idx = np.flatnonzero(live)
    order = idx[np.argsort(t.rank[idx], kind="stable")]  # name order, for stable ties

    def most(col: str) -> int:
        values = getattr(t, col)[order]
        return int(order[int(np.argmax(values))])

    asked = [(label, getattr(demand, attr), col, fmt) for label, attr, col, fmt in _RESOURCES
             if getattr(demand, attr) > 0]
    lacking = []  # (shortfall ratio, label, want, largest free, node)
    for label, want, col, fmt in asked:
        j = most(col)
        largest = max(float(getattr(t, col)[j]), 0.0)
        slack = CPU_EPSILON if label == "cpu" else 0
        if largest < want - slack:
            ratio = want / largest if largest > 0 else float("inf")
            lacking.append((ratio, label, want, largest, t.names[j], fmt))
    if lacking:  # the resource most out of reach binds
        _, label, want, largest, node, fmt = max(lacking, key=lambda x: x[0])
        return (f"no worker has {_amount(label, fmt, want)} free; largest free is "
                f"{fmt(largest)} on {node}{suffix}")
    if not asked:  # cannot happen: a zero demand fits any live, non-excluded node
        return "no worker fits" + suffix
    wants = [_amount(label, fmt, want) for label, want, _, fmt in asked]
    said = " and ".join([", ".join(wants[:-1]), wants[-1]] if len(wants) > 1 else wants)
    parts = []
    for label, _, col, fmt in asked:
        j = most(col)
        others = ", ".join(_amount(lb, f, max(float(getattr(t, c)[j]), 0.0))
                           for lb, _, c, f in asked if lb != label)
        parts.append(f"most {label} free: {fmt(max(float(getattr(t, col)[j]), 0.0))} on "
                     f"{t.names[j]} (with {others})")
    return f"no worker has {said} free at once; {'; '.join(parts)}{suffix}"


def _port_holders(t: NodeTable, ports: frozenset[str], live: np.ndarray) -> dict[str, list[int]]:
    """Per asked host port, the live nodes where it is taken."""
    return {port: [i for i in np.flatnonzero(live).tolist() if t.port_taken(i, port)] for port in ports}


def _names(t: NodeTable, indices: list[int], most: int = 5) -> str:
    names = sorted(t.names[i] for i in indices)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
