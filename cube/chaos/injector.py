"""Applies fault rules to an actor's outgoing messages (only ever installed in chaos mode).

Installed as an actor's outbox (cube.chaos.hook), it gets every outgoing message instead of
`Actor.transmit`. The rules file is re-read when it changes (checked at most every 100 ms, on
sends), so rules written by the runner reach running actors, and an actor restarted by its
supervisor reads them afresh.
Everything runs on the actor's loop thread: delayed and reordered messages are released by
`actor.loop.call_later`, because ZeroMQ sockets must only be used from the thread that polls them.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from cube.chaos.rules import Rule, read_rules

log = logging.getLogger("cube.chaos")

RECHECK = 0.1  # seconds between looks at the rules file


class Injector:
    def __init__(self, path: str):
        self.path = path
        self.rules: list[Rule] = []
        self.used: dict[str, int] = {}  # rule id -> messages it was applied to (this process)
        self.held: dict[str, list[tuple[Any, Any, list[bytes], Any]]] = {}  # reorder buffers
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0

    # ---- rules ------------------------------------------------------------------------------
    def refresh(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now < self._next_check or not self.path:
            return
        self._next_check = now + RECHECK
        try:
            st = os.stat(self.path)
        except OSError:
            if self.rules:
                log.info("chaos: rules file %s is gone; no rules", self.path)
            self.rules, self._stamp = [], None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            self.rules = read_rules(self.path)
        except (OSError, ValueError, TypeError) as e:
            log.warning("chaos: cannot read rules file %s: %s; keeping %d rules", self.path, e, len(self.rules))
            return
        self._stamp = stamp
        log.info("chaos: %d rules loaded from %s", len(self.rules), self.path)

    def match(self, sender: str, msg_type: str, to: str) -> Rule | None:
        now = time.time()
        for rule in self.rules:
            if rule.matches(sender, msg_type, to) and rule.active(now, self.used.get(rule.id, 0)):
                return rule
        return None

    # ---- sending ------------------------------------------------------------------------------
    def send(self, actor: Any, sock: Any, frames: list[bytes], env: Any) -> bool:
        self.refresh()
        if not self.rules:
            return actor.transmit(sock, frames, env)
        to = actor.peer_name(env.route)
        rule = self.match(actor.name, env.type, to)
        if rule is None:
            return actor.transmit(sock, frames, env)
        self.used[rule.id] = self.used.get(rule.id, 0) + 1
        actor.stats[f"chaos.{rule.action}"] += 1
        log.info("chaos: %s %s from %s%s (rule %s)", rule.action, env.type, actor.name,
                 f" to {to}" if to else "", rule.id)
        if rule.action == "drop":
            return True
        if rule.action == "delay":
            actor.loop.call_later(rule.delay, lambda: actor.transmit(sock, frames, env))
            return True
        if rule.action == "duplicate":  # with a delay, the extra copies arrive that much later
            sent = actor.transmit(sock, frames, env)
            for _ in range(max(1, rule.copies) - 1):
                if rule.delay > 0:
                    actor.loop.call_later(rule.delay, lambda: actor.transmit(sock, frames, env))
                else:
                    sent = actor.transmit(sock, frames, env) or sent
            return sent
        if rule.action == "corrupt":
            payload = bytes.fromhex(rule.payload) if rule.payload else os.urandom(32)
            return actor.transmit(sock, [*frames[:-1], payload], env)
        return self._reorder(rule, actor, sock, frames, env)

    def _reorder(self, rule: Rule, actor: Any, sock: Any, frames: list[bytes], env: Any) -> bool:
        """Hold messages until the window is full (or `hold` passes), then send them newest first."""
        buf = self.held.setdefault(rule.id, [])
        buf.append((actor, sock, frames, env))
        if len(buf) >= max(1, rule.window):
            self._release(rule.id)
        elif len(buf) == 1:
            actor.loop.call_later(rule.hold, lambda: self._release(rule.id))
        return True

    def _release(self, rule_id: str) -> None:
        buf = self.held.pop(rule_id, [])
        for actor, sock, frames, env in reversed(buf):
            actor.transmit(sock, frames, env)
