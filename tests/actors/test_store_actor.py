"""The Store actor over real ZeroMQ, with each backend, through Client and RemoteStore."""
from __future__ import annotations

import pytest

from cube.store.leveldb import LevelDBStore
from cube.store.memory import MemoryStore
from cube.store.remote import RemoteStore
from cube.wire.errors import CubeError
from tests.actors.helpers import Later


@pytest.fixture(params=["memory", "leveldb"])
def backend(request, tmp_path):
    return MemoryStore() if request.param == "memory" else LevelDBStore(str(tmp_path / "db"))


@pytest.fixture
def store_ep(actors, backend):
    _, endpoint = actors.store(backend)
    return endpoint


def err(call) -> CubeError:
    with pytest.raises(CubeError) as e:
        call()
    return e.value


def test_each_message_gets_the_right_reply(actors, store_ep):
    c = actors.client(store_ep)
    value = {"id": "t1", "nested": [1, 2.5, None, b"\x00", {"k": "v"}]}
    assert c.call("store.put", {"ns": "tasks", "key": "t1", "value": value}) == {"applied": 1}
    assert c.call("store.get", {"ns": "tasks", "key": "t1"}) == {"value": value}
    assert c.call("store.put", {"ns": "tasks", "key": "t2", "value": 2}) == {"applied": 1}
    assert c.call("store.put", {"ns": "events", "key": "t1/1", "value": "e"}) == {"applied": 1}
    assert c.call("store.count", {"ns": "tasks"}) == {"count": 2}
    assert c.call("store.list", {"ns": "tasks"}) == {"items": [["t1", value], ["t2", 2]], "more": False}
    assert c.call("store.list", {"ns": "tasks", "prefix": "t2"})["items"] == [["t2", 2]]
    assert c.call("store.list", {"ns": "tasks", "after": "t1"})["items"] == [["t2", 2]]
    assert c.call("store.list", {"ns": "tasks", "limit": 1}) == {"items": [["t1", value]], "more": True}
    assert c.call("store.list", {"ns": "nothing"}) == {"items": [], "more": False}
    assert c.call("store.delete", {"ns": "tasks", "key": "t2"}) == {"applied": 1}
    assert c.call("store.count", {"ns": "tasks"}) == {"count": 1}
    e = err(lambda: c.call("store.get", {"ns": "tasks", "key": "t2"}))
    assert e.code == "not_found" and "t2" in e.message
    assert c.call("store.batch", {"ops": [
        {"op": "put", "ns": "tasks", "key": "t3", "value": 3},
        {"op": "delete", "ns": "tasks", "key": "t1"}]}) == {"applied": 2}
    assert c.call("store.list", {"ns": "tasks"})["items"] == [["t3", 3]]


def test_refusals(actors, store_ep):
    c = actors.client(store_ep)
    c.call("store.put", {"ns": "tasks", "key": "keep", "value": "old"})
    e = err(lambda: c.call("store.batch", {"ops": [
        {"op": "put", "ns": "tasks", "key": "keep", "value": "new"},
        {"op": "explode", "ns": "tasks", "key": "x"}]}))
    assert e.code == "bad_request" and "op 1" in e.message
    e = err(lambda: c.call("store.batch", {"ops": [
        {"op": "put", "ns": "tasks", "key": "keep", "value": "new"},
        {"op": "put", "ns": "tasks", "key": "nul\x00"}]}))
    assert e.code == "bad_request"
    assert c.call("store.get", {"ns": "tasks", "key": "keep"}) == {"value": "old"}  # nothing applied
    assert err(lambda: c.call("store.put", {"ns": "", "key": "k", "value": 1})).code == "bad_request"
    assert err(lambda: c.call("store.get", {"ns": "tasks"})).code == "bad_body"
    assert err(lambda: c.call("store.put", {"ns": "tasks", "key": 5, "value": 1})).code == "bad_body"
    assert err(lambda: c.call("task.ls", {})).code == "unknown_type"  # not on this socket
    assert c.call("store.count", {"ns": "tasks"}) == {"count": 1}


def test_remote_store_implements_the_interface(actors, store_ep):
    rs = RemoteStore(store_ep, name="test", timeout=3.0)
    try:
        assert rs.get("tasks", "missing") is None
        rs.put("tasks", "a", {"x": [1, 2]})
        rs.batch([("put", "tasks", "b", 2), ("put", "events", "a/1", "e"), ("put", "meta", "seq", 1)])
        assert rs.get("tasks", "a") == {"x": [1, 2]}
        assert rs.list("tasks") == [("a", {"x": [1, 2]}), ("b", 2)]
        assert rs.list("events", prefix="a/") == [("a/1", "e")]
        assert rs.count("tasks") == 2
        rs.delete("tasks", "a")
        assert rs.get("tasks", "a") is None and rs.count("tasks") == 1
        with pytest.raises(CubeError):
            rs.batch([("put", "tasks", "c", 3), ("burn", "tasks", "b", None)])
        assert rs.get("tasks", "c") is None and rs.get("tasks", "b") == 2
    finally:
        rs.close()


def test_async_store_drives_a_taskbook(actors, store_ep):
    from cube.manager.taskbook import TaskBook
    from cube.model.task import task_from_spec
    host = actors.host(store_ep, timeout=3.0)
    book = TaskBook(host.store)
    t, existing, error = host.call(lambda done: book.add(task_from_spec({"image": "img", "name": "web"}),
                                                         "submitted", done))
    assert error is None and not existing
    again = TaskBook(host.store)
    assert host.call(again.load) == (1, None)
    assert again.get(t.id) == t and again.seq == 1
    events, error = host.call(lambda done: again.events(t.id, done))
    assert error is None and [e["state"] for e in events] == ["Pending"]


def test_async_store_implements_its_interface(actors, store_ep):
    host = actors.host(store_ep, timeout=3.0)
    s = host.store
    assert host.call(lambda done: s.get("tasks", "missing", done)) == (None, None)
    assert host.call(lambda done: s.put("tasks", "a", {"x": [1, 2]}, done)) == ({"applied": 1}, None)
    assert host.call(lambda done: s.batch([("put", "tasks", "b", 2), ("put", "events", "a/1", "e"),
                                           ("put", "events", "ab/1", "f")], done)) == ({"applied": 3}, None)
    assert host.call(lambda done: s.get("tasks", "a", done)) == ({"x": [1, 2]}, None)
    assert host.call(lambda done: s.list_all("tasks", done)) == ([("a", {"x": [1, 2]}), ("b", 2)], None)
    assert host.call(lambda done: s.list_all("events", done, prefix="a/")) == ([("a/1", "e")], None)
    page, error = host.call(lambda done: s.list_page("tasks", done, limit=1))
    assert error is None and page == {"items": [["a", {"x": [1, 2]}]], "more": True}
    page, _ = host.call(lambda done: s.list_page("tasks", done, after="a"))
    assert page == {"items": [["b", 2]], "more": False}
    # delete_prefix: a task's events, not those of a task whose id merely starts the same
    assert host.call(lambda done: s.batch([("delete", "tasks", "a", None),
                                           ("delete_prefix", "events", "a/", None)], done))[1] is None
    assert host.call(lambda done: s.list_all("events", done)) == ([("ab/1", "f")], None)
    _, error = host.call(lambda done: s.batch([("put", "tasks", "c", 3), ("burn", "tasks", "b", None)], done))
    assert error is not None and error.code == "bad_request"
    assert host.call(lambda done: s.get("tasks", "c", done)) == (None, None)
    assert host.call(lambda done: s.get("tasks", "b", done)) == (2, None)


def test_async_store_lists_a_namespace_larger_than_a_page(actors):
    backend = MemoryStore()
    backend.batch([("put", "tasks", f"t{i:05d}", i) for i in range(2500)])
    _, endpoint = actors.store(backend)
    host = actors.host(endpoint, timeout=3.0)
    items, error = host.call(lambda done: host.store.list_all("tasks", done))
    assert error is None and [k for k, _ in items] == [f"t{i:05d}" for i in range(2500)]


def test_leveldb_store_actor_closes_its_database_on_stop(actors, tmp_path):
    path = str(tmp_path / "db2")
    actor, endpoint = actors.store(LevelDBStore(path))
    actors.client(endpoint).call("store.put", {"ns": "tasks", "key": "k", "value": "persisted"})
    actors.stop(actor)
    reopened = LevelDBStore(path)  # would fail with StoreError if the lock were still held
    try:
        assert reopened.get("tasks", "k") == "persisted"
    finally:
        reopened.close()


# Regression: store.list used to answer in one frame, undecodable past codec.MAX_FRAME (1 MiB,
# ~1,500 tasks): RemoteStore.list -> Unavailable and Manager.start() looped forever.
def test_listing_a_namespace_larger_than_one_frame(actors):
    backend = MemoryStore()
    backend.batch([("put", "tasks", f"t{i:05d}", {"blob": "x" * 1000}) for i in range(1200)])
    backend.put("other", "t99999", "not in tasks")
    _, endpoint = actors.store(backend)
    page = actors.client(endpoint, timeout=2.0).call("store.list", {"ns": "tasks"})
    assert page["more"] is True and 0 < len(page["items"]) < 1200  # one page, within a frame
    rs = RemoteStore(endpoint, name="test", timeout=3.0)
    try:
        items = rs.list("tasks")
        assert [k for k, _ in items] == [f"t{i:05d}" for i in range(1200)]
        assert len(rs.list("tasks", prefix="t011")) == 100
    finally:
        rs.close()


# Review of issue 8: the Manager sends the writes of one loop turn as one request; one bad write
# (a key the Store refuses) must fail alone, not take the others down with it.
def test_coalesced_writes_with_one_bad_write_fail_alone(actors):
    backend = MemoryStore()
    _, endpoint = actors.store(backend)
    host = actors.host(endpoint)
    answers = [Later() for _ in range(3)]

    def three() -> None:
        host.store.batch([("put", "tasks", "good-1", 1)], answers[0])
        host.store.batch([("put", "tasks", "bad\x00key", 2)], answers[1])
        host.store.batch([("put", "tasks", "good-2", 3)], answers[2])
    host.on_loop(three)
    results = [a.get(5.0) for a in answers]
    assert results[0][1] is None and results[2][1] is None
    assert results[1][1] is not None and results[1][1].code == "bad_request"
    assert backend.get("tasks", "good-1") == 1 and backend.get("tasks", "good-2") == 3


def test_a_request_that_cannot_be_encoded_is_refused_not_left_waiting(actors):
    _, endpoint = actors.store(MemoryStore())
    host = actors.host(endpoint)
    result, error = host.call(lambda done: host.store.batch([("put", "tasks", "k", {1, 2})], done))  # a set
    assert result is None and error.code == "bad_request" and "could not be sent" in error.message
