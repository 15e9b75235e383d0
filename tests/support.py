"""Test-side helpers over cube.harness (the one process harness)."""
from __future__ import annotations

import contextlib
import time
import urllib.request
from typing import Any, Callable, Iterator

from cube import harness


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "", interval: float = 0.1) -> Any:
    """harness.wait_for, but a timeout fails the test (AssertionError) instead of erroring it."""
    try:
        return harness.wait_for(predicate, timeout, what, interval)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def fetch(url: str, within: float = 3.0) -> bytes:
    """GET `url`, retrying for `within` seconds while nothing answers yet (a server starting)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def started(cluster: Any, request: Any, lines: int = 60) -> Iterator[Any]:
    """A fixture's cluster from start to close, its processes' logs printed if the test failed."""
    try:
        cluster.start()
        yield cluster
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.log_tail(lines))
        cluster.close()
