"""The fault-injection point for chaos testing (drop, delay, duplicate, reorder).

Inert unless chaos mode is switched on (CUBE_CHAOS=1 in the actor's environment): then a rule
table, fed by chaos scripts, decides what happens to each outgoing message. When off, `send` is
one attribute check away from the real send.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from cube.wire.actor import Actor

ENABLED = os.environ.get("CUBE_CHAOS", "") not in ("", "0")
injector: Any = None  # set by the chaos machinery when ENABLED


def send(actor: "Actor", sock: Any, frames: list[bytes], env: Any) -> bool:
    if injector is None:
        return actor.transmit(sock, frames, env)
    return injector.send(actor, sock, frames, env)
