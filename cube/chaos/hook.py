"""Chaos mode for one actor process (docs/chaos.md, "The fault-injection point").

With CUBE_CHAOS=1 in its environment, an actor's outgoing messages pass through an injector that
applies the rules in the file named by CUBE_CHAOS_RULES; otherwise nothing is installed and this
module imports nothing else. Process entry points call `attach(actor)`; the wire layer knows only
its `outbox`.
"""
from __future__ import annotations

import os
from typing import Any


def enabled() -> bool:
    return os.environ.get("CUBE_CHAOS", "") not in ("", "0")


def attach(actor: Any) -> None:
    """Install a chaos injector as the actor's outbox, in chaos mode only."""
    if not enabled():
        return
    from cube.chaos.injector import Injector
    actor.outbox = Injector(os.environ.get("CUBE_CHAOS_RULES", "")).send
