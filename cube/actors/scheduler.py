"""The Scheduler actor: places tasks on nodes from the live metrics stream.

Workers publish samples to its bound SUB socket; it keeps the latest per node (ClusterView) and
answers `sched.place` from memory: feasibility -> score -> pick, never sampling inside a decision.
"""
from __future__ import annotations

import logging
from typing import Any

from cube.messages import node as node_msg
from cube.messages import sched as msg
from cube.scheduling import ClusterView, Demand, make_scheduler
from cube.wire import sockets
from cube.wire.actor import Actor
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, CubeError

log = logging.getLogger(__name__)


class SchedulerActor(Actor):
    def __init__(self, endpoint: str, metrics_bind: str, algorithm: str = "epvm",
                 stale_after: float = 5.0, name: str = "scheduler"):
        super().__init__(name)
        self.algorithm = make_scheduler(algorithm)  # fail fast on an unknown name
        self.view = ClusterView(stale_after=stale_after)
        self.sock = sockets.router(self.loop.ctx, endpoint)
        self.metrics = sockets.subscriber(self.loop.ctx, bind=metrics_bind, topics=(node_msg.METRICS.encode(),))
        self.serve(self.sock, accept=msg.ALL)
        self.serve(self.metrics, accept={node_msg.METRICS}, replies=False)

    def on_node_metrics(self, m: Envelope) -> None:
        try:
            self.view.update(m.body)
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            self.stats["bad_samples"] += 1
            log.warning("scheduler: bad metrics sample from %s: %s", m.body.get("name"), e)

    def on_sched_place(self, m: Envelope) -> dict[str, Any]:
        b = m.body
        try:
            demand = Demand(float(b["cpu"]), int(b["memory"]), int(b["disk"]))
        except ValueError as e:
            raise CubeError(BAD_REQUEST, f"sched.place: {e}") from None
        exclude = set(b.get("exclude") or ())
        if b.get("only") is not None:  # metrics alone do not make a worker: only registered ones
            only = set(b["only"])
            exclude |= {s.name for s in self.view.nodes() if s.name not in only}
        placement = self.view.place(b["task_id"], demand, self.algorithm, exclude=exclude)
        if placement.node:
            log.info("scheduler: %s -> %s (%s)", b["task_id"][:8], placement.node, placement.reason)
        return {"node": placement.node, "reason": placement.reason,
                "scores": placement.scores or {}}

    def on_sched_release(self, m: Envelope) -> dict[str, Any]:
        return {"released": self.view.release(m.body["task_id"])}

    def on_sched_nodes(self, m: Envelope) -> dict[str, Any]:
        return {"nodes": self.view.describe(), "algorithm": self.algorithm.name}

    def run(self) -> None:
        self.loop.run()


def run_scheduler(endpoint: str, metrics_bind: str, algorithm: str, stale_after: float) -> None:
    """Process entry point."""
    SchedulerActor(endpoint, metrics_bind, algorithm, stale_after).run()
