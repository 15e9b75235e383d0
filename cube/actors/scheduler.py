"""The Scheduler actor: places tasks on nodes from the live metrics stream.

Workers publish samples to its bound SUB socket; it keeps the latest per node (ClusterView) and
answers `sched.place` from memory: feasibility -> score -> pick, never sampling inside a decision.
"""
from __future__ import annotations

import logging
from typing import Any

from cube.chaos import hook
from cube.messages import node as node_msg
from cube.messages import sched as msg
from cube.scheduling import ClusterView, Demand, make_scheduler
from cube.wire import sockets
from cube.wire.actor import Actor, handles
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

    @handles(node_msg.METRICS)
    def on_metrics(self, m: Envelope) -> None:
        try:
            self.view.update(m.body)
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            self.stats["bad_samples"] += 1
            log.warning("scheduler: bad metrics sample from %s: %s", m.body.get("name"), e)

    @handles(msg.PLACE)
    def on_place(self, m: Envelope) -> dict[str, Any]:
        b = m.body
        placement = self._place(b["task_id"], b, self._excluded(b))
        return {"node": placement.node, "reason": placement.reason, "scores": placement.scores or {}}

    @handles(msg.PLACE_MANY)
    def on_place_many(self, m: Envelope) -> dict[str, Any]:
        """Many decisions in one round trip, in order, each seeing the reservations before it.

        Once a demand fits nowhere, no later demand at least as large is tried (it cannot fit
        either): a long queue of big tasks costs one decision, not one per task."""
        exclude = self._excluded(m.body)
        items = []
        for item in m.body["tasks"]:  # all checked before any is placed: a refusal reserves nothing
            if not isinstance(item, dict) or not isinstance(item.get("task_id"), str):
                raise CubeError(BAD_REQUEST, "sched.place_many: every task needs a task_id")
            items.append((item, _demand(item)))
        refused: list[tuple[Demand, str]] = []
        out = []
        for item, demand in items:
            known = next((why for d, why in refused if demand.cpu >= d.cpu and demand.memory >= d.memory
                          and demand.disk >= d.disk), None)
            if known is not None:
                out.append({"task_id": item["task_id"], "node": None, "reason": known})
                continue
            placement = self._place(item["task_id"], item, exclude)
            if placement.node is None:
                refused.append((demand, placement.reason))
            out.append({"task_id": item["task_id"], "node": placement.node, "reason": placement.reason})
        return {"placements": out}

    def _excluded(self, b: dict[str, Any]) -> set[str]:
        exclude = set(b.get("exclude") or ())
        if b.get("only") is not None:  # metrics alone do not make a worker: only registered ones
            only = set(b["only"])
            exclude |= self.view.names() - only
        return exclude

    def _place(self, task_id: str, b: dict[str, Any], exclude: set[str]):
        placement = self.view.place(task_id, _demand(b), self.algorithm, exclude=exclude)
        if placement.node:
            log.debug("scheduler: %s -> %s (%s)", task_id[:8], placement.node, placement.reason)
        return placement

    @handles(msg.RELEASE)
    def on_release(self, m: Envelope) -> dict[str, Any]:
        return {"released": self.view.release(m.body["task_id"])}

    @handles(msg.NODES)
    def on_nodes(self, m: Envelope) -> dict[str, Any]:
        return {"nodes": self.view.describe(), "algorithm": self.algorithm.name}


def _demand(b: dict[str, Any]) -> Demand:
    try:
        return Demand(float(b["cpu"]), int(b["memory"]), int(b["disk"]))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise CubeError(BAD_REQUEST, f"sched.place: bad demand: {e}") from None


def run_scheduler(endpoint: str, metrics_bind: str, algorithm: str, stale_after: float) -> None:
    """Process entry point."""
    actor = SchedulerActor(endpoint, metrics_bind, algorithm, stale_after)
    hook.attach(actor)
    actor.stop_on_signals()
    actor.run()
