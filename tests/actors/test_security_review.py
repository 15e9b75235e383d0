"""Holes a review found in the first cut of security (docs/security.md), each closed: forged
replies, the address pin, a removed name rejoining, credentials revocation, refusal logs, and
replies a client never reads."""
from __future__ import annotations

import logging

import pytest
import zmq

from cube.messages import node as node_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.runtime.fake import FakeRuntime
from cube.wire.actor import Actor
from cube.wire.client import Refused
from cube.wire.envelope import Envelope
from cube.wire.errors import CubeError
from cube.wire.loop import Loop
from tests.actors.helpers import wait_for
from tests.actors.test_security import hello_body, reply_to, request, secure, secure_sched  # noqa: F401


def test_a_reply_from_another_socket_or_peer_is_not_an_answer():
    """An actor's request is answered only on the socket it went out on, by the peer it went to."""
    loop = Loop("t")
    actor = Actor("a", loop)
    ctx = loop.ctx
    server = ctx.socket(zmq.ROUTER)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    up = ctx.socket(zmq.DEALER)
    up.connect(f"tcp://127.0.0.1:{port}")
    other = ctx.socket(zmq.ROUTER)
    answers = []
    try:
        env = Envelope("sched.nodes", {})
        actor.request(up, env, answers.append, timeout=5.0)
        route, frame = server.recv_multipart()
        forged = env.reply({"forged": True})
        actor.receive(other, [b"evil", forged.encode()])  # another socket
        assert answers == [] and actor.stats["forged_replies"] == 1
        actor.receive(up, [env.reply({"real": True}).encode()])  # the way it went
        assert [a.body for a in answers] == [{"real": True}]
    finally:
        for s in (server, up, other):
            s.close(linger=0)
        loop.close()
        ctx.destroy(linger=0)


def test_a_worker_must_join_with_a_name_and_an_address_and_keep_that_address(secure_sched):
    s = secure_sched
    for name, address in (("", "127.0.0.1"), ("w9", ""), ("bad name", "127.0.0.1"), ("w9", "a b")):
        sock = s.dealer(curve=s.stranger())
        join = request(sock, worker_msg.JOIN, {"name": name, "address": address, "secret": s.authority.token.secret})
        reply = reply_to(sock, join)
        assert reply is not None and reply.type == "error", (name, address, reply)
    s.worker("w1", FakeRuntime())
    s.wait_ready("w1")
    # the same key, now saying it is elsewhere (e.g. to turn health probes on another host)
    key = s.authority.keyring.workers["w1"]
    assert s.authority.keyring.addresses["w1"] == "127.0.0.1"
    from cube.security import keys
    from cube.security.curve import CurveClient
    pair = keys.load_or_create(str(s.tmp_path / "worker-w1"), "worker")
    assert pair.public_text == key
    twin = s.dealer(curve=CurveClient(pair, s.server_key))
    hello = request(twin, worker_msg.HELLO, {**hello_body("w1"), "address": "169.254.169.254"})
    reply = reply_to(twin, hello)
    assert reply is not None and reply.body["code"] == "forbidden" and "joined with address 127.0.0.1" in \
        reply.body["message"]
    assert s.manager.registry.get("w1").address == "127.0.0.1"


def test_credentials_can_be_listed_and_revoked(secure):
    ro = secure.authority.issue("dash", "read-only")
    client = secure.client(ro.curve())
    assert client.call(node_msg.LIST, {})["nodes"] == []
    listed = secure.admin.call(node_msg.CREDENTIALS_LIST, {})["credentials"]
    assert {(c["name"], c["role"]) for c in listed} == {("admin", "admin"), ("dash", "read-only")}
    assert all(len(c["key"]) == 8 for c in listed)  # a hint, never a whole key
    assert secure.admin.call(node_msg.CREDENTIALS_REVOKE, {"name": "dash"}) == {"name": "dash", "revoked": 1}
    with pytest.raises(CubeError) as e:  # the open connection: refused per message
        client.call(node_msg.LIST, {})
    assert e.value.code == "forbidden"
    fresh = secure.client(ro.curve())  # a new connection: refused at handshake
    with pytest.raises(Refused):
        fresh.call(node_msg.LIST, {})
    with pytest.raises(CubeError) as e:
        secure.admin.call(node_msg.CREDENTIALS_REVOKE, {"name": "admin"})
    assert e.value.code == "conflict" and "last admin" in e.value.message


def test_refusals_do_not_flood_the_log(secure, caplog):
    ro = secure.client(secure.authority.issue("ro", "read-only").curve())
    with caplog.at_level(logging.INFO):
        for _ in range(60):
            with pytest.raises(CubeError):
                ro.call(task_msg.START, {"task": {"image": "img:1"}})
            with pytest.raises(CubeError):
                secure.admin.call(task_msg.INSPECT, {"id": "no-such-task"})
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) <= 20, f"{len(lines)} log lines for 120 refusals"


def test_a_client_that_never_reads_cannot_pin_the_managers_memory(secure):
    big = secure.admin.call(task_msg.START, {"task": {"image": "img:1", "env": {"BLOB": "x" * 60_000}}})["task"]
    sock = secure.dealer(curve=secure.admin_creds.curve(), endpoint=secure.api_endpoint)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    for _ in range(1000):  # 1,000 replies of 60 KB: 60 MB, far beyond any socket buffers, if all were kept
        request(sock, task_msg.INSPECT, {"id": big["id"]})
    wait_for(lambda: secure.manager.stats["handled.task.inspect"] >= 1000, timeout=30, what="every request handled")
    assert secure.manager.stats["dropped.hwm"] > 0  # beyond the per-client queue: dropped, not kept
    assert secure.admin.call(node_msg.PING)["state"] == "ready"


def test_a_removed_workers_name_cannot_be_taken_while_its_tasks_move(secure_sched):
    s = secure_sched
    s.worker("w1", FakeRuntime())
    s.wait_ready("w1")
    s.manager.loop.call_soon_threadsafe(lambda: s.manager._removed.add("w2"))  # as if w2 were being removed
    wait_for(lambda: "w2" in s.manager._removed, what="the mark")
    sock = s.dealer(curve=s.stranger())
    join = request(sock, worker_msg.JOIN, {"name": "w2", "address": "127.0.0.1", "secret": s.authority.token.secret})
    reply = reply_to(sock, join)
    assert reply.body["code"] == "forbidden" and "being removed" in reply.body["message"]
