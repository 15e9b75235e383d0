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


def write_json(path: str, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
