"""How often workers report, scaled with the size of the cluster (docs/architecture.md, "Pace").

Every worker heartbeats the Manager and sends metrics samples to the Scheduler. At a fixed
interval their cost grows with the cluster: 1,000 workers at the default second are 1,000
heartbeats (and answers) and 1,000 samples a second, as much traffic as placing 1,000 tasks.
Like Nomad's `max_heartbeats_per_second`, the Manager keeps the total under `max_rate`: each
worker is told, in every hello and heartbeat answer, to report every `workers / max_rate` seconds
(never more often than the configured interval). A worker is then lost after the same number of
missed heartbeats as in a small cluster, so the grace period grows in proportion; when the
cluster shrinks, the longer grace holds until every worker has heard the shorter interval. The
interval is at most MAX_PACE (60 s), what a worker accepts.
"""
from __future__ import annotations

import time
from typing import Callable

from cube.wire.link import MAX_PACE


class Pace:
    def __init__(self, heartbeat: float, grace: float, max_rate: float,
                 clock: Callable[[], float] = time.monotonic):
        self.base_heartbeat = heartbeat
        self.base_grace = grace
        self.max_rate = max_rate
        self.clock = clock
        self.heartbeat = heartbeat
        self.metrics_interval = 0.0  # no advice: a worker keeps its own interval
        self._grace = grace
        self._held: tuple[float, float] = (0.0, 0.0)  # (a longer grace, until when) after a shrink

    def update(self, workers: int) -> None:
        """The cluster has `workers` workers now."""
        # never slower than a worker accepts (cube/wire/link.py): it would keep its own pace
        spread = min(workers / self.max_rate, MAX_PACE) if self.max_rate > 0 else 0.0
        heartbeat = max(self.base_heartbeat, spread)
        grace = self.base_grace * heartbeat / self.base_heartbeat
        if grace < self._grace:  # workers told the longer interval may not have heard the new one yet
            current = self.grace  # with a hold still running: a second shrink keeps the first one's length
            self._held = (current, self.clock() + current)
        self.heartbeat, self._grace = heartbeat, grace
        self.metrics_interval = spread if spread > self.base_heartbeat else 0.0

    @property
    def grace(self) -> float:
        """How long a worker may be silent before it is lost."""
        held, until = self._held
        return max(self._grace, held) if self.clock() < until else self._grace

    def advice(self) -> dict[str, float]:
        """What every hello and heartbeat answer tells the worker."""
        out = {"heartbeat": self.heartbeat}
        if self.metrics_interval:
            out["metrics_interval"] = self.metrics_interval
        return out
