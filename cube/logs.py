"""One log format for every Cube process, so interleaved logs of a cluster stay readable."""
from __future__ import annotations

import logging
import os


def setup(role: str, level: str | None = None) -> None:
    level = (level or os.environ.get("CUBE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), force=True,
                        format=f"%(asctime)s %(levelname)-7s {role}[%(process)d] %(message)s")
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
