"""Serving a registry at /metrics, and reading an actor's state for it from the right thread.

The HTTP server is prometheus-client's own (a daemon thread per request). Its threads never touch
an actor's state: that belongs to the actor's loop thread (cube/wire/loop.py). A scrape asks the
loop for a snapshot (`LoopSnapshot`), computed there, and waits a little for it; a loop too busy
to answer in time gets the previous snapshot served instead, so a scrape never stalls the loop
nor reads a dictionary mid-change. Counters and histograms are prometheus-client objects,
thread-safe, updated where the numbers happen.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

SNAPSHOT_WAIT = 2.0  # seconds a scrape waits for the loop before serving the previous snapshot


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
    bind (logged: the process still does its real work without its metrics)."""
    if not port:
        return None
    try:
        httpd, thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as e:
        log.error("%s: cannot serve Prometheus metrics on %s:%s: %s", who, host, port, e.strerror or e)
        return None
    log.info("%s: Prometheus metrics at http://%s:%d/metrics", who, host, port)
    return Server(httpd, thread)


class LoopSnapshot:
    """`get()`, from any thread: `compute()` run on the loop's thread, or the previous result
    when the loop did not get to it within `wait` seconds (None before the first one)."""

    def __init__(self, loop: Any, compute: Callable[[], Any], wait: float = SNAPSHOT_WAIT):
        self.loop, self.compute, self.wait = loop, compute, wait
        self.last: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:  # on the loop thread
            try:
                box.append(self.compute())
            finally:
                done.set()
        try:
            self.loop.call_soon_threadsafe(run)
        except OSError:  # the loop is closing
            return self.last
        if done.wait(self.wait) and box:
            with self._lock:
                self.last = box[0]
        return self.last
