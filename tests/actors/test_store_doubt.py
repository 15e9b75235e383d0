"""A write to the Store that timed out must have a defined outcome (issue 14, defect D3).

The Store actor runs on its own loop over real ZeroMQ; its backend can be made to hang, which
freezes that loop as a SIGSTOP would. The Manager's TaskBook talks to it through RemoteStore.

Before the fix, a batch queued behind a frozen Store was applied when the Store resumed although
the TaskBook had already given up on it (and told its caller the task was not created): the Store
held a task the Manager did not know, and the event sequence number it carried was written again
by the next commit.
"""
from __future__ import annotations

import threading
import time

import pytest

from cube.control.taskbook import EVENTS, META, TASKS, TaskBook
from cube.model.task import task_from_spec
from cube.store.memory import MemoryStore
from cube.store.remote import RemoteStore
from cube.wire.client import Client
from cube.wire.errors import UNAVAILABLE, CubeError, Unavailable
from tests.actors.helpers import wait_for

CLIENT_TIMEOUT = 1.0  # the TaskBook's RemoteStore: the deadline it sends is ~0.75 s away


class GatedStore(MemoryStore):
    """A MemoryStore whose next `get` (or next `batch`, once entered) hangs until `gate` is set:
    the Store actor's loop hangs with it, like a frozen process. Records every write of the event
    sequence number."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hang_get = False
        self.hang_batch = False
        self.seq_writes: list[int] = []

    def _hang(self) -> None:
        self.entered.set()
        self.gate.wait(10)

    def get(self, ns, key):
        if self.hang_get:
            self.hang_get = False
            self._hang()
        return super().get(ns, key)

    def batch(self, ops):
        ops = list(ops)
        if self.hang_batch:  # the deadline was checked already: this is the residual window
            self.hang_batch = False
            self._hang()
        super().batch(ops)
        self.seq_writes += [v for op, ns, key, v in ops if (op, ns, key) == ("put", META, "event_seq")]


@pytest.fixture
def rig(actors):
    backend = GatedStore()
    _, endpoint = actors.store(backend)
    rs = RemoteStore(endpoint, name="manager", timeout=CLIENT_TIMEOUT)
    published = []
    book = TaskBook(rs, lambda ev, t: published.append((ev.seq, t.id)))
    yield backend, endpoint, rs, book, published
    backend.gate.set()  # never leave the Store's loop hanging at teardown
    rs.close()


def spec(name: str) -> dict:
    return {"image": "img", "name": name, "id": f"{name}-0000-task"}


def freeze_store(backend: GatedStore, endpoint: str, actors) -> threading.Thread:
    """Hang the Store's loop on a get from another client, so what follows queues behind it."""
    backend.hang_get = True
    other = Client(endpoint, name="other", timeout=10.0, ctx=actors.ctx)

    def read() -> None:
        try:
            other.call("store.get", {"ns": "tasks", "key": "anything"})
        except CubeError:
            pass
        finally:
            other.close()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert backend.entered.wait(5), "the Store never started the hanging get"
    return t


def test_a_batch_queued_behind_a_frozen_store_is_not_applied_when_it_resumes(actors, rig):
    backend, endpoint, rs, book, published = rig
    reader = freeze_store(backend, endpoint, actors)
    task = task_from_spec(spec("queued"))
    t0 = time.monotonic()
    with pytest.raises(CubeError) as err:
        book.add(task)  # queues behind the hanging get; the client gives up after 1 s
    assert err.value.code == UNAVAILABLE and time.monotonic() - t0 < 3
    assert book.get(task.id) is None

    time.sleep(0.3)  # well past the write's deadline; then the Store resumes with it queued
    backend.gate.set()
    reader.join(5)
    wait_for(lambda: rs.count(TASKS) is not None, what="store answers again")
    time.sleep(0.2)  # whatever was queued has been handled by now (one loop, in order)

    # The Store and the Manager's memory agree: the task is in neither ...
    assert backend.get(TASKS, task.id) is None, "the Store applied a write its client gave up on"
    assert book.get(task.id) is None
    book.resolve_doubt()  # ... also once the TaskBook has re-read what it was unsure of
    assert book.get(task.id) is None and len(book) == 0 and backend.get(TASKS, task.id) is None
    assert published == []

    # A task the user was told failed is not loaded by a restarted manager.
    assert TaskBook(rs).load() == 0

    # The next commit takes the sequence number; none is ever written twice.
    other = book.add(task_from_spec(spec("after")))
    assert backend.get(TASKS, other.id) is not None and book.seq == 1
    assert backend.seq_writes == [1]
    assert [ev["seq"] for _, ev in backend.list(EVENTS)] == [1]


def test_a_batch_frozen_mid_write_is_adopted_once_the_store_answers(actors, rig):
    backend, endpoint, rs, book, published = rig
    first = book.add(task_from_spec(spec("first")))
    assert backend.seq_writes == [1]

    backend.hang_batch = True  # the Store accepts the batch (deadline not passed), then hangs
    task = task_from_spec(spec("doubt"))
    with pytest.raises(CubeError) as err:
        book.add(task)
    assert err.value.code == UNAVAILABLE and "may or may not" in err.value.message
    assert book.get(task.id) is None  # not adopted: unknown yet

    # While the Store still does not answer, nothing else is written (it could reuse seq 2).
    with pytest.raises(CubeError) as err:
        book.commit(first, None, "another change")
    assert err.value.code == UNAVAILABLE
    assert book.resolve_doubt() is False  # still unknown
    assert book.get(first.id) is first and book.seq == 1

    backend.gate.set()  # the write completes: the Store holds the task
    wait_for(lambda: backend.get(TASKS, task.id) is not None, what="the hung batch applied")
    assert book.resolve_doubt() is True
    adopted = book.get(task.id)
    assert adopted is not None and adopted.to_dict() == backend.get(TASKS, task.id)
    assert book.seq == 2 and published == [(1, first.id), (2, task.id)]

    # A retried start of the same id finds it; the next commit takes seq 3.
    assert book.add(task_from_spec(spec("doubt"))) is adopted
    book.commit(first, None, "another change")
    assert backend.seq_writes == [1, 2, 3] and book.seq == 3
    assert sorted(ev["seq"] for _, ev in backend.list(EVENTS)) == [1, 2, 3]
    fresh = TaskBook(rs)
    assert fresh.load() == 2 and fresh.get(task.id) == adopted and fresh.seq == 3


def test_a_write_past_its_deadline_is_refused_and_not_applied(actors):
    backend = MemoryStore()
    _, endpoint = actors.store(backend)
    c = actors.client(endpoint)
    past, future = time.time() - 0.1, time.time() + 30
    for msg_type, body in [
        ("store.put", {"ns": "tasks", "key": "k", "value": 1}),
        ("store.delete", {"ns": "tasks", "key": "keep"}),
        ("store.batch", {"ops": [{"op": "put", "ns": "tasks", "key": "k", "value": 1}]}),
    ]:
        backend.put("tasks", "keep", "old")
        with pytest.raises(CubeError) as err:
            c.call(msg_type, {**body, "deadline": past})
        assert err.value.code == UNAVAILABLE and not isinstance(err.value, Unavailable)
        assert "not applied" in err.value.message
        assert backend.get("tasks", "k") is None and backend.get("tasks", "keep") == "old"
        c.call(msg_type, {**body, "deadline": future})  # in time: applied
        c.call(msg_type, body)  # no deadline (an older client): applied
        backend.delete("tasks", "k")
    with pytest.raises(CubeError) as err:
        c.call("store.put", {"ns": "tasks", "key": "k", "value": 1, "deadline": "soon"})
    assert err.value.code == "bad_body" and "deadline" in err.value.message
    assert c.call("store.put", {"ns": "tasks", "key": "k", "value": 1, "deadline": int(future)}) == {}


def test_remote_store_sends_a_deadline_within_its_timeout(actors):
    seen = []
    actor, endpoint = actors.store(MemoryStore())
    original = actor.on_store_batch

    def spy(m):
        seen.append((m.body.get("deadline"), time.time()))
        return original(m)
    actor.on_store_batch = spy
    rs = RemoteStore(endpoint, name="test", timeout=2.0)
    try:
        sent = time.time()
        rs.batch([("put", "tasks", "a", 1)])
        deadline, _ = seen[0]
        assert deadline is not None and sent + 1.0 < deadline < sent + 2.0 - 0.2
    finally:
        rs.close()
