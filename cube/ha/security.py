"""One identity for every manager of a cluster (docs/ha.md, "Security"; docs/security.md).

Workers pin the manager's public key (from the join token) and clients pin it in their
credentials, so every manager must hold the same keypair, and each must know the same workers
and clients (the keyring) and the same join token. They are kept in the Store, next to the tasks
they protect (etcd must be as private as a manager's data dir: docs/ha.md):

- at start-up (`bootstrap`, in the supervisor, before any actor): the first manager of a cluster
  publishes its own material (keypair, join token, keyring, admin credentials); every other one
  copies it into its data dir, replacing what it had;
- while running (`SecuritySync`, in the Manager): the leader publishes the keyring and join
  token whenever they change (joins, credentials issued or revoked, token rotated), fenced by
  its term like every leader write; a follower copies them into its data dir, where the ZAP
  handler and the Scheduler reload them; a newly elected leader copies them before it serves.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from cube.security.authority import ADMIN_FILE, TOKEN_FILE
from cube.security.files import write_private
from cube.security.keyring import FILE as KEYRING_FILE
from cube.security.keys import KEY_DIR

log = logging.getLogger(__name__)

NS, KEY = "meta", "security"
IDENTITY = [f"{KEY_DIR}/manager.key", f"{KEY_DIR}/manager.key_secret", ADMIN_FILE]  # fixed for life
CHANGING = [KEYRING_FILE, TOKEN_FILE]  # changed by the leader while it runs


def read_files(data_dir: str, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            with open(os.path.join(data_dir, name)) as f:
                out[name] = f.read()
        except FileNotFoundError:
            pass
    return out


def write_files(data_dir: str, files: dict[str, str]) -> list[str]:
    """Write those that differ (private, whole); the names written."""
    changed = []
    for name, text in files.items():
        if name not in IDENTITY + CHANGING or not isinstance(text, str):
            continue
        path = os.path.join(data_dir, name)
        if read_files(data_dir, [name]).get(name) == text:
            continue
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_private(path, text)
        changed.append(name)
    return changed


def bootstrap(config: Any) -> str:
    """The shared identity in this manager's data dir; returns the admin credentials' path."""
    from cube.security.authority import Authority, addresses
    from cube.store.etcd import EtcdStore
    store = EtcdStore(config.etcd, tls=config.etcd_tls)
    shared = _wait_for_etcd(lambda: store.get(NS, KEY), config.etcd)
    if shared is None:  # the first manager: its own, published unless another was quicker
        authority = Authority(config.data_dir, addresses(config))
        authority.ensure_admin()
        mine = read_files(config.data_dir, IDENTITY + CHANGING)
        if store.create(NS, KEY, mine):
            log.info("security: published this manager's key, token, keyring and admin credentials "
                     "for the cluster's other managers")
            return os.path.join(config.data_dir, ADMIN_FILE)
        shared = store.get(NS, KEY)
    written = write_files(config.data_dir, shared)
    if written:
        log.info("security: took the cluster's %s from the store", ", ".join(written))
    return os.path.join(config.data_dir, ADMIN_FILE)


def _wait_for_etcd(read: Callable[[], Any], endpoints: str, patience: float = 60.0) -> Any:
    """A manager may start before etcd has a majority: wait for it, then give up clearly."""
    import time
    from cube.store.base import StoreError
    deadline = time.monotonic() + patience
    while True:
        try:
            return read()
        except StoreError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd at {endpoints} did not answer for {patience:g}s: {e}") from None
            log.warning("security: waiting for etcd (%s)", e)
            time.sleep(1.0)


class SecuritySync:
    """In the Manager: the leader publishes keyring and token changes, followers take them."""

    def __init__(self, store: Any, authority: Any, leading: Callable[[], bool]):
        self.store = store  # AsyncStore (its writes carry the leader's term)
        self.authority = authority
        self.leading = leading
        self.data_dir = authority.data_dir
        self.published: dict[str, str] = {}
        self._busy = False

    def tick(self) -> None:
        if self._busy:
            return
        if self.leading():
            self.publish()
        else:
            self.take()

    def publish(self) -> None:
        files = read_files(self.data_dir, CHANGING)
        if files == self.published:
            return
        self._busy = True

        def got(shared: Any, error: Any) -> None:
            if error is not None:
                self._busy = False
                return
            doc = {**(shared or {}), **files}

            def saved(_: Any, error: Any) -> None:
                self._busy = False
                if error is None:
                    self.published = files
                else:
                    log.warning("security: could not publish the keyring: %s", error)
            self.store.put(NS, KEY, doc, saved)
        self.store.get(NS, KEY, got)

    def take(self, then: Callable[[], None] | None = None) -> None:
        """Copy the published keyring and token here (a follower, or a leader before it serves)."""
        self._busy = True

        def got(shared: Any, error: Any) -> None:
            self._busy = False
            if error is None and shared:
                changed = write_files(self.data_dir, {k: v for k, v in shared.items() if k in CHANGING})
                if changed:
                    self._reload(changed)
                self.published = read_files(self.data_dir, CHANGING)
            elif error is not None:
                log.warning("security: could not read the cluster's keyring: %s", error)
            if then is not None:
                then()
        self.store.get(NS, KEY, got)

    def _reload(self, changed: list[str]) -> None:
        from cube.security import token
        self.authority.keyring.reload()
        if TOKEN_FILE in changed:
            self.authority.token = token.load_or_create(self.authority.token_path, self.authority.keypair.public)
        log.info("security: took the cluster's %s", ", ".join(changed))
