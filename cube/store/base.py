"""The Store interface: put, get, delete, list, count and an atomic batch (docs/architecture.md).

Keys live in namespaces ("tasks", "events", "nodes", ...). A batch is applied all or nothing,
so a task and its event are never persisted one without the other.

A remote store's write can fail two ways (cube.wire.errors): an error reply with code
`unavailable` means "refused, not applied" (its deadline had passed); no answer at all
(`Unavailable`) means "applied before its deadline, or never": read it back to know which.
"""
from __future__ import annotations

import abc
import time
from typing import Any, Iterable

import msgpack


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    """Stored values are ours, so no frame limit applies (unlike messages from the network)."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


class StoreError(Exception):
    """The store cannot do what was asked (bad namespace, closed, disk trouble)."""


class StoreUnavailable(StoreError):
    """A networked backend (etcd) could not be reached: nothing was applied."""


class StoreFenced(StoreError):
    """A leader's write refused because another manager leads now (docs/ha.md): not applied."""


class StoreInDoubt(StoreError):
    """A networked backend (etcd) got the write but did not answer: it may or may not be applied."""


Op = tuple[str, str, str, Any]  # ("put" | "delete" | "delete_prefix", ns, key or prefix, value)

WRITE_MARGIN = 0.5  # seconds of a client's wait left for the write itself and the reply


def write_deadline(timeout: float, now: float | None = None) -> float:
    """The deadline to send with a write whose client waits `timeout` seconds: the Store refuses
    the write after it, while the client is still waiting for an answer. It is read on the
    system-wide monotonic clock (the Store actor runs on the Manager's host), so a wall clock
    stepped by NTP cannot let a late write through."""
    return (time.monotonic() if now is None else now) + timeout - min(WRITE_MARGIN, timeout / 4)


class Store(abc.ABC):
    @abc.abstractmethod
    def put(self, ns: str, key: str, value: Any) -> None: ...

    @abc.abstractmethod
    def get(self, ns: str, key: str) -> Any | None: ...

    @abc.abstractmethod
    def delete(self, ns: str, key: str) -> None: ...

    @abc.abstractmethod
    def list(self, ns: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        """(key, value) pairs in key order: keys greater than `after` when given, `limit` at most."""

    @abc.abstractmethod
    def batch(self, ops: Iterable[Op], term: int = 0) -> None:
        """Apply all of `ops` or none. `term`: the writing leader's (docs/ha.md); a store shared by
        several managers applies the batch only while that term still leads, and one that serves a
        single manager (LevelDB, memory) has no leaders to compare and ignores it."""

    def count(self, ns: str) -> int:
        return len(self.list(ns))

    def close(self) -> None:
        pass

    @staticmethod
    def check(ns: str, key: str | None = None) -> None:
        if not ns or "\x00" in ns:
            raise StoreError(f"bad namespace {ns!r}")
        if key is not None and ("\x00" in key):
            raise StoreError(f"bad key {key!r}")


def open_store(kind: str, path: str | None = None, etcd: str = "", etcd_tls: Any = None) -> Store:
    """`leveldb` (needs `path`, a directory), `etcd` (needs `etcd`, its endpoints, and
    `etcd_tls`, an EtcdTLS, for https ones) or `memory`."""
    if kind == "memory":
        from cube.store.memory import MemoryStore
        return MemoryStore()
    if kind == "leveldb":
        if not path:
            raise StoreError("the leveldb store needs a data directory")
        from cube.store.leveldb import LevelDBStore
        return LevelDBStore(path)
    if kind == "etcd":
        from cube.store.etcd import EtcdStore
        return EtcdStore(etcd, tls=etcd_tls)
    raise StoreError(f"unknown store kind {kind!r} (use leveldb, etcd or memory)")
