"""The Store interface, served by the Store actor over ZeroMQ (what the Manager uses).

Every write carries a deadline a little short of the client's timeout (base.write_deadline): the
Store refuses a write it gets to later, so a write whose client stopped waiting is not applied
when a frozen Store resumes. A write that got no answer (Unavailable) was therefore either applied
before its deadline or never will be; once the Store answers anything again, reading it back says
which (the Store handles one request at a time).
"""
from __future__ import annotations

from typing import Any, Iterable

from cube.messages import store as msg
from cube.store.base import Op, Store, write_deadline
from cube.wire.client import Client
from cube.wire.errors import NOT_FOUND, CubeError


class RemoteStore(Store):
    def __init__(self, endpoint: str, name: str = "manager", timeout: float = 2.0):
        self.client = Client(endpoint, name=name, timeout=timeout)

    def _write(self, msg_type: str, body: dict[str, Any]) -> None:
        timeout = self.client.timeout
        body["deadline"] = write_deadline(timeout)
        self.client.call(msg_type, body, timeout=timeout)

    def put(self, ns: str, key: str, value: Any) -> None:
        self._write(msg.PUT, {"ns": ns, "key": key, "value": value})

    def get(self, ns: str, key: str) -> Any | None:
        try:
            return self.client.call(msg.GET, {"ns": ns, "key": key})["value"]
        except CubeError as e:
            if e.code == NOT_FOUND:
                return None
            raise

    def delete(self, ns: str, key: str) -> None:
        self._write(msg.DELETE, {"ns": ns, "key": key})

    def list(self, ns: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while limit is None or len(out) < limit:
            reply = self.client.call(msg.LIST, {"ns": ns, "prefix": prefix, "after": after}, timeout=10.0)
            out.extend((k, v) for k, v in reply["items"])
            if not reply.get("more") or not reply["items"]:
                break
            after = out[-1][0]
        return out[:limit]

    def count(self, ns: str) -> int:
        return self.client.call(msg.COUNT, {"ns": ns})["count"]

    def batch(self, ops: Iterable[Op], term: int = 0) -> None:
        body: dict = {"ops": [{"op": o, "ns": n, "key": k, "value": v} for o, n, k, v in ops]}
        if term:
            body["term"] = term
        self._write(msg.BATCH, body)

    def close(self) -> None:
        self.client.close()
