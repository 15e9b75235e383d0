"""An in-memory store for tests; values are round-tripped through msgpack like LevelDB's."""
from __future__ import annotations

import threading
from typing import Any, Iterable

from cube.store.base import Op, Store, StoreError
from cube.store.base import pack, unpack


class MemoryStore(Store):
    def __init__(self) -> None:
        self._data: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()

    def put(self, ns: str, key: str, value: Any) -> None:
        self.batch([("put", ns, key, value)])

    def get(self, ns: str, key: str) -> Any | None:
        self.check(ns, key)
        with self._lock:
            raw = self._data.get(ns, {}).get(key)
        return None if raw is None else unpack(raw)

    def delete(self, ns: str, key: str) -> None:
        self.batch([("delete", ns, key, None)])

    def list(self, ns: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        self.check(ns)
        with self._lock:
            items = sorted((k, v) for k, v in self._data.get(ns, {}).items() if k.startswith(prefix) and (not after or k > after))
        return [(k, unpack(v)) for k, v in items[:limit]]

    def batch(self, ops: Iterable[Op], term: int = 0) -> None:
        staged = []
        for op, ns, key, value in ops:
            self.check(ns, key)
            if op not in ("put", "delete", "delete_prefix"):
                raise StoreError(f"unknown batch op {op!r}")
            staged.append((op, ns, key, pack(value) if op == "put" else None))
        with self._lock:
            for op, ns, key, raw in staged:
                if op == "put":
                    self._data.setdefault(ns, {})[key] = raw
                elif op == "delete":
                    self._data.get(ns, {}).pop(key, None)
                else:
                    space = self._data.get(ns, {})
                    for k in [k for k in space if k.startswith(key)]:
                        del space[k]
