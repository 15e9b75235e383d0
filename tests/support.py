"""Test-side helpers over cube.harness (the one process harness)."""
from __future__ import annotations

from typing import Any, Callable

from cube import harness


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "", interval: float = 0.1) -> Any:
    """harness.wait_for, but a timeout fails the test (AssertionError) instead of erroring it."""
    try:
        return harness.wait_for(predicate, timeout, what, interval)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None
