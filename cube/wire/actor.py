"""The actor base: receive frames, decode, validate, dispatch to handlers, answer.

An actor is a plain class. A method marked `@handles("task.start")` handles that message type:
it returns a reply body (a dict), or None when it answers later through `msg.respond` or when
nothing is owed. Raising CubeError sends an `error` reply. The table of handlers is built once,
when the class is defined; a type handled twice is an error then, not a surprise later.
Framing, validation, error replies, request tracking and retries live here, so handlers hold only
business logic and can be unit-tested by calling them with an Envelope.

Life cycle: `run()` calls `on_start()`, runs the loop, then `on_stop()`. `stop()` may be called
from any thread (or a signal handler): it is queued behind the work already on the loop, fails
every request still waiting for an answer, and ends the loop. Every outgoing message goes through
`outbox` (the real send unless something, such as a chaos injector, was installed there).
"""
from __future__ import annotations

import collections
import gc
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from cube.logs import Throttled
from cube.wire import codec, schema
from cube.wire.envelope import REPLY_ERROR, Envelope, decode, reply_id_hint
from cube.wire.errors import BAD_REQUEST, INTERNAL, UNKNOWN_TYPE, CubeError
from cube.wire.loop import Loop, Timer

log = logging.getLogger(__name__)

ReplyCallback = Callable[[Envelope | None], None]  # None: gave up waiting
Outbox = Callable[["Actor", zmq.Socket, list[bytes], Envelope], bool]


def handles(*types: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of these message types."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__cube_handles__ = (*getattr(fn, "__cube_handles__", ()), *types)  # type: ignore[attr-defined]
        return fn
    return mark


class Ignored(Exception):
    """Raised by `admit`: drop the message without any answer."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class Outstanding:
    """A request we sent and still expect an answer to; re-sent until answered or cancelled."""

    env: Envelope
    sock: zmq.Socket
    on_reply: ReplyCallback | None
    retry_every: float | None
    tries_left: int | None
    timer: Timer | None = None
    key: Any = None
    retry_errors: frozenset[str] = frozenset()
    backoff: float = 1.0  # each re-send waits this much longer than the last, up to max_every
    max_every: float | None = None


def _profile_on_signal(name: str) -> None:
    """CUBE_PROFILE=DIR (a benchmark's own diagnosis): SIGUSR2 starts a cProfile of the loop's
    thread, the next SIGUSR2 writes it to DIR/NAME-PID.prof, so only the measured run counts."""
    where = os.environ.get("CUBE_PROFILE")
    if not where:
        return
    import cProfile
    import signal
    state: dict[str, Any] = {}

    def toggle(*_: Any) -> None:
        if "profile" not in state:
            state["profile"] = cProfile.Profile(time.thread_time)  # CPU of the loop's thread, not waits
            state["profile"].enable()
        else:
            profile = state.pop("profile")
            profile.disable()
            profile.dump_stats(os.path.join(where, f"{name}-{os.getpid()}.prof"))
    signal.signal(signal.SIGUSR2, toggle)


class Actor:
    HANDLERS: dict[str, str] = {}  # message type -> method name, built per class

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        table: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                for msg_type in getattr(fn, "__cube_handles__", ()):
                    if table.get(msg_type, attr) != attr and klass is cls:
                        raise TypeError(f"{cls.__name__}: {msg_type!r} is handled by both "
                                        f"{table[msg_type]} and {attr}")
                    table[msg_type] = attr
        cls.HANDLERS = table

    def __init__(self, name: str, loop: Loop | None = None):
        self.name = name
        self.loop = loop or Loop(name)
        self.stats: collections.Counter[str] = collections.Counter()
        self.outbox: Outbox | None = None
        self._outstanding: dict[str, Outstanding] = {}
        self._keyed: dict[Any, str] = {}  # request key -> id of the latest request with it
        self._throttled = Throttled(log)  # a flood of bad messages must not flood the log
        self.traffic: Any = None  # message counters (cube/observability/traffic.py) when metrics are on

    # ---- life cycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        """Called on the loop's thread before the loop runs: arm timers, load state."""

    def on_stop(self) -> None:
        """Called after the loop ended: release what the actor holds (files, threads)."""

    def run(self) -> None:
        tune_gc()
        _profile_on_signal(self.name)
        self.on_start()
        try:
            self.loop.run()
        finally:
            self.on_stop()

    def stop(self) -> None:
        """End the actor after the work already queued; safe from any thread or signal handler."""
        self.loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        for item in list(self._outstanding.values()):  # nobody will answer them now
            self._drop_request(item)
            if item.timer:
                item.timer.cancel()
            if item.on_reply:
                self.loop.safely(item.on_reply, None)
        self.loop.stop()

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT stop this actor (the one signal path of every Cube process)."""
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    # ---- receiving --------------------------------------------------------------------------
    def serve(self, sock: zmq.Socket, accept: set[str] | None = None, replies: bool = True,
              authenticated: bool = False) -> None:
        """Dispatch every message arriving on `sock`; `accept` limits the types it may carry.

        `authenticated`: a CURVE server socket; each message is stamped with the key of the
        connection it came on (the ZAP User-Id, see cube/security/zap.py) for `admit` to judge."""
        def on_readable(s: zmq.Socket) -> None:
            for _ in range(100):  # bounded batch keeps timers and other sockets fair
                if s.closed:  # a handler replaced it (e.g. a worker reconnecting)
                    return
                try:
                    if authenticated:
                        parts = s.recv_multipart(zmq.NOBLOCK, copy=False)
                        peer = _user_id(parts[-1])
                        frames = [p.bytes for p in parts]
                    else:
                        frames, peer = s.recv_multipart(zmq.NOBLOCK), ""
                except zmq.Again:
                    return
                self.receive(s, frames, accept, replies, peer)
                # Nothing more to read: stop here rather than by a raised zmq.Again (costlier).
                if s.closed or not s.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    return
        self.loop.add_reader(sock, on_readable)

    def peer_name(self, route: list[bytes]) -> str:
        """Who a route leads to, for logs and fault rules: the ROUTER identity as text, unless
        the actor knows better (the Manager names a worker's connection by the worker)."""
        return route[0].decode(errors="replace") if route else ""

    def admit(self, sock: zmq.Socket, env: Envelope) -> None:
        """May this message be handled? Raise CubeError to refuse it with an error reply, or
        Ignored to drop it unanswered, before any handler runs; may set `env.principal`. Every
        message is admitted unless an actor says otherwise."""

    def may_resend(self, sock: zmq.Socket, env: Envelope) -> bool:
        """Whether a request that got no answer may go out again (a deposed leader's commands may
        not: docs/ha.md); one that may not is dropped as unanswered."""
        return True

    def handler_for(self, sock: zmq.Socket, env: Envelope, method: str) -> Callable[[Envelope], Any]:
        """The handler for an admitted message: the table's, unless an actor answers some types
        differently in some state (a follower Manager answers reads from the Store, docs/ha.md)."""
        return getattr(self, method)

    def receive(self, sock: zmq.Socket, frames: list[bytes], accept: set[str] | None = None,
                replies: bool = True, peer: str = "") -> None:
        """Handle one multipart message; never raises."""
        self.stats["received"] += 1
        route, payload = list(frames[:-1]), frames[-1] if frames else b""
        if sock.type == zmq.SUB:
            route = []
        try:
            env = decode(payload)
        except CubeError as e:
            self._refuse(sock, route, e, reply_id_hint(payload), replies)
            return
        if self.traffic is not None:
            self.traffic.received(sock, env.type)
        env.route = route
        env.peer = peer
        if env.is_reply:
            self._on_reply(env, sock)
            return
        try:
            if accept is not None and env.type not in accept:
                raise CubeError(UNKNOWN_TYPE, f"{self.name} does not accept {env.type!r} on this socket")
            schema.validate(env.type, env.body)
            method = self.HANDLERS.get(env.type)
            if method is None:
                raise CubeError(UNKNOWN_TYPE, f"{self.name} does not handle {env.type!r}")
            self.admit(sock, env)
            handler = self.handler_for(sock, env, method)
        except Ignored as e:  # a peer we owe nothing, not even an error (it could learn from it)
            self.stats["ignored." + e.why] += 1
            if self.traffic is not None:
                self.traffic.refused(sock, env.type)
            self._throttled.log(logging.INFO, "ignored." + e.why, "%s: ignored %s: %s", self.name, env.type, e.why)
            return
        except CubeError as e:
            self._refuse(sock, route, e, env.id, replies, env.type)
            return
        if replies:
            env.respond = self._responder(sock, env)
        self.stats["handled." + env.type] += 1
        try:
            result = handler(env)
        except CubeError as e:
            self._throttled.log(logging.INFO, "refused." + env.type, "%s: %s refused: %s", self.name, env.type,
                                e.message)
            if env.respond:
                env.respond(error=e)
            return
        except Exception as e:
            self.stats["handler_errors"] += 1
            log.exception("%s: handler for %s failed", self.name, env.type)
            if env.respond:
                env.respond(error=CubeError(INTERNAL, f"{self.name} failed on {env.type}: {e}"))
            return
        if result is not None and env.respond:
            env.respond(result)

    def _responder(self, sock: zmq.Socket, env: Envelope) -> Callable[..., None]:
        def respond(body: dict[str, Any] | None = None, error: CubeError | None = None) -> None:
            # Answered once: later calls do nothing. Replacing it also breaks the reference cycle
            # env -> respond -> env, so the request is freed now, not by a garbage collection.
            env.respond = _answered
            out = env.error(error.code, error.message, self.name) if error else env.reply(body, self.name)
            payload = out.encode()
            if len(payload) > codec.MAX_FRAME:  # the peer could not read it
                self.stats["replies_too_large"] += 1
                log.error("%s: reply to %s is larger than a frame; answering with an error", self.name, env.type)
                out = env.error(INTERNAL, f"the reply to {env.type} would exceed the {codec.MAX_FRAME} byte "
                                          f"frame limit (ask for less: a smaller page or tail)", self.name)
                payload = out.encode()
            self.send(sock, out, payload)
        return respond

    def _refuse(self, sock: zmq.Socket, route: list[bytes], err: CubeError, re: str | None,
                replies: bool, msg_type: str = "") -> None:
        self.stats["refused." + err.code] += 1
        if self.traffic is not None:
            self.traffic.refused(sock, msg_type)
        self._throttled.warning(err.code, "%s: refused %s message: %s", self.name, msg_type or "a", err.message)
        if replies and sock.type in (zmq.ROUTER, zmq.DEALER):
            out = Envelope(REPLY_ERROR, {"code": err.code, "message": err.message},
                           sender=self.name, re=re, route=route)
            self.send(sock, out)

    def _on_reply(self, env: Envelope, sock: zmq.Socket | None = None) -> None:
        pending = self._outstanding.get(env.re or "")
        if pending is not None and sock is not None and not _answers(pending, env, sock):
            # A reply must come back the way its request went: on that socket and, on a ROUTER,
            # from that peer. Anything else is a forgery (request ids can be guessed).
            self.stats["forged_replies"] += 1
            self._throttled.warning("forged", "%s: dropped a reply to %s from the wrong peer", self.name,
                                    pending.env.type)
            return
        if pending is None:
            self.stats["unmatched_replies"] += 1
            if env.type == REPLY_ERROR:
                log.info("%s: error from %s: %s", self.name, env.sender, env.body.get("message"))
            return
        if env.type == REPLY_ERROR and env.body.get("code") in pending.retry_errors:
            self.stats["retried_errors"] += 1  # not an answer yet: the retry timer sends it again
            return
        self._drop_request(pending)
        if pending.timer:
            pending.timer.cancel()
            pending.timer = None  # the timer's callback refers to the request: no cycle left behind
        if pending.on_reply:
            pending.on_reply(env)

    # ---- sending ----------------------------------------------------------------------------
    def send(self, sock: zmq.Socket, env: Envelope, payload: bytes | None = None, topic: str = "") -> bool:
        """Send without blocking; a refused send (peer gone, high-water mark) is counted and logged.
        On a PUB socket the topic frame is `topic`, by default the message type."""
        if not env.sender:
            env.sender = self.name
        frames = [*env.route, payload if payload is not None else env.encode()]
        if sock.type == zmq.PUB:
            frames = [(topic or env.type).encode(), frames[-1]]
        if self.outbox is None:
            return self.transmit(sock, frames, env)
        return self.outbox(self, sock, frames, env)

    def transmit(self, sock: zmq.Socket, frames: list[bytes], env: Envelope) -> bool:
        """The real send, after any fault injection."""
        if self.loop.many_sockets:  # a send, even a refused one, may take in the socket's signal
            self.loop.sent_on(sock)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            self.stats["sent"] += 1
            if self.traffic is not None:
                self.traffic.sent(sock, env.type)
            return True
        except zmq.Again:
            self.stats["dropped.hwm"] += 1
            if self.traffic is not None:
                self.traffic.dropped(sock, env.type)
            self._throttled.warning("dropped.hwm", "%s: %s to %s dropped: peer not reachable or too far behind",
                                    self.name, env.type, self.peer_name(env.route) or "peer")
        except zmq.ZMQError as e:
            self.stats["dropped.unroutable"] += 1
            if self.traffic is not None:
                self.traffic.dropped(sock, env.type)
            self._throttled.warning("dropped.unroutable", "%s: %s to %s dropped: %s",
                                    self.name, env.type, self.peer_name(env.route) or "peer", e)
        return False

    def request(self, sock: zmq.Socket, env: Envelope, on_reply: ReplyCallback | None = None,
                retry_every: float | None = None, tries: int | None = None,
                timeout: float | None = None, key: Any = None,
                retry_errors: frozenset[str] = frozenset(), backoff: float = 1.0,
                max_every: float | None = None) -> str:
        """Send `env` and remember it until a reply with re=env.id comes back.

        With `retry_every`, the same envelope (same id, so the receiver can tell a repeat) is
        re-sent until answered, `tries` times at most (None: until cancelled). With `timeout`
        and no retries, `on_reply(None)` is called when no answer came. A newer request with
        the same `key` replaces an older one. With `backoff` > 1 each re-send waits that much longer
        than the last (at most `max_every`, give or take a quarter). An error reply whose code is in `retry_errors`
        (e.g. the peer's own store is restarting) is not an answer: the request is re-sent.
        """
        if key is not None and key in self._keyed:
            self.cancel(self._keyed[key])
        if not env.sender:
            env.sender = self.name
        try:
            payload = env.encode()
            if len(payload) > codec.MAX_FRAME:
                raise ValueError(f"{len(payload)} bytes, more than a frame ({codec.MAX_FRAME})")
        except Exception as e:  # a value msgpack cannot carry, or too much: nothing was sent
            self.stats["unsendable_requests"] += 1
            log.error("%s: cannot send %s: %s", self.name, env.type, e)
            if on_reply is not None:
                refused = env.error(BAD_REQUEST, f"{env.type} could not be sent: {e}", self.name)
                self.loop.call_later(0, lambda: on_reply(refused))
            return env.id
        item = Outstanding(env, sock, on_reply, retry_every, tries, key=key, retry_errors=retry_errors,
                           backoff=backoff, max_every=max_every)
        self._outstanding[env.id] = item
        if key is not None:
            self._keyed[key] = env.id
        self.send(sock, env, payload)
        self._arm(item, retry_every or timeout)
        return env.id

    def cancel(self, request_id: str) -> None:
        item = self._outstanding.get(request_id)
        if item is not None:
            self._drop_request(item)
            if item.timer:
                item.timer.cancel()
                item.timer = None

    def cancel_where(self, predicate: Callable[[Any], bool]) -> None:
        """Cancel every keyed request whose key matches (e.g. all commands to a lost worker)."""
        for key in [k for k in self._keyed if predicate(k)]:
            self.cancel(self._keyed[key])

    def reroute(self, predicate: Callable[[Any], bool], route: list[bytes]) -> None:
        """Keyed requests whose key matches are re-sent to `route` from now on (a peer that came
        back on a new connection, e.g. a worker after a reconnect)."""
        for key, request_id in self._keyed.items():
            item = self._outstanding.get(request_id)
            if item is not None and predicate(key):
                item.env.route = list(route)

    def retarget(self, old: zmq.Socket, new: zmq.Socket) -> None:
        """Outstanding requests follow a reconnect instead of retrying on a closed socket."""
        for item in self._outstanding.values():
            if item.sock is old:
                item.sock = new

    def _drop_request(self, item: Outstanding) -> None:
        self._outstanding.pop(item.env.id, None)
        if item.key is not None and self._keyed.get(item.key) == item.env.id:
            del self._keyed[item.key]

    def _arm(self, item: Outstanding, delay: float | None) -> None:
        if delay is None:
            return
        item.timer = self.loop.call_later(delay, lambda: self._expire(item))

    def _expire(self, item: Outstanding) -> None:
        if self._outstanding.get(item.env.id) is not item:
            return
        if item.retry_every is not None and (item.tries_left is None or item.tries_left > 1) \
                and self.may_resend(item.sock, item.env):
            if item.tries_left is not None:
                item.tries_left -= 1
            self.stats["retries"] += 1
            item.env.ts = time.time()
            self.send(item.sock, item.env)
            if item.backoff > 1.0:  # an overloaded peer is not answered faster by asking more often
                item.retry_every = min(item.retry_every * item.backoff, item.max_every or item.retry_every * item.backoff)
                self._arm(item, item.retry_every * random.uniform(0.75, 1.25))  # and not all at once
            else:
                self._arm(item, item.retry_every)
            return
        self._drop_request(item)
        if item.on_reply:
            item.on_reply(None)


def _answers(pending: Outstanding, env: Envelope, sock: zmq.Socket) -> bool:
    if sock is not pending.sock:
        return False
    return sock.type != zmq.ROUTER or env.route == pending.env.route


def _answered(body: dict[str, Any] | None = None, error: CubeError | None = None) -> None:
    """What `respond` becomes once a request was answered: a second answer is dropped."""


def tune_gc() -> None:
    """Collect garbage less often than Python's default (every 700 allocations): an actor holds
    many long-lived objects (tasks, timers), and each young collection of a busy loop would
    otherwise rescan them; reference counting frees almost everything anyway."""
    gc.set_threshold(20_000, 20, 20)


def _user_id(frame: zmq.Frame) -> str:
    """The ZAP User-Id of the connection a frame came on ("" where there is none)."""
    try:
        return frame.get("User-Id") or ""
    except zmq.ZMQError:
        return ""


