"""Where a command's words go: results on stdout, warnings and errors on stderr, one line each
and never raw from the manager."""
from __future__ import annotations

import sys
from typing import Any

from cube.cli.render import clean


def print_json(obj: Any) -> None:
    """Everything, whole (json escapes control characters itself)."""
    import json
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def warn(message: str) -> None:
    sys.stdout.flush()  # keep the order a person would expect when both go to one terminal
    print(f"cube: {clean(message)}", file=sys.stderr, flush=True)
