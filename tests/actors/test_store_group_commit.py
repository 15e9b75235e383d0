"""The Store actor's group commit over real ZeroMQ: writes read in one pass over the socket are
applied as one synced batch and each acknowledged after it; reads see every write before them; a
write that is bad or expired fails alone."""
from __future__ import annotations

import time

import pytest

from cube.actors.store import StoreActor
from cube.messages import store as msg
from cube.store.memory import MemoryStore
from cube.wire.envelope import REPLY_OK, Envelope
from cube.wire.errors import BAD_REQUEST, UNAVAILABLE
from tests.actors.helpers import GatedStore, envelope, free_ports, freeze_store, recv_env, tcp
from tests.unit.fakes import FakeSock

N = 50


@pytest.fixture
def rig(actors):
    backend = GatedStore()
    actor, endpoint = actors.store(backend)
    yield actor, backend, endpoint
    backend.gate.set()


def batch(*ops, deadline: float | None = None) -> Envelope:
    body = {"ops": [{"op": o, "ns": n, "key": k, "value": v} for o, n, k, v in ops]}
    if deadline is not None:
        body["deadline"] = deadline
    return envelope(msg.BATCH, body)


def send_frozen(actors, backend, endpoint, envs: list[Envelope]):
    """Send `envs` back to back from one DEALER while the Store is frozen, then let it go:
    they are all read in one pass. Returns the DEALER."""
    reader = freeze_store(backend, endpoint, actors)
    sock = actors.dealer(endpoint)
    for e in envs:
        sock.send(e.encode())
    time.sleep(0.3)  # all of them are in the Store's socket by now
    backend.gate.set()
    reader.join(5)
    return sock


def replies(sock, n: int) -> list[Envelope]:
    return [recv_env(sock, timeout=5) for _ in range(n)]


def test_writes_sent_back_to_back_are_applied_in_few_synced_groups(actors, rig):
    actor, backend, endpoint = rig
    groups, batches = actor.groups, backend.batches
    envs = [batch(("put", "tasks", f"k{i:03d}", i), ("put", "meta", "last", i)) for i in range(N)]
    sock = send_frozen(actors, backend, endpoint, envs)
    got = replies(sock, N)
    assert [r.re for r in got] == [e.id for e in envs]  # every one acknowledged, in order
    assert all(r.type == REPLY_OK and r.body == {"applied": 2} for r in got)
    assert 1 <= actor.groups - groups <= 3 < N  # one pass over the socket: one group (or so)
    assert backend.batches - batches == actor.groups - groups  # one synced write per group
    assert backend.get("meta", "last") == N - 1  # applied in the order sent
    assert [k for k, _ in backend.list("tasks")] == [f"k{i:03d}" for i in range(N)]


def test_writes_sent_back_to_back_without_a_freeze_are_all_applied_in_order(actors, rig):
    actor, backend, endpoint = rig
    groups = actor.groups
    sock = actors.dealer(endpoint)
    envs = [batch(("put", "meta", "last", i)) for i in range(N)]
    for e in envs:
        sock.send(e.encode())
    got = replies(sock, N)
    assert [r.re for r in got] == [e.id for e in envs] and all(r.type == REPLY_OK for r in got)
    assert backend.get("meta", "last") == N - 1
    assert actor.groups - groups <= N


def test_a_read_after_writes_sees_them(actors, rig):
    _, _, endpoint = rig
    sock = actors.dealer(endpoint)
    writes = [batch(("put", "tasks", f"k{i}", i)) for i in range(10)]
    get = envelope(msg.GET, {"ns": "tasks", "key": "k9"})
    count = envelope(msg.COUNT, {"ns": "tasks"})
    listing = envelope(msg.LIST, {"ns": "tasks", "prefix": "k1"})
    for e in [*writes, get, batch(("delete", "tasks", "k9", None)), count, listing]:
        sock.send(e.encode())  # without waiting for any answer
    got = replies(sock, 14)
    by_id = {r.re: r for r in got}
    assert by_id[get.id].body == {"value": 9}
    assert by_id[count.id].body == {"count": 9}  # the delete sent before it, too
    assert by_id[listing.id].body["items"] == [["k1", 1]]
    # the writes are acknowledged before the read that flushed them is answered
    order = [r.re for r in got]
    assert max(order.index(w.id) for w in writes) < order.index(get.id)


def test_one_bad_write_in_a_group_fails_only_itself(actors, rig):
    _, backend, endpoint = rig
    good = [batch(("put", "tasks", f"g{i}", i)) for i in range(4)]
    bad_key = batch(("put", "tasks", "nul\x00", 1))  # refused as it arrives
    poisoned = batch(("put", "tasks", "p", "poison"))  # the backend refuses the group it is in
    envs = [good[0], bad_key, good[1], poisoned, good[2], good[3]]
    sock = send_frozen(actors, backend, endpoint, envs)
    by_id = {r.re: r for r in replies(sock, len(envs))}
    assert by_id[bad_key.id].body["code"] == BAD_REQUEST
    assert by_id[poisoned.id].body["code"] == BAD_REQUEST and "poison" in by_id[poisoned.id].body["message"]
    assert all(by_id[e.id].type == REPLY_OK and by_id[e.id].body == {"applied": 1} for e in good)
    assert [k for k, _ in backend.list("tasks")] == ["g0", "g1", "g2", "g3"]
    # The Store goes on grouping afterwards.
    after = [batch(("put", "meta", "n", i)) for i in range(5)]
    for e in after:
        sock.send(e.encode())
    assert all(r.type == REPLY_OK for r in replies(sock, 5)) and backend.get("meta", "n") == 4


def test_an_expired_write_is_refused_while_the_others_apply(actors, rig):
    actor, backend, endpoint = rig
    groups = actor.groups
    far = time.monotonic() + 30
    a = batch(("put", "tasks", "a", 1), deadline=far)
    late = batch(("put", "tasks", "late", 1), deadline=time.monotonic() + 0.1)  # passes while frozen
    c = batch(("put", "tasks", "c", 1), deadline=far)
    sock = send_frozen(actors, backend, endpoint, [a, late, c])
    by_id = {r.re: r for r in replies(sock, 3)}
    assert by_id[late.id].body["code"] == UNAVAILABLE and "not applied" in by_id[late.id].body["message"]
    assert by_id[a.id].type == REPLY_OK and by_id[c.id].type == REPLY_OK
    assert backend.get("tasks", "late") is None and backend.get("tasks", "a") == 1
    assert actor.groups - groups == 1


def test_a_write_that_expires_while_queued_for_its_group_is_refused():
    """The deadline is checked again when the group is written (the loop may have been held up)."""
    backend = MemoryStore()
    actor = StoreActor(backend, tcp(free_ports(1)[0]))
    try:
        sock = FakeSock()
        soon = batch(("put", "tasks", "soon", 1), deadline=time.monotonic() + 0.05)
        fine = batch(("put", "tasks", "fine", 1), deadline=time.monotonic() + 30)
        for e in (soon, fine):
            actor.receive(sock, [b"peer", e.encode()], msg.ALL)
        assert sock.sent == []  # queued for the group, not answered yet
        time.sleep(0.1)
        actor.flush()
        by_id = {r.re: r for r in sock.replies()}
        assert by_id[soon.id].body["code"] == UNAVAILABLE
        assert by_id[fine.id].body == {"applied": 1}
        assert backend.get("tasks", "soon") is None and backend.get("tasks", "fine") == 1
        assert actor.groups == 1
        actor.flush()  # nothing queued: nothing written
        assert actor.groups == 1
    finally:
        actor.loop.drain()
        actor.loop.close()
        actor.loop.ctx.destroy(linger=0)
