"""The actor base without a network: the `@handles` table, dispatch, replies too large for a frame,
and the Loop's timers on a clock the test moves."""
from __future__ import annotations

import pytest

import cube.messages  # noqa: F401  (declares every schema)
from cube.messages import node as node_msg
from cube.messages import task as task_msg
from cube.wire import codec
from cube.wire.actor import Actor, handles
from cube.wire.envelope import REPLY_ERROR, REPLY_OK, Envelope, decode
from cube.wire.errors import INTERNAL, UNKNOWN_TYPE
from cube.wire.loop import Loop
from tests.unit.fakes import FakeSock

PING, LIST = node_msg.PING, node_msg.LIST


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def close(loop: Loop) -> None:
    loop.drain()
    loop.close()
    loop.ctx.term()


@pytest.fixture
def make():
    made: list[Actor] = []

    def build(cls, *args, **kw):
        a = cls(*args, **kw)
        made.append(a)
        return a
    yield build
    for a in made:
        close(a.loop)


def ask(actor: Actor, msg_type: str, body: dict | None = None, accept=None) -> Envelope:
    sock = FakeSock()
    env = Envelope(msg_type, body or {}, sender="test")
    actor.receive(sock, [b"peer", env.encode()], accept)
    assert len(sock.sent) == 1, sock.sent
    assert sock.sent[0][0] == b"peer"  # routed back to the asker
    reply = decode(sock.sent[0][-1])
    assert reply.re == env.id
    return reply


# ---- the @handles table --------------------------------------------------------------------------

class Base(Actor):
    @handles(PING)
    def on_ping(self, m: Envelope) -> dict:
        return {"who": "base"}

    @handles(LIST, task_msg.LIST)
    def on_lists(self, m: Envelope) -> dict:
        return {"list": m.type}


class Child(Base):
    @handles(PING)
    def on_ping(self, m: Envelope) -> dict:  # the same method name: an override
        return {"who": "child"}


class Plain(Base):
    def on_ping(self, m: Envelope) -> dict:  # overridden without repeating @handles
        return {"who": "plain"}


def test_the_table_is_built_per_class():
    assert Base.HANDLERS == {PING: "on_ping", LIST: "on_lists", task_msg.LIST: "on_lists"}
    assert Child.HANDLERS == Base.HANDLERS and Child.HANDLERS is not Base.HANDLERS
    assert Actor.HANDLERS == {}


def test_a_subclass_overrides_a_handler_by_name(make):
    assert ask(make(Base, "b"), PING).body == {"who": "base"}
    assert ask(make(Child, "c"), PING).body == {"who": "child"}
    assert ask(make(Plain, "p"), PING).body == {"who": "plain"}
    assert ask(make(Child, "c2"), LIST).body == {"list": LIST}  # inherited


def test_a_type_handled_twice_in_one_class_is_an_error_at_definition():
    with pytest.raises(TypeError, match="handled by both"):
        class Twice(Actor):
            @handles(PING)
            def a(self, m):
                return {}

            @handles(PING)
            def b(self, m):
                return {}


def test_a_subclass_handling_an_inherited_type_with_another_method_is_an_error():
    with pytest.raises(TypeError, match="handled by both"):
        class Other(Base):
            @handles(PING)
            def on_other_ping(self, m):
                return {}


def test_unhandled_and_unaccepted_types_are_refused(make):
    a = make(Base, "b")
    reply = ask(a, task_msg.INSPECT, {"id": "x"})  # declared, but no handler here
    assert reply.type == REPLY_ERROR and reply.body["code"] == UNKNOWN_TYPE
    reply = ask(a, PING, accept={LIST})  # handled, but not on this socket
    assert reply.type == REPLY_ERROR and reply.body["code"] == UNKNOWN_TYPE


# ---- replies larger than a frame --------------------------------------------------------------------

class Big(Actor):
    @handles(PING)
    def on_ping(self, m: Envelope) -> dict:
        return {"blob": "x" * (codec.MAX_FRAME + 10)}

    @handles(LIST)
    def on_list(self, m: Envelope) -> dict:
        return {"blob": "x" * (codec.MAX_FRAME - 1000)}  # just fits


def test_a_reply_larger_than_a_frame_becomes_an_internal_error(make):
    a = make(Big, "big")
    reply = ask(a, PING)
    assert reply.type == REPLY_ERROR and reply.body["code"] == INTERNAL
    assert "frame" in reply.body["message"] and PING in reply.body["message"]
    assert a.stats["replies_too_large"] == 1
    ok = ask(a, LIST)
    assert ok.type == REPLY_OK and len(ok.body["blob"]) == codec.MAX_FRAME - 1000


# ---- the loop's clock --------------------------------------------------------------------------------

def test_timers_fire_when_the_clock_moves_not_before():
    clock = Clock()
    loop = Loop("clocked", clock=clock)
    try:
        fired: list[str] = []
        loop.call_later(5.0, lambda: fired.append("later"))
        every = loop.call_every(2.0, lambda: fired.append("every"))
        cancelled = loop.call_later(1.0, lambda: fired.append("cancelled"))
        cancelled.cancel()
        loop.run_once(0)
        assert fired == []
        clock.now += 1.999
        loop.run_once(0)
        assert fired == []
        clock.now += 0.001
        loop.run_once(0)
        assert fired == ["every"]
        loop.run_once(0)
        assert fired == ["every"]  # once per interval, not once per turn
        clock.now += 3.0  # t = 5: "later" is due, and "every" (due at 4) once
        loop.run_once(0)
        assert sorted(fired) == ["every", "every", "later"]
        every.cancel()
        clock.now += 100.0
        loop.run_once(0)
        assert len(fired) == 3
    finally:
        close(loop)


def test_a_request_times_out_on_the_loop_clock(make):
    clock = Clock()
    a = make(Base, "asker", loop=Loop("asker", clock=clock))
    sock = FakeSock()
    answers: list = []
    a.request(sock, Envelope(PING, {}), answers.append, timeout=2.0)
    assert len(sock.sent) == 1
    a.loop.run_once(0)
    clock.now += 1.9
    a.loop.run_once(0)
    assert answers == [] and a._outstanding
    clock.now += 0.2
    a.loop.run_once(0)
    assert answers == [None] and not a._outstanding


def test_a_request_is_retried_on_the_loop_clock(make):
    clock = Clock()
    a = make(Base, "asker", loop=Loop("asker", clock=clock))
    sock = FakeSock()
    answers: list = []
    env = Envelope(PING, {})
    a.request(sock, env, answers.append, retry_every=1.0, tries=3)
    for _ in range(5):
        clock.now += 1.0
        a.loop.run_once(0)
    assert [r.id for r in sock.replies()] == [env.id] * 3 and answers == [None]
