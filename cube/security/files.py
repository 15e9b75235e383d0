"""Private files: written whole (temp file + rename) and readable by their owner only."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any


def write_private(path: str, text: str) -> None:
    """A new file, made 0600 by mkstemp (O_EXCL: never one someone prepared in a shared
    directory), renamed over `path` once it is on disk."""
    fd, tmp = tempfile.mkstemp(prefix=".cube-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any, compact: bool = False) -> None:
    """`compact`: on one line, by json's C encoder (an indented dump is pure Python: ~10 ms for a
    keyring of 1,000 workers, written again at every join)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":")) if compact \
        else json.dumps(data, indent=2, sort_keys=True)
    write_private(path, text + "\n")
