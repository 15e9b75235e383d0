"""Loop(many_sockets=True): epoll over the sockets' ZMQ_FD (cube/wire/loop.py, _Ready), with real
ZeroMQ sockets in one process. ZMQ_FD only signals that a socket's state changed, and anything
that processes the socket's commands (reading ZMQ_EVENTS, a receive, a send) takes the signal: so
every message must still be delivered when a reader reads one at a time, when a send takes the
signal of a message that arrived meanwhile, and across descriptor numbers reused after a close.

Each loop runs on its own thread; every socket, loop and context is closed at the end (a context
that does not terminate, or descriptors left open, fail the test). The waits below are deadlock
guards, not timings."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import pytest
import zmq

import cube.messages  # noqa: F401  (declares every schema)
from cube.messages import node as node_msg
from cube.wire import sockets
from cube.wire.actor import Actor, handles
from cube.wire.envelope import Envelope, decode
from cube.wire.loop import Loop
from cube.harness import wait_for as poll
from tests.actors.helpers import on_loop

GUARD = 60.0  # seconds: only a hang takes this long


def wait_for(predicate: Callable[[], Any], timeout: float = GUARD, what: str = "condition") -> Any:
    try:
        return poll(predicate, timeout, what, 0.01)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Running:
    """A many_sockets loop on its own thread."""

    def __init__(self, name: str, ctx: zmq.Context | None = None, loop: Loop | None = None):
        self.loop = loop or Loop(name, ctx=ctx, many_sockets=True)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, target: Callable[[], None] | None = None) -> "Running":
        def main() -> None:
            try:
                (target or self.loop.run)()
            except BaseException as e:  # reported at teardown
                self.error = e
        self.thread = threading.Thread(target=main, name=f"loop-{self.loop.name}", daemon=True)
        self.thread.start()
        return self

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on the loop's thread; its result (its exception is raised here)."""
        return on_loop(self.loop, fn, GUARD, self.loop.name)

    def stop(self) -> None:
        if self.thread is not None:
            self.loop.stop()
            self.thread.join(timeout=10)
            assert not self.thread.is_alive(), f"{self.loop.name} did not stop"
        self.loop.drain()
        self.loop.close()
        assert self.error is None, f"{self.loop.name} died: {self.error!r}"
        assert self.loop.errors == 0, f"{self.loop.name}: {self.loop.errors} callbacks failed"


def term(ctx: zmq.Context) -> None:
    """Terminate `ctx`, failing (not hanging) if a socket of it was left open."""
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "the context did not terminate: a socket was left open"


@pytest.fixture
def fds():
    """Descriptors open before the test; none more may be open after it."""
    before = open_fds()
    yield
    wait_for(lambda: open_fds() <= before, timeout=10, what=f"descriptors back to {before} (now {open_fds()})")


# ---- many DEALER sockets on one loop ---------------------------------------------------------------

class Fleet:
    """`n` DEALER sockets (identities d000...) connected to one ROUTER over inproc, the DEALERs'
    readers on a many_sockets loop; the ROUTER stays with the test's thread."""

    def __init__(self, n: int, endpoint: str):
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.bind(endpoint)
        self.dealers: list[zmq.Socket] = []
        for i in range(n):
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.IDENTITY, b"d%03d" % i)
            s.connect(endpoint)
            s.send(b"hello")  # the ROUTER learns the route (before the loop owns the socket)
            self.dealers.append(s)
        for _ in range(n):
            assert self.router.poll(GUARD * 1000), "a DEALER's hello never came"
            ident, hello = self.router.recv_multipart()
            assert hello == b"hello"
        self.running = Running("fleet", self.ctx)
        self.ident = {s: s.getsockopt(zmq.IDENTITY) for s in self.dealers}  # read before the loop owns them
        self.got: dict[bytes, list[bytes]] = {ident: [] for ident in self.ident.values()}
        self.calls = 0

    def send_each(self, k: int, tag: str) -> None:
        for ident in self.ident.values():
            for j in range(k):
                self.router.send_multipart([ident, f"{tag}{j}".encode()])

    def total(self) -> int:
        return sum(len(v) for v in self.got.values())

    def close(self) -> None:
        self.running.stop()  # closes the DEALERs (its readers)
        self.router.close(linger=0)
        term(self.ctx)


def test_messages_to_300_dealers_on_one_loop_all_reach_their_readers(fds):
    fleet = Fleet(300, "inproc://many-a")
    try:
        def drain(s: zmq.Socket) -> None:
            fleet.calls += 1
            while True:
                try:
                    fleet.got[fleet.ident[s]].append(s.recv(zmq.NOBLOCK))
                except zmq.Again:
                    return
        for s in fleet.dealers:
            fleet.running.loop.add_reader(s, drain)
        fleet.running.start()
        fleet.send_each(3, "a")
        wait_for(lambda: fleet.total() == 900, what="900 messages")
        fleet.send_each(1, "b")  # once more, after every socket went quiet
        wait_for(lambda: fleet.total() == 1200, what="1200 messages")
        fleet.running.on_loop(lambda: None)  # one more turn: nothing arrives twice
        assert all(v == [b"a0", b"a1", b"a2", b"b0"] for v in fleet.got.values())
    finally:
        fleet.close()


def test_a_reader_taking_one_message_per_call_still_gets_every_message(fds):
    fleet = Fleet(300, "inproc://many-b")
    try:
        def one(s: zmq.Socket) -> None:
            fleet.calls += 1
            try:
                fleet.got[fleet.ident[s]].append(s.recv(zmq.NOBLOCK))
            except zmq.Again:
                pass
        fleet.send_each(2, "early")  # waiting before the sockets are registered
        for s in fleet.dealers:
            fleet.running.loop.add_reader(s, one)
        fleet.running.start()
        fleet.send_each(3, "late")
        wait_for(lambda: fleet.total() == 1500, what="1500 messages")
        assert all(v == [b"early0", b"early1", b"late0", b"late1", b"late2"] for v in fleet.got.values())
        assert fleet.calls >= 1500
    finally:
        fleet.close()


# ---- send, then arrive: two actors playing ping-pong -------------------------------------------------

class Ponger(Actor):
    """Answers at once, or `later` seconds later from a timer: a send outside the socket's reader
    (past ZeroMQ's ~1 ms command throttle) takes the ZMQ_FD signal of requests that arrived
    meanwhile, and only `sent_on` has the socket looked at again."""
    later: float | None = None

    @handles(node_msg.PING)
    def on_ping(self, m: Envelope) -> dict | None:
        if self.later is None:
            return {"pong": True}
        respond = m.respond
        self.loop.call_later(self.later, lambda: respond({"pong": True}))
        return None


class Pinger(Actor):
    """`chains` request chains over one DEALER: each answer sends the next request."""

    def __init__(self, endpoint: str, total: int, chains: int):
        super().__init__("pinger", Loop("pinger", many_sockets=True))
        self.sock = sockets.dealer(self.loop.ctx, endpoint)
        self.serve(self.sock, accept=set())  # replies only
        self.total, self.chains = total, chains
        self.sent = self.answered = self.failed = 0
        self.done = threading.Event()

    def go(self) -> None:
        for _ in range(self.chains):
            self._next()

    def _next(self) -> None:
        if self.sent < self.total:
            self.sent += 1
            self.request(self.sock, Envelope(node_msg.PING, {}), self._answer, timeout=GUARD)

    def _answer(self, reply: Envelope | None) -> None:
        if reply is None or reply.type != "ok":
            self.failed += 1
        else:
            self.answered += 1
        if self.answered + self.failed == self.total:
            self.done.set()
        self._next()


def run_actor(actor: Actor) -> Running:
    return Running(actor.name, loop=actor.loop).start()


@pytest.mark.parametrize("chains, later", [(1, None), (8, None), (8, 0.002)])
def test_ping_pong_between_two_many_sockets_actors_completes_every_round_trip(fds, chains, later):
    total = 2000
    ponger = Ponger("ponger", Loop("ponger", many_sockets=True))
    ponger.later = later
    router = sockets.router(ponger.loop.ctx, "tcp://127.0.0.1:*")
    ponger.serve(router, accept={node_msg.PING})
    pinger = Pinger(router.getsockopt_string(zmq.LAST_ENDPOINT), total, chains)
    runs = [run_actor(ponger), run_actor(pinger)]
    try:
        wait_for(lambda: pinger.sock.poll(0, zmq.POLLOUT), what="the DEALER connected")  # before its loop runs
        pinger.loop.call_soon_threadsafe(pinger.go)
        assert pinger.done.wait(GUARD), (f"{pinger.answered} of {total} round trips answered "
                                          f"({pinger.failed} failed): a socket starved")
        assert (pinger.answered, pinger.failed) == (total, 0)
        assert ponger.stats["handled." + node_msg.PING] == total
    finally:
        for r in runs:
            r.stop()
        for r in runs:
            term(r.loop.ctx)


def send_while_a_request_waits(route: list[bytes]) -> tuple[bool, Envelope | None]:
    """A Ponger's ROUTER, read once and idle since; a request arrives, then (past ZeroMQ's ~1 ms
    command throttle, so the send takes the arrival's ZMQ_FD signal) the actor sends on that ROUTER
    from outside its reader, to `route`. Returns whether that send went out, and the answer to the
    request (None: never read)."""
    ponger = Ponger("ponger", Loop("ponger", many_sockets=True))
    router = sockets.router(ponger.loop.ctx, "inproc://send-then-arrive")  # ROUTER_MANDATORY
    ponger.serve(router, accept={node_msg.PING})
    peer = ponger.loop.ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.setsockopt(zmq.IDENTITY, b"peer")
    peer.connect("inproc://send-then-arrive")
    run = run_actor(ponger)
    sent: list[bool] = []
    try:
        first = Envelope(node_msg.PING, {}, sender="peer")
        peer.send(first.encode())
        assert peer.poll(GUARD * 1000) and decode(peer.recv()).re == first.id

        arrived, go = threading.Event(), threading.Event()

        def send_after_an_arrival() -> None:
            arrived.set()
            go.wait(GUARD)  # the request below is in the ROUTER's queue now (inproc: at once)
            time.sleep(0.05)  # past the throttle: this send processes the ROUTER's commands
            sent.append(ponger.send(router, Envelope("ok", {"unsolicited": True}, route=route)))
        ponger.loop.call_soon_threadsafe(send_after_an_arrival)
        assert arrived.wait(GUARD)
        second = Envelope(node_msg.PING, {}, sender="peer")
        peer.send(second.encode())
        go.set()
        # Unread, the request stays unread for good (nothing else wakes the ROUTER): 5 s is plenty.
        while peer.poll(5000):
            reply = decode(peer.recv())
            if reply.re == second.id:
                return sent[0], reply
        return sent[0], None
    finally:
        peer.close(linger=0)
        run.stop()
        term(ponger.loop.ctx)


def test_a_send_does_not_strand_a_message_that_arrived_meanwhile(fds):
    sent, reply = send_while_a_request_waits([b"peer"])
    assert sent
    assert reply is not None, "the request that arrived before the send was never read"


def test_a_refused_send_does_not_strand_a_message_that_arrived_meanwhile(fds):
    sent, reply = send_while_a_request_waits([b"nobody"])  # ROUTER_MANDATORY: unroutable, refused
    assert not sent
    assert reply is not None, "the request that arrived before a refused send was never read"


# ---- descriptors reused, wake-ups and timers -------------------------------------------------------

@pytest.mark.parametrize("order", ["remove_then_close", "close_then_remove_after_reuse"])
def test_a_socket_closed_then_a_new_one_on_the_same_descriptor_number_works(fds, order):
    """The new socket must get its messages whether the old one left the loop before it was
    closed, or only after its descriptor number was taken by the new one (its removal must not
    take the new one's registration with it)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://reuse")
    running = Running("reuse", ctx).start()
    got: list[tuple[str, bytes]] = []
    spare: list[zmq.Socket] = []

    def reader(tag: str) -> Callable[[zmq.Socket], None]:
        def read(s: zmq.Socket) -> None:
            while True:
                try:
                    got.append((tag, s.recv(zmq.NOBLOCK)))
                except zmq.Again:
                    return
        return read

    def dealer(ident: bytes) -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, ident)
        return s

    def ask(ident: bytes, payload: bytes, tag: str) -> None:
        # the ROUTER answers the DEALER's hello with `payload`
        ident_in, hello = router.recv_multipart() if router.poll(GUARD * 1000) else (None, None)
        assert ident_in == ident and hello == b"hello"
        router.send_multipart([ident, payload])
        wait_for(lambda: (tag, payload) in got, what=f"{payload!r} on {tag}")

    try:
        def first() -> int:
            s = dealer(b"old")
            s.connect("inproc://reuse")
            running.loop.add_reader(s, reader("old"))
            s.send(b"hello")
            running.old = s
            return s.getsockopt(zmq.FD)
        old_fd = running.on_loop(first)
        ask(b"old", b"one", "old")

        def drop() -> None:
            if order == "remove_then_close":
                running.loop.remove_reader(running.old)
            running.old.close(linger=0)
        running.on_loop(drop)
        # ZeroMQ closes the socket's descriptor in its reaper thread, once the ROUTER (this
        # thread's) took in the end of their pipe: reading its events processes its commands.
        wait_for(lambda: router.getsockopt(zmq.EVENTS) is not None
                 and not os.path.exists(f"/proc/self/fd/{old_fd}"), what="the old descriptor closed")

        def second() -> int:
            for i in range(64):  # the lowest free number is taken next: until it is the old one
                s = dealer(b"new")
                fd = s.getsockopt(zmq.FD)
                if fd == old_fd:
                    s.connect("inproc://reuse")
                    running.loop.add_reader(s, reader("new"))
                    s.send(b"hello")
                    return fd
                spare.append(s)
            return -1
        assert running.on_loop(second) == old_fd, "no new socket got the old descriptor number"
        ask(b"new", b"two", "new")
        if order == "close_then_remove_after_reuse":
            running.on_loop(lambda: running.loop.remove_reader(running.old))
        router.send_multipart([b"new", b"three"])
        wait_for(lambda: ("new", b"three") in got, what="b'three' on new")
        running.on_loop(lambda: None)  # a turn more: nothing for the old reader
        assert got == [("old", b"one"), ("new", b"two"), ("new", b"three")]
    finally:
        running.on_loop(lambda: [s.close(linger=0) for s in spare])
        running.stop()
        router.close(linger=0)
        term(ctx)


def test_call_soon_threadsafe_wakes_a_loop_blocked_in_its_wait(fds):
    loop = Loop("sleepy", many_sockets=True)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)  # a registered socket that never hears anything
    sub.connect("inproc://nothing")
    loop.add_reader(sub, lambda s: None)
    ran = threading.Event()
    try:
        loop.run_once(max_wait=0)  # the first turn looks at the new socket without waiting
        # One turn allowed to wait a minute: only the wake-up can end it sooner.
        turn = threading.Thread(target=lambda: loop.run_once(max_wait=GUARD), daemon=True)
        turn.start()
        loop.call_soon_threadsafe(ran.set)
        turn.join(GUARD - 10)
        assert not turn.is_alive(), "the loop slept through call_soon_threadsafe"
        assert ran.is_set()
    finally:
        turn.join(GUARD)
        loop.drain()
        loop.close()  # closes the SUB too
        loop.ctx.term()
        term(ctx)


def test_timers_and_threadsafe_calls_run_on_a_many_sockets_loop(fds):
    running = Running("timers")
    fired: list[str] = []
    ticks: list[int] = []
    running.loop.call_later(0.05, lambda: fired.append("later"))
    every = running.loop.call_every(0.02, lambda: ticks.append(1))
    running.start()
    try:
        wait_for(lambda: fired == ["later"] and len(ticks) >= 3, what="timers")
        running.on_loop(every.cancel)
        assert running.on_loop(lambda: threading.current_thread().name) == "loop-timers"
        done = threading.Event()
        threading.Thread(target=lambda: running.loop.call_soon_threadsafe(done.set)).start()
        assert done.wait(GUARD)
    finally:
        running.stop()
        term(running.loop.ctx)
