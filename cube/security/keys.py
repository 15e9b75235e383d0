"""Long-term CURVE keypairs kept as ZeroMQ certificate files (zmq.auth's format) in a private dir.

A keypair is made once, on first start, and kept: the manager's public key is what workers pin
(through the join token) and clients pin (through their credentials file), so it must not change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
from zmq.utils import z85

KEY_DIR = "curve"


@dataclass(frozen=True)
class Keypair:
    public: bytes  # z85, 40 bytes
    secret: bytes

    @classmethod
    def generate(cls) -> "Keypair":
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @property
    def public_text(self) -> str:
        return self.public.decode("ascii")


def private_dir(path: str) -> str:
    """Create `path` (and its parents) readable by its owner only; tighten it if it exists."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def load_or_create(data_dir: str, name: str) -> Keypair:
    """This process's keypair `name` under DATA_DIR/curve, created on first use (secret 0600)."""
    directory = private_dir(os.path.join(data_dir, KEY_DIR))
    secret_file = os.path.join(directory, f"{name}.key_secret")
    import zmq.auth  # here, not at the top: the CLI imports this module and must start fast
    if not os.path.exists(secret_file):
        old = os.umask(0o077)
        try:
            zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
    for path in (secret_file, os.path.join(directory, f"{name}.key")):
        os.chmod(path, 0o600)
    public, secret = zmq.auth.load_certificate(secret_file)
    if not public or not secret:
        raise ValueError(f"{secret_file} holds no keypair; remove it to make a new one")
    return Keypair(public, secret)


def valid_key(text: str) -> bool:
    """A z85 CURVE public key as it travels in credentials and the ZAP User-Id."""
    if not isinstance(text, str) or len(text) != 40:
        return False
    try:
        z85.decode(text.encode("ascii"))
        return True
    except (ValueError, KeyError, UnicodeEncodeError):
        return False
