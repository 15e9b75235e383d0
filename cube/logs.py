"""One log format for every Cube process, so interleaved logs of a cluster stay readable."""
from __future__ import annotations

import logging
import os
import time


def setup(role: str, level: str | None = None) -> None:
    level = (level or os.environ.get("CUBE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), force=True,
                        format=f"%(asctime)s %(levelname)-7s {role}[%(process)d] %(message)s")
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class Throttled:
    """At most `burst` records per `per` seconds for each kind of message; the rest are counted
    and reported in the next record that gets through. A peer sending garbage (or knocking with
    unknown keys) must not be able to fill the disk with our warnings."""

    def __init__(self, logger: logging.Logger, per: float = 10.0, burst: int = 5):
        self.logger, self.per, self.burst = logger, per, burst
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, logged, suppressed)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.per:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[kind] = (start, logged, suppressed + 1)
            return
        if suppressed:
            msg += f" ({suppressed} more like this not logged)"
        self._windows[kind] = (start, logged + 1, 0)
        if len(self._windows) > 1000:  # kinds come from a small fixed set; never grow without bound
            self._windows.clear()
        self.logger.log(level, msg, *args)
