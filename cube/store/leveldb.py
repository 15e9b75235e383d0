"""LevelDB via plyvel: one database, namespaces as key prefixes, synchronous writes.

Writes use sync=True: an acknowledged task must survive a power cut, not just a crash.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import plyvel

from cube.store.base import Op, Store, StoreError
from cube.store.base import pack, unpack

SEP = b"\x00"


class LevelDBStore(Store):
    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        try:
            self._db = plyvel.DB(path, create_if_missing=True)
        except plyvel.IOError as e:
            raise StoreError(f"cannot open LevelDB at {path}: {e} (is another process using it?)") from None
        self.path = path

    @staticmethod
    def _key(ns: str, key: str) -> bytes:
        Store.check(ns, key)
        return ns.encode() + SEP + key.encode()

    def put(self, ns: str, key: str, value: Any) -> None:
        self._db.put(self._key(ns, key), pack(value), sync=True)

    def get(self, ns: str, key: str) -> Any | None:
        raw = self._db.get(self._key(ns, key))
        return None if raw is None else unpack(raw)

    def delete(self, ns: str, key: str) -> None:
        self._db.delete(self._key(ns, key), sync=True)

    def list(self, ns: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        skip = len(ns) + 1
        start = self._key(ns, prefix)
        stop = start + b"\xff" * 8  # past every key with this prefix (keys are UTF-8)
        past = bool(after) and self._key(ns, after) >= start
        lo = self._key(ns, after) if past else start
        out = []
        for k, v in self._db.iterator(start=lo, stop=stop, include_start=not past):
            if limit is not None and len(out) >= limit:
                break
            if k.startswith(start):
                out.append((k[skip:].decode(), unpack(v)))
        return out

    def count(self, ns: str) -> int:
        return sum(1 for _ in self._db.iterator(prefix=self._key(ns, ""), include_value=False))

    def batch(self, ops: Iterable[Op], term: int = 0) -> None:
        with self._db.write_batch(transaction=True, sync=True) as wb:
            for op, ns, key, value in ops:
                if op == "put":
                    wb.put(self._key(ns, key), pack(value))
                elif op == "delete":
                    wb.delete(self._key(ns, key))
                elif op == "delete_prefix":  # e.g. every event of a pruned task
                    for k in self._db.iterator(prefix=self._key(ns, key), include_value=False):
                        wb.delete(k)
                else:
                    raise StoreError(f"unknown batch op {op!r}")

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()
