"""Cube's pure scheduling package: no sockets, no I/O.

The Scheduler actor owns one `ClusterView`, feeds it every decoded metrics sample
(`view.update(sample)`), and answers each placement request with one call::

    placement = view.place(task_id, Demand(cpu, memory, disk), algorithm="epvm",
                           exclude={"w2"})
    if placement.node is None:
        ...  # the task stays Pending; placement.reason says why, for the user

`place()` runs feasibility -> score -> pick and reserves the winner in the view's ledger, so the
next decision (before the node's next sample) already sees the space as taken. Call
`view.release(task_id)` if the placement is abandoned, `view.forget(node)` when a worker is
removed. See view.py for the ledger and liveness rules and algorithms.py for the formulas.
"""
from .algorithms import (ALGORITHMS, DEFAULT_ALGORITHM, Algorithm, Epvm, EpvmBook, Greedy,
                         RoundRobin, feasible, make_scheduler, unplaceable)
from .model import LIEB, MAX_JOBS, Demand, NodeSample, NodeState, Placement
from .view import ClusterView, NodeTable

__all__ = [
    "ALGORITHMS", "DEFAULT_ALGORITHM", "Algorithm", "ClusterView", "Demand", "Epvm",
    "EpvmBook", "Greedy", "LIEB", "MAX_JOBS", "NodeSample", "NodeState", "NodeTable",
    "Placement", "RoundRobin", "feasible", "make_scheduler", "unplaceable",
]
