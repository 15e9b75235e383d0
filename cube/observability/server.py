"""Serving a registry at /metrics, and reading an actor's state for it from the right thread.

The HTTP server is prometheus-client's own (a daemon thread per request). Its threads never touch
an actor's state: that belongs to the actor's loop thread (cube/wire/loop.py). A scrape asks the
loop for a snapshot (`LoopSnapshot`), computed there, and waits a little for it; a loop too busy
to answer in time gets the previous snapshot served instead, so a scrape never stalls the loop
nor reads a dictionary mid-change; scrapes within a second share one snapshot. Counters and
histograms are prometheus-client objects, thread-safe, updated where the numbers happen.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

SNAPSHOT_WAIT = 2.0  # seconds a scrape waits for the loop before serving the previous snapshot
SNAPSHOT_MAX_AGE = 1.0  # seconds one snapshot serves every scrape (several Prometheus servers, a burst)


class Server:
    """A running /metrics endpoint; `close()` stops it (the actor's on_stop, before its loop closes)."""

    def __init__(self, httpd: Any, thread: threading.Thread):
        self.httpd, self.thread = httpd, thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2.0)


def serve(registry: CollectorRegistry, host: str, port: int, who: str) -> Server | None:
    """Serve `registry` at http://host:port/metrics; None when port is 0 (disabled) or it cannot
    bind. The address is logged only once it is served; a failure is logged as an error saying
    what it means, and the process goes on without its metrics: a metrics endpoint is not worth
    losing the control plane (or a worker's containers) over (docs/architecture.md, "Metrics")."""
    if not port:
        return None
    try:
        httpd, thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as e:  # taken, or an address not on this machine
        log.error("%s: NO Prometheus metrics: cannot serve them on %s:%s (%s); running on without /metrics. "
                  "Free the port or choose another --prometheus-port / --prometheus-host (--prometheus-port 0: "
                  "none), then restart it", who, host, port, e.strerror or e)
        return None
    log.info("%s: Prometheus metrics at http://%s:%d/metrics", who, host, port)
    return Server(httpd, thread)


class LoopSnapshot:
    """`get()`, from any thread: the result of `compute()`, run on the loop's thread.

    One result serves every scrape for `max_age` seconds, and scrapes arriving while it is being
    computed wait for that one: however many scrapers there are, the loop computes at most one
    snapshot a `max_age`. A loop that does not get to it within `wait` seconds has the previous
    result served (None before the first one)."""

    def __init__(self, loop: Any, compute: Callable[[], Any], wait: float = SNAPSHOT_WAIT,
                 max_age: float = SNAPSHOT_MAX_AGE, clock: Callable[[], float] = time.monotonic):
        self.loop, self.compute, self.wait, self.max_age, self.clock = loop, compute, wait, max_age, clock
        self.last: Any = None
        self.taken: float | None = None  # clock() when `last` was computed
        self.computed = 0  # how many times compute() ran (tests, and a reader's curiosity)
        self._asked: threading.Event | None = None  # set when the computation in flight is done
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self.taken is not None and self.clock() - self.taken < self.max_age:
                return self.last
            asked = self._asked
            if asked is None:  # nobody asked the loop yet: ask it once for everybody
                asked = self._asked = threading.Event()
                try:
                    self.loop.call_soon_threadsafe(lambda: self._run(asked))
                except OSError:  # the loop is closing
                    self._asked = None
                    return self.last
        asked.wait(self.wait)
        with self._lock:
            return self.last

    def _run(self, asked: threading.Event) -> None:  # on the loop thread
        try:
            value = self.compute()
        except Exception:  # a bug in a gauge must not take the actor's loop down
            log.exception("metrics: computing the snapshot failed")
            value, ok = None, False
        else:
            ok = True
        with self._lock:
            if ok:
                self.last, self.taken = value, self.clock()
                self.computed += 1
            self._asked = None
        asked.set()
