"""The fault-injection point for chaos testing (drop, delay, duplicate, reorder, corrupt).

Inert unless chaos mode is switched on explicitly (CUBE_CHAOS=1 in the actor's environment):
then `install()` puts an injector here that applies the rules in the file named by
CUBE_CHAOS_RULES to every outgoing message (see cube/chaos/injector.py and docs/chaos.md).
When off, `send` costs one `is None` check on top of the real send.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from cube.wire.actor import Actor

ENABLED = os.environ.get("CUBE_CHAOS", "") not in ("", "0")
injector: Any = None  # set by install() when ENABLED


def send(actor: "Actor", sock: Any, frames: list[bytes], env: Any) -> bool:
    if injector is None:
        return actor.transmit(sock, frames, env)
    return injector.send(actor, sock, frames, env)


def install(rules_path: str | None = None) -> Any:
    """Switch fault injection on in this process (chaos mode only); returns the injector."""
    global injector
    from cube.chaos.injector import Injector  # only chaos mode pays for the import
    injector = Injector(rules_path if rules_path is not None else os.environ.get("CUBE_CHAOS_RULES", ""))
    return injector


if ENABLED:
    install()
