"""A worker's side of security: its own keypair, the manager key it pinned, and whether it joined.

`cube-worker --join TOKEN` pins the manager's key from the token and proves the token's secret
once; from then on the worker's key speaks for its name. The pin is kept in the worker's data dir,
so a restarted worker needs no token: it reconnects to the same manager, and to no other
(docs/security.md, "Joining").
"""
from __future__ import annotations

import json
import os

from cube.security import keys
from cube.security.curve import CurveClient
from cube.security.files import write_json
from cube.security.token import JoinToken, TokenError

PIN_FILE = "manager.pin"


class MembershipError(Exception):
    """The worker cannot take part in a cluster as configured; the message says what to do."""


class Membership:
    def __init__(self, data_dir: str, token_text: str = ""):
        self.keypair = keys.load_or_create(data_dir, "worker")
        self.pin_path = os.path.join(data_dir, keys.KEY_DIR, PIN_FILE)
        try:
            self.token = JoinToken.parse(token_text) if token_text else None
        except TokenError as e:
            raise MembershipError(f"--join: {e}") from None
        pin = self._read_pin()
        if self.token is not None:
            self.manager_key = self.token.manager_key
            self.joined_as = pin.get("name", "") if pin.get("manager_key") == self.manager_key.decode() else ""
        elif pin.get("manager_key"):
            self.manager_key = pin["manager_key"].encode()
            self.joined_as = pin.get("name", "")
        else:
            raise MembershipError("this worker has not joined a cluster: start it with --join TOKEN "
                                  "(`cube join-token` on the manager prints the command)")

    def _read_pin(self) -> dict:
        try:
            with open(self.pin_path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def curve(self) -> CurveClient:
        return CurveClient(self.keypair, self.manager_key)

    def needs_join(self, name: str) -> bool:
        return self.joined_as != name

    def join_secret(self) -> str | None:
        return self.token.secret if self.token is not None else None

    def joined(self, name: str) -> None:
        self.joined_as = name
        write_json(self.pin_path, {"manager_key": self.manager_key.decode(), "name": name})

    def forgotten(self) -> None:
        """The manager no longer knows our key (its data was reset, or we were removed)."""
        self.joined_as = ""
