"""BedCluster: cube/harness.py's Cluster with its processes spread over the hosts of a Bed.

The manager (and the CLI) run on one host, each worker on the host it is started on, with
DOCKER_HOST naming that host's engine and `--address` its host's address; everything else (secure
joins, credentials, logs, teardown) is the harness's.
"""
from __future__ import annotations

from typing import Any

import zmq

from cube.harness import Cluster
from cube.runtime.base import LABEL_TASK, LABEL_WORKER
from cube.testbed.bed import Bed


def _context_here() -> zmq.Context:
    """A ZeroMQ context whose I/O threads (which open the TCP connections) start in the calling
    thread's network namespace: they are created with its first socket."""
    ctx = zmq.Context()
    ctx.socket(zmq.DEALER).close(linger=0)
    return ctx


class BedCluster(Cluster):
    """`manager` is the bed host of cube-manager and of the CLI; `start_worker(short, host=...)`
    places a worker (a restart keeps its host)."""

    def __init__(self, bed: Bed, manager: str = "h1", **kw: Any):
        super().__init__(**kw)
        self.bed = bed
        self.manager_host = manager
        self.host = bed.address(manager)
        self.zmq_context = bed.call_in(manager, _context_here)  # for call(): the manager's API
        self.placement: dict[str, str] = {}  # worker short name -> its bed host

    def start_worker(self, short: str, *flags: str, host: str | None = None, wait: bool = True) -> str:
        if host is not None:
            self.bed.docker_host(host)  # raises unless the host has an engine
            self.placement[short] = host
        elif short not in self.placement:
            raise ValueError(f"worker {short!r}: say on which bed host it runs (host=...)")
        return super().start_worker(short, *flags, wait=wait)

    def command_prefix(self, where: str) -> list[str]:
        if where.startswith("worker-"):
            host = self.placement[where.removeprefix("worker-")]
            return [*self.bed.prefix(host), "env", f"DOCKER_HOST={self.bed.docker_host(host)}"]
        return self.bed.prefix(self.manager_host)

    def worker_address(self, short: str) -> str:
        return self.bed.address(self.placement[short])

    def containers(self, all_: bool = True, host: str | None = None) -> list[Any]:
        """This cluster's task containers on every worker host's engine (or on `host`'s)."""
        found: list[Any] = []
        for h in sorted({host} if host else set(self.placement.values())):
            client = self.bed.docker(h)
            try:
                listed = client.containers.list(all=all_, filters={"label": LABEL_TASK}, ignore_removed=True)
            finally:
                client.close()
            found += [c for c in listed if (c.labels.get(LABEL_WORKER) or "").startswith(self.token + "-")]
        return found

    def running_by_task(self) -> dict[str, list[tuple[str, str]]]:
        """task id -> [(host, container id)] of its running containers, over all worker hosts."""
        out: dict[str, list[tuple[str, str]]] = {}
        for h in sorted(set(self.placement.values())):
            for c in self.containers(all_=False, host=h):
                out.setdefault(c.labels[LABEL_TASK], []).append((h, c.id))
        return out

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.zmq_context.destroy(linger=0)
