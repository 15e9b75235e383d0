"""Fakes for unit tests of the Manager's asynchronous parts, without threads or sockets.

`FakeStore` has the interface of `cube.manager.storage.AsyncStore` (`batch`, `put`, `get`,
`list_all`) over a MemoryStore, but answers nothing by itself: every request waits in `pending`
until the test releases it, in order (`flush`, `answer`) or one by one (`next()` then `.answer()`,
`.lose()`, `.refuse()`, `.fail()`). So what is in flight, and in which order answers come, is
decided by the test.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from cube.store.base import Op, StoreError
from cube.store.memory import MemoryStore
from cube.wire.envelope import Envelope, decode
from cube.wire.errors import BAD_REQUEST, UNAVAILABLE, CubeError, Unavailable

META = "meta"


@dataclass
class Request:
    store: "FakeStore"
    kind: str  # "batch" | "get" | "list"
    args: tuple
    done: Callable[[Any, CubeError | None], None]
    answered: bool = field(default=False)

    @property
    def ops(self) -> list[Op]:
        assert self.kind == "batch", self
        return self.args[0]

    def _take(self) -> None:
        assert not self.answered, f"{self.kind} answered twice"
        self.answered = True
        if self in self.store.pending:
            self.store.pending.remove(self)

    def answer(self) -> None:
        """As the Store actor would: apply the write (or read) now, then reply."""
        self._take()
        if self.kind == "batch":
            try:
                self.store.apply(self.ops)
            except StoreError as e:
                self.done(None, CubeError(BAD_REQUEST, str(e)))
                return
            self.done({"applied": len(self.ops)}, None)
        elif self.kind == "get":
            self.done(self.store.backend.get(*self.args), None)
        elif self.kind == "page":  # one page of a list, as the Store actor answers store.list
            ns, prefix, after, limit = self.args
            items = self.store.backend.list(ns, prefix, after, limit + 1)
            self.done({"items": items[:limit], "more": len(items) > limit}, None)
        else:
            ns, prefix = self.args
            self.done(self.store.backend.list(ns, prefix), None)

    def lose(self, applied: bool = False) -> None:
        """No answer in time: the client gives up (Unavailable). A write may have been applied."""
        self._take()
        if applied and self.kind == "batch":
            self.store.apply(self.ops)
        self.done(None, Unavailable(f"the store did not answer {self.kind} within 2s"))

    def refuse(self, message: str = "store.batch expired before the store got to it: the write was not applied") -> None:
        """An error reply with code `unavailable`: refused, definitely not applied."""
        self.fail(CubeError(UNAVAILABLE, message))

    def fail(self, error: CubeError) -> None:
        """Any error reply: nothing applied."""
        self._take()
        self.done(None, error)


class FakeStore:
    def __init__(self, backend: MemoryStore | None = None):
        self.backend = backend if backend is not None else MemoryStore()
        self.pending: collections.deque[Request] = collections.deque()
        self.requests: list[Request] = []  # every request, in the order asked
        self.seq_writes: list[int] = []  # every event_seq applied, in order

    # ---- the AsyncStore interface ---------------------------------------------------------------
    def batch(self, ops: list[Op], done: Callable[[Any, CubeError | None], None], solo: bool = False) -> None:
        self._ask("batch", (list(ops),), done)

    def put(self, ns: str, key: str, value: Any, done: Callable[[Any, CubeError | None], None]) -> None:
        self._ask("batch", ([("put", ns, key, value)],), done)

    def get(self, ns: str, key: str, done: Callable[[Any, CubeError | None], None]) -> None:
        self._ask("get", (ns, key), done)

    def list_all(self, ns: str, done: Callable[[Any, CubeError | None], None], prefix: str = "") -> None:
        self._ask("list", (ns, prefix), done)

    def list_page(self, ns: str, done: Callable[[Any, CubeError | None], None], prefix: str = "", after: str = "",
                  limit: int = 1000) -> None:
        self._ask("page", (ns, prefix, after, limit), done)

    # ---- the test's side ----------------------------------------------------------------------------
    def _ask(self, kind: str, args: tuple, done: Callable[[Any, CubeError | None], None]) -> None:
        r = Request(self, kind, args, done)
        self.pending.append(r)
        self.requests.append(r)

    def apply(self, ops: list[Op]) -> None:
        self.backend.batch(ops)
        self.seq_writes += [v for op, ns, key, v in ops if (op, ns, key) == ("put", META, "event_seq")]

    def next(self, kind: str | None = None) -> Request:
        """The oldest request not answered yet (of `kind`, which must be the oldest's)."""
        assert self.pending, "no request is waiting for the store"
        r = self.pending[0]
        assert kind is None or r.kind == kind, f"expected a {kind}, the oldest request is {r.kind} {r.args}"
        return r

    def kinds(self) -> list[str]:
        return [r.kind for r in self.pending]

    def answer(self, n: int = 1) -> None:
        """Answer the `n` oldest requests, in order."""
        for _ in range(n):
            self.next().answer()

    def flush(self, limit: int = 10_000) -> int:
        """Answer every request in order, also those the answers cause; returns how many."""
        count = 0
        while self.pending:
            assert count < limit, "the store never runs out of requests"
            self.next().answer()
            count += 1
        return count


class Calls:
    """A `done` callback that records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)

    def __bool__(self) -> bool:
        return bool(self.calls)

    def one(self) -> tuple:
        assert len(self.calls) == 1, f"called {len(self.calls)} times: {self.calls}"
        return self.calls[0]


# ---- a TaskBook driven to completion (every store request answered, in order) -----------------

def add(book: Any, task: Any, reason: str = "submitted") -> Any:
    """`book.add`, the store answering everything; the task (an error is raised)."""
    got = Calls()
    book.add(task, reason, got)
    book.store.flush()
    t, _, error = got.one()
    if error is not None:
        raise error
    return t


def commit(book: Any, task_id: str, change: Callable[[Any], None] | None = None, reason: str = "",
           event: bool = True) -> Any:
    """`book.commit`, the store answering everything; the task as committed (an error is raised)."""
    got = Calls()
    book.commit(task_id, change, reason, event, got)
    book.store.flush()
    t, error = got.one()
    if error is not None:
        raise error
    return t


def events(book: Any, task_id: str) -> list[dict[str, Any]]:
    got = Calls()
    book.events(task_id, got)
    book.store.flush()
    evs, error = got.one()
    if error is not None:
        raise error
    return evs


def load(book: Any) -> int:
    got = Calls()
    book.load(got)
    book.store.flush()
    count, error = got.one()
    if error is not None:
        raise error
    return count


class FakeSock:
    """Enough of a ROUTER socket for Actor.receive and Actor.send: what is sent is kept."""

    type = zmq.ROUTER
    closed = False

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)

    def replies(self) -> list[Envelope]:
        return [decode(f[-1]) for f in self.sent]
