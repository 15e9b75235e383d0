"""Garbage on every ROUTER socket gets an `error` reply (where one is possible) and never stops the
actor; a worker's DEALER receiving garbage from its manager keeps working."""
from __future__ import annotations

import time

import pytest
import zmq

from cube.store.memory import MemoryStore
from cube.wire import codec
from cube.wire.envelope import Envelope
from tests.actors.helpers import (FakeNodes, envelope, expect_error, garbage_cases, recv_env,
                                  wait_for)

HELLO = {"name": "rw", "address": "127.0.0.1", "cpus": 1.0, "memory": 1 << 30, "disk": 1 << 34, "tasks": []}


@pytest.fixture
def endpoints(actors):
    """Every ROUTER endpoint, with a known type + bad body for it, and a valid request."""
    _, store_ep = actors.store(MemoryStore())
    _, sched_ep, metrics_ep = actors.scheduler()
    manager = actors.manager(scheduler_endpoint=sched_ep, grace=30.0)
    api_ep = f"tcp://127.0.0.1:{manager.config.api_port}"
    workers_ep = f"tcp://127.0.0.1:{manager.config.worker_port}"
    return {
        "store": (store_ep, "store.get", {"ns": 5, "key": "k"}, ("store.count", {"ns": "tasks"}), None),
        "scheduler": (sched_ep, "sched.place", {"task_id": "t", "cpu": "one", "memory": 0, "disk": 0},
                      ("sched.nodes", {}), None),
        "manager-api": (api_ep, "task.stop", {"id": ["not", "a", "string"]}, ("manager.ping", {}), None),
        "manager-workers": (workers_ep, "worker.hello", {**HELLO, "cpus": "many"},
                            ("worker.hello", HELLO), b"rw"),
    }


SOCKETS = ["store", "scheduler", "manager-api", "manager-workers"]
CASES = [c[0] for c in garbage_cases("x", {})]


@pytest.mark.parametrize("which", SOCKETS)
def test_garbage_gets_error_replies_and_the_actor_keeps_answering(actors, endpoints, which):
    endpoint, known_type, bad_body, (ok_type, ok_body), identity = endpoints[which]
    sock = actors.dealer(endpoint, identity=identity)
    for label, frames, code, re in garbage_cases(known_type, bad_body):
        sock.send_multipart(frames)
        reply = expect_error(sock, code, re)
        assert reply.body["message"], label
        assert reply.sender  # the actor says who refused
    # a valid request on the same connection is still answered
    valid = envelope(ok_type, ok_body, sender="rw")
    sock.send(valid.encode())
    reply = recv_env(sock)
    assert reply.type == "ok" and reply.re == valid.id, reply.body


@pytest.mark.parametrize("which", SOCKETS)
def test_extra_frames_and_a_flood(actors, endpoints, which):
    endpoint, known_type, bad_body, (ok_type, ok_body), identity = endpoints[which]
    sock = actors.dealer(endpoint, identity=identity)
    # extra leading frames are kept as the route: the error comes back behind them
    sock.send_multipart([b"extra", b"\xc1"])
    frames = sock.recv_multipart() if sock.poll(3000) else []
    assert frames[:1] == [b"extra"] and len(frames) == 2
    # many bad messages in a row, then a good one: all answered, in order (fewer than the replies
    # a socket queues for one peer, see API_SNDHWM)
    for i in range(80):
        sock.send(codec.pack({"v": 1, "id": f"bad{i}", "type": "no.such", "from": "x", "ts": 0, "body": {}}))
    valid = envelope(ok_type, ok_body, sender="rw")
    sock.send(valid.encode())
    seen = [recv_env(sock) for _ in range(81)]
    assert [m.re for m in seen[:80]] == [f"bad{i}" for i in range(80)]
    assert seen[-1].type == "ok" and seen[-1].re == valid.id


@pytest.mark.parametrize("which", SOCKETS)
def test_a_frame_over_the_socket_limit_drops_only_that_peer(actors, endpoints, which):
    from cube.wire import sockets
    endpoint, _, _, (ok_type, ok_body), identity = endpoints[which]
    hog = actors.dealer(endpoint)
    hog.send(b"\x00" * (sockets.MAXMSGSIZE + 1))
    assert not hog.poll(300)  # ZeroMQ disconnects it: no reply is possible
    sock = actors.dealer(endpoint, identity=identity)
    valid = envelope(ok_type, ok_body, sender="rw")
    sock.send(valid.encode())
    assert recv_env(sock).re == valid.id


def test_manager_sockets_refuse_each_others_types(actors, endpoints):
    api = actors.dealer(endpoints["manager-api"][0])
    hello = envelope("worker.hello", HELLO)
    api.send(hello.encode())
    expect_error(api, "unknown_type", hello.id)
    workers = actors.dealer(endpoints["manager-workers"][0], identity=b"rw")
    start = envelope("task.start", {"task": {"image": "x"}})
    workers.send(start.encode())
    expect_error(workers, "unknown_type", start.id)
    stray = envelope("store.put", {"ns": "tasks", "key": "k", "value": 1})
    workers.send(stray.encode())
    expect_error(workers, "unknown_type", stray.id)


def test_unsolicited_replies_are_ignored(actors, endpoints):
    endpoint, _, _, (ok_type, ok_body), _ = endpoints["manager-api"]
    sock = actors.dealer(endpoint)
    sock.send(Envelope("ok", {"x": 1}, sender="x", re="nothing-pending").encode())
    sock.send(Envelope("error", {"code": "boom"}, sender="x", re=None).encode())
    assert not sock.poll(200)  # a reply is never answered
    valid = envelope(ok_type, ok_body)
    sock.send(valid.encode())
    assert recv_env(sock).re == valid.id


def test_scheduler_metrics_socket_survives_garbage(actors):
    actor, sched_ep, metrics_ep = actors.scheduler()
    nodes = FakeNodes(metrics_ep)
    try:
        for frames in ([b"node.metrics", b"\xc1\xc1"], [b"node.metrics"], [b"node.metrics", codec.pack([1])],
                       [b"node.metrics", envelope("node.metrics", {"name": 5}).encode()],
                       [b"node.metrics", envelope("sched.place", {}).encode()],
                       [b"node.metrics", b"x", b"y", b"z"]):
            nodes.publish_raw(frames)
        nodes.set("good")
        client = actors.client(sched_ep)
        wait_for(lambda: [n["name"] for n in client.call("sched.nodes")["nodes"]] == ["good"], what="good")
        wait_for(lambda: sum(v for k, v in actor.stats.items() if k.startswith("refused.")) >= 4,
                 what="refusals counted")
    finally:
        nodes.close()


# ---- a worker's DEALER ----------------------------------------------------------------------------

def test_worker_dealer_receiving_garbage_keeps_working(actors):
    """The worker talks to a fake manager (a ROUTER we hold): garbage, then a real worker.run."""
    from tests.actors.helpers import free_ports
    port = free_ports(1)[0]
    router = actors.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    from cube.config import ManagerConfig
    from cube.runtime.fake import FakeRuntime
    runtime = FakeRuntime()
    worker = actors.worker(ManagerConfig(worker_port=port), "gw", runtime)

    def recv(timeout=5.0):
        assert router.poll(timeout * 1000), "nothing from the worker"
        frames = router.recv_multipart()
        return frames[0], _decode(frames[-1])

    ident, hello = recv()
    assert ident == b"gw" and hello.type == "worker.hello"
    router.send_multipart([ident, hello.reply({"metrics": "", "heartbeat": 0.2, "grace": 5}, "fake").encode()])

    def send(frames):
        router.send_multipart([ident, *frames])

    sent = {}
    for label, frames, code, re in garbage_cases("worker.run", {"spec": "not a map", "attempt": 1}):
        if label == "oversize":
            continue
        send(frames)
        sent[label] = (code, re)
    bad_cmd = envelope("worker.stop", {"task_id": 7})
    send([bad_cmd.encode()])
    not_mine = envelope("task.start", {"task": {"image": "x"}})  # a client type on the worker link
    send([not_mine.encode()])
    odd = envelope("worker.run", {"spec": {"no": "id"}, "attempt": 1})  # passes the schema, not the handler
    send([odd.encode()])

    errors = []
    deadline = time.monotonic() + 5
    while len(errors) < len(sent) + 3 and time.monotonic() < deadline:
        _, m = recv()
        if m.type == "error":
            errors.append((m.body["code"], m.re))
        elif m.type == "worker.heartbeat":  # answer, so the worker stays registered
            router.send_multipart([ident, m.reply({}, "fake").encode()])
    expected = sorted([v for v in sent.values()] + [("bad_body", bad_cmd.id), ("unknown_type", not_mine.id),
                                                     ("bad_request", odd.id)], key=str)
    assert sorted(errors, key=str) == expected

    # still working: a real command runs a container and reports it
    run = envelope("worker.run", {"spec": {"task_id": "t-1", "name": "web", "image": "img"}, "attempt": 1})
    send([run.encode()])
    got_ack = got_status = False
    deadline = time.monotonic() + 5
    while not (got_ack and got_status) and time.monotonic() < deadline:
        _, m = recv()
        if m.re == run.id and m.type == "ok":
            got_ack = True
        elif m.type == "task.status" and m.body["task_id"] == "t-1" and m.body["state"] == "running":
            got_status = True
            router.send_multipart([ident, m.reply({}, "fake").encode()])
        elif m.type == "worker.heartbeat":
            router.send_multipart([ident, m.reply({}, "fake").encode()])
    assert got_ack and got_status
    assert [c.task_id for c in runtime.list()] == ["t-1"]
    assert worker.loop.errors == 0


def _decode(frame):
    from cube.wire.envelope import decode
    return decode(frame)
