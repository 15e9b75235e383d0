"""The keyring: which CURVE key may speak as which worker, and which client key has which role.

The manager is its only writer; the scheduler (another process on the same host) reads it to
admit metrics only from joined workers, reloading it when the file changes. It is a small JSON
file in the manager's private data dir, written whole (docs/security.md, "What is stored").
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from cube.security.files import write_json

ADMIN = "admin"
READ_ONLY = "read-only"
ROLES = (ADMIN, READ_ONLY)
FILE = "keyring.json"


class KeyConflict(ValueError):
    """A binding refused: the name or the key is taken, or the key was revoked."""


class Keyring:
    def __init__(self, path: str):
        self.path = path
        self.workers: dict[str, str] = {}  # worker name -> public key (z85 text)
        self.addresses: dict[str, str] = {}  # worker name -> the address it joined with (health probes go there)
        self.clients: dict[str, dict[str, Any]] = {}  # public key -> {"name", "role", "created"}
        self.revoked: dict[str, str] = {}  # public key -> the worker name it had
        self._worker_of: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()  # the ZAP thread reloads too
        self.reload()

    # ---- reading ------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Read the file again if it changed since the last read; True if it did."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return False
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            try:
                with open(self.path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                return False  # replaced under us: the next reload reads the new one
            self._apply(data, stamp)
            return True

    def _apply(self, data: dict[str, Any], stamp: tuple[int, int, int]) -> None:
        self.workers = dict(data.get("workers", {}))
        self.addresses = dict(data.get("addresses", {}))
        self.clients = dict(data.get("clients", {}))
        self.revoked = dict(data.get("revoked", {}))
        self._worker_of = {key: name for name, key in self.workers.items()}
        self._stamp = stamp

    def worker_for(self, key: str) -> str | None:
        """The worker name bound to this key, or None (not joined, or revoked)."""
        return self._worker_of.get(key)

    def role_of(self, key: str) -> str | None:
        client = self.clients.get(key)
        return client["role"] if client else None

    def is_client(self, key: str) -> bool:
        return key in self.clients

    def is_worker(self, key: str) -> bool:
        return key in self._worker_of

    # ---- writing (the manager only) -------------------------------------------------------------
    def bind_worker(self, name: str, key: str, address: str = "") -> bool:
        """Bind `name` to `key` for good; False if it already was (a repeated join)."""
        if key in self.revoked:
            raise KeyConflict(f"this worker's key was revoked (it was {self.revoked[key]!r}); "
                              f"remove the worker's curve/ directory and join again with a token")
        if self.workers.get(name) == key:
            return False
        if name in self.workers:
            raise KeyConflict(f"a worker named {name!r} already joined with another key; "
                              f"choose another --name, or `cube node rm {name}` first")
        if key in self._worker_of:
            raise KeyConflict(f"this key already joined as worker {self._worker_of[key]!r}")
        self.workers[name] = key
        self.addresses[name] = address
        self._worker_of[key] = name
        self.save()
        return True

    def revoke_worker(self, name: str) -> str | None:
        key = self.workers.pop(name, None)
        self.addresses.pop(name, None)
        if key is not None:
            self._worker_of.pop(key, None)
            self.revoked[key] = name
            self.save()
        return key

    def add_client(self, key: str, name: str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.clients[key] = {"name": name, "role": role, "created": time.time()}
        self.save()

    def remove_clients(self, name: str) -> int:
        keys = [k for k, c in self.clients.items() if c.get("name") == name]
        for k in keys:
            del self.clients[k]
        if keys:
            self.save()
        return len(keys)

    def save(self) -> None:
        write_json(self.path, {"workers": self.workers, "addresses": self.addresses, "clients": self.clients,
                               "revoked": self.revoked}, compact=True)
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
