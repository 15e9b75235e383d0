"""Join tokens, Swarm-style: `CUBETKN-1-<manager public key, hex>-<secret>`.

The key lets a new worker pin the manager before it has ever spoken to it (nobody else can
command it); the secret proves, once, that the operator allowed it to join. Rotating the token
changes the secret only: workers that joined keep their keys and are not disturbed.
"""
from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from zmq.utils import z85

from cube.security.files import write_private

PREFIX = "CUBETKN-1"
_FORMAT = re.compile(r"^CUBETKN-1-([0-9a-f]{64})-([0-9a-f]{32})$")


class TokenError(ValueError):
    """A join token that cannot be used; the message says why."""


@dataclass(frozen=True)
class JoinToken:
    manager_key: bytes  # z85
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}-{z85.decode(self.manager_key).hex()}-{self.secret}"

    @classmethod
    def parse(cls, text: str) -> "JoinToken":
        match = _FORMAT.match((text or "").strip())
        if match is None:
            raise TokenError("not a Cube join token (expected CUBETKN-1-<64 hex>-<32 hex>; "
                             "print one with `cube join-token` on the manager)")
        return cls(z85.encode(bytes.fromhex(match.group(1))), match.group(2))

    def proves(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret.encode(), str(secret).encode())


def new_token(manager_key: bytes) -> JoinToken:
    return JoinToken(manager_key, secrets.token_hex(16))


def load_or_create(path: str, manager_key: bytes) -> JoinToken:
    """The token in `path` (0600), made on first use; one whose key is not this manager's is replaced."""
    try:
        with open(path) as f:
            token = JoinToken.parse(f.read())
        if token.manager_key == manager_key:
            return token
    except (OSError, TokenError):
        pass
    return save(path, new_token(manager_key))


def save(path: str, token: JoinToken) -> JoinToken:
    write_private(path, str(token) + "\n")
    return token
