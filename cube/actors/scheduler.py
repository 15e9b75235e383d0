"""The Scheduler actor: places tasks on nodes from the live metrics stream.

Workers publish samples to its bound SUB socket; it keeps the latest per node (ClusterView) and
answers `sched.place` from memory: feasibility -> score -> pick, never sampling inside a decision.

With security on (docs/security.md) the metrics socket is a CURVE server holding the manager's
key: only joined workers' keys complete the handshake (the keyring, which the manager writes),
and a sample counts for the worker its key is bound to, whatever name its body claims.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from cube.chaos import hook
from cube.security import curve as zcurve
from cube.security import keys
from cube.security.keyring import FILE as KEYRING_FILE
from cube.security.keyring import Keyring
from cube.security.zap import Gate, HandshakeCounter
from cube.messages import node as node_msg
from cube.messages import sched as msg
from cube.scheduling import ClusterView, Demand, make_scheduler
from cube.scheduling.model import port_set
from cube.wire import sockets
from cube.wire.actor import Actor, handles
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, CubeError

log = logging.getLogger(__name__)
MAX_CLOCK_AHEAD = 5.0  # seconds a sample may be dated in our future (clock skew) before it is dropped


class SchedulerActor(Actor):
    def __init__(self, endpoint: str, metrics_bind: str, algorithm: str = "epvm",
                 stale_after: float = 5.0, name: str = "scheduler", data_dir: str = ""):
        """`data_dir`: the manager's, whose keypair and keyring secure the metrics socket; ""
        means no security (loopback tests)."""
        super().__init__(name)
        self.algorithm = make_scheduler(algorithm)  # fail fast on an unknown name
        self.view = ClusterView(stale_after=stale_after)
        self.sock = sockets.router(self.loop.ctx, endpoint)
        self.keyring: Keyring | None = None
        self.gate: Gate | None = None
        server = None
        if data_dir:
            self.keyring = Keyring(os.path.join(data_dir, KEYRING_FILE))
            self.gate = Gate(self.loop.ctx, {zcurve.METRICS: self._may_publish})
            server = zcurve.CurveServer(keys.load_or_create(data_dir, "manager"), zcurve.METRICS)
        self.metrics = sockets.subscriber(self.loop.ctx, bind=metrics_bind, topics=(node_msg.METRICS.encode(),),
                                          curve=server)
        if server is not None:
            HandshakeCounter(self.loop, self.metrics, "metrics", self.stats)
        self.serve(self.sock, accept=msg.ALL)
        self.serve(self.metrics, accept={node_msg.METRICS}, replies=False, authenticated=server is not None)

    def _may_publish(self, key: str) -> bool:
        """ZAP (on its own thread): a joined worker's key; a worker that just joined is in the
        file the manager wrote a moment ago, so read it again first."""
        self.keyring.reload()
        return self.keyring.is_worker(key)

    def on_start(self) -> None:
        if self.keyring is not None:
            self.loop.call_every(1.0, self.keyring.reload)  # joins and removals by the manager

    def on_stop(self) -> None:
        if self.gate is not None:
            self.gate.stop()

    @handles(node_msg.METRICS)
    def on_metrics(self, m: Envelope) -> None:
        if m.body["ts"] > time.time() + MAX_CLOCK_AHEAD:  # would stay "fresh" for ever
            self.stats["samples_from_future"] += 1
            self._throttled.warning("future", "scheduler: dropped a sample from %s dated %.0fs ahead",
                                    m.body.get("name"), m.body["ts"] - time.time())
            return
        if self.keyring is not None:
            name = self.keyring.worker_for(m.peer)
            if name is None:  # joined once, removed since (its connection outlived its key)
                self.stats["samples_unknown_key"] += 1
                return
            m.body["name"] = name  # who the key is, not what the body says
            m.body["address"] = self.keyring.addresses.get(name) or m.body["address"]
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

        Once a demand fits nowhere, later tasks with the same demand are not tried (they cannot
        fit either): a long queue of big tasks costs one decision per distinct demand, and each
        task's reason quotes its own demand."""
        exclude = self._excluded(m.body)
        items = []
        for item in m.body["tasks"]:  # all checked before any is placed: a refusal reserves nothing
            if not isinstance(item, dict) or not isinstance(item.get("task_id"), str):
                raise CubeError(BAD_REQUEST, "sched.place_many: every task needs a task_id")
            items.append((item, _demand(item)))
        refused: list[Demand] = []
        reasons: dict[Demand, str] = {}  # why each distinct refused demand fits nowhere
        chosen: dict[str, set[str]] = {}  # group (a service) -> nodes its items got in this request
        out = []
        for item, demand in items:
            own = _strings(item.get("exclude"))  # workers this task must not go back to
            if own:  # its own exclusions make it unlike any other task: decided on its own
                placement = self._place_spread(item, exclude | own, chosen)
                out.append({"task_id": item["task_id"], "node": placement.node, "reason": placement.reason})
                continue
            if demand not in reasons and any(demand.covers(d) for d in refused):
                # It cannot fit either; its reason must quote its own numbers, not another task's.
                reasons[demand] = self._place(item["task_id"], item, exclude).reason
            if demand in reasons:
                out.append({"task_id": item["task_id"], "node": None, "reason": reasons[demand]})
                continue
            placement = self._place_spread(item, exclude, chosen)
            if placement.node is None:
                refused.append(demand)
                reasons[demand] = placement.reason
            out.append({"task_id": item["task_id"], "node": placement.node, "reason": placement.reason})
        return {"placements": out}

    def _place_spread(self, item: dict[str, Any], exclude: set[str], chosen: dict[str, set[str]]):
        """Replicas of one group (a service) first try the nodes that hold none of them yet."""
        group = item.get("group")
        if not isinstance(group, str):
            return self._place(item["task_id"], item, exclude)
        taken = chosen.setdefault(group, set())
        avoid = {n for n in item.get("avoid") or () if isinstance(n, str)} | taken
        placement = self._place(item["task_id"], item, exclude | avoid) if avoid else None
        if placement is None or placement.node is None:
            placement = self._place(item["task_id"], item, exclude)
        if placement.node is not None:
            taken.add(placement.node)
        return placement

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


def _strings(value: Any) -> set[str]:
    return {x for x in value if isinstance(x, str)} if isinstance(value, list) else set()


def _demand(b: dict[str, Any]) -> Demand:
    try:
        return Demand(float(b["cpu"]), int(b["memory"]), int(b["disk"]), port_set(b.get("fixed_ports")))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise CubeError(BAD_REQUEST, f"sched.place: bad demand: {e}") from None


def run_scheduler(endpoint: str, metrics_bind: str, algorithm: str, stale_after: float, data_dir: str = "") -> None:
    """Process entry point."""
    actor = SchedulerActor(endpoint, metrics_bind, algorithm, stale_after, data_dir=data_dir)
    hook.attach(actor)
    actor.stop_on_signals()
    actor.run()
