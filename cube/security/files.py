"""Private files: written whole (temp file + rename) and readable by their owner only."""
from __future__ import annotations

import json
import os
from typing import Any


def write_private(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
