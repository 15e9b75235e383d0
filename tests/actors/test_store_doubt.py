"""A write to the Store that timed out must have a defined outcome (issue 14, defect D3).

The Store actor runs on its own loop over real ZeroMQ; its backend can be made to hang, which
freezes that loop as a SIGSTOP would. The TaskBook runs on a host actor's loop and talks to the
Store through an AsyncStore, as the Manager's does.

Before the fix, a batch queued behind a frozen Store was applied when the Store resumed although
the TaskBook had already given up on it (and told its caller the task was not created): the Store
held a task the Manager did not know, and the event sequence number it carried was written again
by the next commit.
"""
from __future__ import annotations

import time

import pytest

from cube.manager.taskbook import EVENTS, TASKS, TaskBook
from cube.model.state import State
from cube.model.task import task_from_spec
from cube.store.memory import MemoryStore
from cube.store.remote import RemoteStore
from cube.wire.errors import IN_DOUBT, UNAVAILABLE, CubeError, Unavailable
from tests.actors.helpers import GatedStore, freeze_store, wait_for

CLIENT_TIMEOUT = 1.0  # the host's AsyncStore: the deadline it sends is ~0.75 s away


@pytest.fixture
def rig(actors):
    backend = GatedStore()
    _, endpoint = actors.store(backend)
    host = actors.host(endpoint, timeout=CLIENT_TIMEOUT)
    published = []
    book = TaskBook(host.store, lambda ev, t, _record: published.append((ev.seq, t.id)))
    yield backend, endpoint, host, book, published
    backend.gate.set()  # never leave the Store's loop hanging at teardown


def spec(name: str) -> dict:
    return {"image": "img", "name": name, "id": f"{name}-0000-task"}


def add(host, book, task):
    """(task, existing, error) of book.add, on the host's loop."""
    return host.call(lambda done: book.add(task, "submitted", done))


def settled(host, book) -> None:
    """Wait until no read-back of a doubt is in flight."""
    wait_for(lambda: host.on_loop(lambda: not any(d.resolving for d in book.doubts.values())),
             what="the read-back to end")


def resolve(host, book) -> None:
    host.on_loop(book.resolve_doubts)
    settled(host, book)


def test_a_batch_queued_behind_a_frozen_store_is_not_applied_when_it_resumes(actors, rig):
    backend, endpoint, host, book, published = rig
    reader = freeze_store(backend, endpoint, actors)
    task = task_from_spec(spec("queued"))
    t0 = time.monotonic()
    t, _, err = add(host, book, task)  # queues behind the hanging get; no answer after 1 s
    assert t is None and err.code == IN_DOUBT and time.monotonic() - t0 < 3
    assert "may or may not" in err.message
    assert host.on_loop(lambda: book.get(task.id)) is None

    time.sleep(0.3)  # well past the write's deadline; then the Store resumes with it queued
    backend.gate.set()
    reader.join(5)
    wait_for(lambda: host.call(lambda done: host.store.get(TASKS, "x", done)) == (None, None),
             what="store answers again")

    # The Store and the Manager's memory agree: the task is in neither ...
    assert backend.get(TASKS, task.id) is None, "the Store applied a write its client gave up on"
    resolve(host, book)  # ... also once the TaskBook has re-read what it was unsure of
    assert host.on_loop(lambda: (book.get(task.id), len(book), dict(book.doubts))) == (None, 0, {})
    assert backend.get(TASKS, task.id) is None and published == []

    # A task the user was told may not exist is not loaded by a restarted manager.
    fresh = TaskBook(host.store)
    assert host.call(fresh.load) == (0, None)

    # The next commit takes a new sequence number; none is ever written twice.
    other, _, err = add(host, book, task_from_spec(spec("after")))
    assert err is None and backend.get(TASKS, other.id) is not None
    assert host.on_loop(lambda: book.seq) == 2  # 1 went with the write that was not applied
    assert backend.seq_writes == [2]
    assert [ev["seq"] for _, ev in backend.list(EVENTS)] == [2]


def test_a_batch_frozen_mid_write_is_adopted_once_the_store_answers(actors, rig):
    backend, _, host, book, published = rig
    first, _, err = add(host, book, task_from_spec(spec("first")))
    assert err is None and backend.seq_writes == [1]

    backend.hang_batch = True  # the Store accepts the batch (deadline not passed), then hangs
    task = task_from_spec(spec("doubt"))
    t, _, err = add(host, book, task)
    assert t is None and err.code == IN_DOUBT and "may or may not" in err.message
    assert host.on_loop(lambda: book.get(task.id)) is None  # not adopted: unknown yet

    # While the Store still does not answer, that task's changes wait; nothing is written.
    change = host.later(lambda done: book.commit(task.id, lambda x: x.transition(State.SCHEDULED),
                                                 "placed", done=done))
    settled(host, book)  # the read-back got no answer either
    assert host.on_loop(lambda: (task.id in book.doubts, book.busy(task.id))) == (True, True)
    assert not change.done()
    assert host.on_loop(lambda: (book.get(first.id) is first, book.seq)) == (True, 2)

    backend.gate.set()  # the write completes: the Store holds the task
    wait_for(lambda: backend.get(TASKS, task.id) is not None, what="the hung batch applied")
    resolve(host, book)
    placed, err = change.get()  # the change waited, then applied to the adopted version
    assert err is None and placed.state is State.SCHEDULED
    adopted = host.on_loop(lambda: book.get(task.id))
    assert adopted is placed and adopted.to_dict() == backend.get(TASKS, task.id)
    assert published == [(1, first.id), (2, task.id), (3, task.id)]

    # A retried start of the same id finds it; the next commit takes seq 4.
    again, existing, err = add(host, book, task_from_spec(spec("doubt")))
    assert err is None and existing and again is adopted
    _, err = host.call(lambda done: book.commit(first.id, None, "another change", done=done))
    assert err is None
    assert backend.seq_writes == [1, 2, 3, 4] and host.on_loop(lambda: book.seq) == 4
    assert sorted(ev["seq"] for _, ev in backend.list(EVENTS)) == [1, 2, 3, 4]
    fresh = TaskBook(host.store)
    assert host.call(fresh.load) == (2, None)
    assert fresh.get(task.id) == adopted and fresh.seq == 4


def test_a_write_past_its_deadline_is_refused_and_not_applied(actors):
    backend = MemoryStore()
    _, endpoint = actors.store(backend)
    c = actors.client(endpoint)
    past, future = time.monotonic() - 0.1, time.monotonic() + 30
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
    assert c.call("store.put", {"ns": "tasks", "key": "k", "value": 1, "deadline": int(future)}) == {"applied": 1}


def spy_on_batches(actor) -> list:
    seen = []
    original = actor.on_batch

    def spy(m):
        seen.append(m.body.get("deadline"))
        return original(m)
    actor.on_batch = spy  # dispatch looks the handler up by name on the instance
    return seen


def test_remote_store_sends_a_deadline_within_its_timeout(actors):
    actor, endpoint = actors.store(MemoryStore())
    seen = spy_on_batches(actor)
    rs = RemoteStore(endpoint, name="test", timeout=2.0)
    try:
        sent = time.monotonic()
        rs.batch([("put", "tasks", "a", 1)])
        deadline = seen[0]
        assert deadline is not None and sent + 1.0 < deadline < sent + 2.0 - 0.2
    finally:
        rs.close()


def test_async_store_sends_a_deadline_within_its_timeout(actors):
    actor, endpoint = actors.store(MemoryStore())
    seen = spy_on_batches(actor)
    host = actors.host(endpoint, timeout=2.0)
    sent = time.monotonic()
    assert host.call(lambda done: host.store.batch([("put", "tasks", "a", 1)], done)) == ({"applied": 1}, None)
    assert host.call(lambda done: host.store.put("tasks", "b", 2, done)) == ({"applied": 1}, None)
    deadline = seen[0]
    assert deadline is not None and sent + 1.0 < deadline < sent + 2.0 - 0.2
