"""Plain value types shared by the view and the algorithms.

Nothing here knows about sockets or numpy: a `Demand` is what a task asks for, a `NodeSample` is
one decoded metrics message from a worker, a `NodeState` is what the view believes about one node
right now, and a `Placement` is the answer to "where should this task go?".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Lieb's square-ice constant; the book's E-PVM uses it as the base of its cost exponentials.
LIEB = 1.53960071783900203869
#: The book's E-PVM "maxJobs": the task-count term is LIEB ** (tasks / MAX_JOBS).
MAX_JOBS = 4.0
#: The book divides cpu usage by 2**0.8 before using it (greedy's score, E-PVM's cpuLoad).
BOOK_CPU_DIVISOR = 2 ** 0.8
#: Slack for the cpu fit test: 0.1 + 0.2 cores reserved must still leave room for 0.7 on 1.0.
CPU_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """What a task asks for: cores (float), bytes of memory and disk, and fixed host ports
    ("8081/tcp"), which a node has or has not free (docs/architecture.md, "Ports")."""

    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    ports: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not (self.cpu >= 0 and self.memory >= 0 and self.disk >= 0):  # also rejects NaN
            raise ValueError(f"demand must not be negative: {self}")

    @classmethod
    def of(cls, task: Mapping[str, Any]) -> "Demand":
        """Build from any mapping with optional `cpu`, `memory`, `disk` keys (a task dict) and
        `fixed_ports` (a list of "8081/tcp")."""
        return cls(float(task.get("cpu") or 0.0), int(task.get("memory") or 0),
                   int(task.get("disk") or 0), port_set(task.get("fixed_ports")))

    def covers(self, other: "Demand") -> bool:
        """Asks for at least all that `other` asks for: where `other` fits nowhere, neither does this."""
        return (self.cpu >= other.cpu and self.memory >= other.memory and self.disk >= other.disk
                and self.ports >= other.ports)


MAX_PORTS = 65536 * 2  # every tcp and udp port: a longer list is not a list of ports


def port_set(value: Any) -> frozenset[str]:
    """A set of "8081/tcp" strings from a message (anything else in it is a bad message)."""
    if not value:
        return frozenset()
    if not isinstance(value, (list, tuple, set, frozenset)) or len(value) > MAX_PORTS:
        raise ValueError("ports must be a list of strings such as 8081/tcp")
    if not all(isinstance(p, str) and len(p) <= 16 for p in value):
        raise ValueError("ports must be a list of strings such as 8081/tcp")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of one decision.

    `node` is None when the task fits nowhere; `reason` then says why in words meant for the
    user (it becomes the Pending task's reason). On success `reason` names the algorithm and
    how many candidates it weighed. `scores` maps candidate name to score (lowest won) when
    asked for, or automatically for small candidate sets; None otherwise, because building a
    dict of 1,000 floats would cost more than the decision itself.
    """

    node: str | None
    reason: str
    scores: dict[str, float] | None = None

    @property
    def placed(self) -> bool:
        return self.node is not None


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One worker metrics message, typed. Unknown keys are ignored, missing numbers are 0."""

    name: str
    address: str = ""
    ts: float = 0.0
    seq: int = 0
    cpus: float = 0.0
    memory: int = 0
    disk: int = 0
    cpu_usage: float = 0.0
    memory_total: int = 0
    memory_available: int = 0
    memory_used: int = 0
    memory_percent: float = 0.0
    disk_total: int = 0
    disk_free: int = 0
    disk_used: int = 0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    task_count: int = 0
    reserved_cpu: float = 0.0
    reserved_memory: int = 0
    reserved_disk: int = 0
    task_ids: frozenset[str] = field(default_factory=frozenset)
    # Host ports taken on the node: listening there (anything, Cube's or not) or held by its
    # tasks' fixed ports (reserved, so a container still starting counts too).
    ports: frozenset[str] = field(default_factory=frozenset)
    # Seconds between this node's samples (0: not said); the Manager slows them in a large
    # cluster (docs/architecture.md, "Pace"), so a node is stale only after missing a few.
    interval: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NodeSample":
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("metrics sample without a node name")
        res = d.get("reserved") or {}
        la = tuple(float(x) for x in (d.get("load_avg") or (0.0, 0.0, 0.0)))[:3]

        def f(key: str, src: Mapping[str, Any] = d) -> float:
            v = float(src.get(key) or 0.0)
            return v if math.isfinite(v) else 0.0

        def i(key: str, src: Mapping[str, Any] = d) -> int:
            v = int(src.get(key) or 0)
            if not -(2**63) <= v < 2**63:  # the node table is int64: refuse before touching it
                raise ValueError(f"metrics field {key!r} out of range: {v}")
            return v

        return cls(
            name=name, address=str(d.get("address") or ""), ts=f("ts"), seq=i("seq"),
            cpus=max(f("cpus"), 0.0), memory=max(i("memory"), 0), disk=max(i("disk"), 0),
            cpu_usage=min(max(f("cpu_usage"), 0.0), 1.0),
            memory_total=i("memory_total"), memory_available=i("memory_available"),
            memory_used=i("memory_used"), memory_percent=f("memory_percent"),
            disk_total=i("disk_total"), disk_free=i("disk_free"), disk_used=i("disk_used"),
            load_avg=(la + (0.0, 0.0, 0.0))[:3],  # type: ignore[arg-type]
            task_count=i("task_count"),
            reserved_cpu=f("cpu", res), reserved_memory=i("memory", res),
            reserved_disk=i("disk", res),
            task_ids=frozenset(d.get("task_ids") or ()),
            ports=port_set(d.get("ports_in_use")) | port_set(res.get("ports")),
            interval=min(max(f("interval"), 0.0), MAX_INTERVAL),
        )


MAX_INTERVAL = 60.0  # seconds between samples a node may claim (cube/wire/link.py's MAX_PACE)
STALE_SAMPLES = 3  # samples a node may miss before it is stale, when they come seldom


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the view believes about one node at a given moment (effective = sample + ledger)."""

    name: str
    address: str
    alive: bool
    age: float  # seconds since the last accepted sample arrived (receiver's clock)
    cpus: float
    memory: int
    disk: int
    reserved_cpu: float  # effective: sample.reserved + pending reservations
    reserved_memory: int
    reserved_disk: int
    cpu_usage: float
    memory_used: int
    memory_total: int
    task_count: int  # effective: sample.task_count + pending reservations
    pending: tuple[str, ...]  # task ids reserved here and not yet listed by a sample

    @property
    def free_cpu(self) -> float:
        return self.cpus - self.reserved_cpu

    @property
    def free_memory(self) -> int:
        return self.memory - self.reserved_memory

    @property
    def free_disk(self) -> int:
        return self.disk - self.reserved_disk


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; used in reasons people read."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
