"""Fault rules and the rules file that carries them into running actor processes.

The chaos runner and the actors are separate processes, and actors are restarted under it, so
rules travel through a small JSON file named by CUBE_CHAOS_RULES: the runner rewrites it
atomically (os.replace), each injector re-reads it when it changes. A rule matches an outgoing
message by the sending actor's name, the message type and the peer it is routed to (shell-style
patterns), and is active until a wall-clock time and/or for a number of messages.
"""
from __future__ import annotations

import fnmatch
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS = ("drop", "delay", "duplicate", "reorder", "corrupt")


@dataclass
class Rule:
    id: str
    action: str
    sender: str = "*"  # the sending actor's name (manager, store, scheduler, a worker's name)
    type: str = "*"  # message type, e.g. worker.heartbeat, task.status, ok, error
    to: str = "*"  # the ROUTER identity it is sent to ("" when the socket has no route)
    count: int | None = None  # apply to this many messages (per process), then stop
    until: float | None = None  # wall-clock time after which the rule is inert
    delay: float = 0.0  # delay: seconds to hold each message
    copies: int = 2  # duplicate: how many times the message is sent in all
    window: int = 3  # reorder: hold this many messages, then send them in reverse order
    hold: float = 1.0  # reorder: release a partial window after this many seconds
    payload: str = ""  # corrupt: hex bytes replacing the message frame ("" = random bytes)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; use one of {', '.join(ACTIONS)}")

    def matches(self, sender: str, msg_type: str, to: str) -> bool:
        return (fnmatch.fnmatchcase(sender, self.sender) and fnmatch.fnmatchcase(msg_type, self.type)
                and (self.to == "*" or fnmatch.fnmatchcase(to, self.to)))

    def active(self, now: float, used: int) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.count is None or used < self.count

    def describe(self) -> str:
        what = {"delay": f" by {self.delay:g}s", "duplicate": f" x{self.copies}" + (f", copies {self.delay:g}s late" if self.delay else ""),
                "reorder": f" in windows of {self.window}"}.get(self.action, "")
        limit = []
        if self.count is not None:
            limit.append(f"{self.count} messages")
        if self.until is not None:
            limit.append(f"{max(0.0, self.until - time.time()):.1f}s")
        to = "" if self.to == "*" else f" to {self.to}"
        return (f"{self.action} {self.type} from {self.sender}{to}{what}"
                f" ({' or '.join(limit) if limit else 'until cleared'})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Rule":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RuleFile:
    """The runner's side: the current rule set, written whole on every change."""

    path: str
    rules: list[Rule] = field(default_factory=list)

    def add(self, rule: Rule) -> None:
        self.rules = [r for r in self.rules if r.id != rule.id] + [rule]
        self.write()

    def remove(self, rule_id: str | None = None) -> int:
        before = len(self.rules)
        self.rules = [] if rule_id is None else [r for r in self.rules if r.id != rule_id]
        self.write()
        return before - len(self.rules)

    def write(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"rules": [r.to_dict() for r in self.rules]}, f)
        os.replace(tmp, self.path)  # a new inode each time: readers notice even within one mtime tick


def read_rules(path: str) -> list[Rule]:
    """Rules from a file; raises OSError / ValueError on a missing or bad file."""
    with open(path) as f:
        data = json.load(f)
    return [Rule.from_dict(r) for r in data.get("rules", [])]
