"""A worker's link to its manager: one DEALER, hello, heartbeats, reconnects (docs/protocol.md).

The link says hello when it starts and whenever the manager forgets it (a heartbeat answered
`not_found`) or falls silent (`liveness` heartbeats without a reply: the Paranoid Pirate pattern).
A refused or unanswered hello is retried on a fresh connection after a backoff that doubles up to
MAX_BACKOFF, with jitter so that many workers cut off together do not come back in lockstep.
What goes into a hello is the owner's business: `make_hello(send)` builds the body, possibly off
the loop, and calls `send(body)`, or `send(None)` when it cannot (the link retries later).

With a `membership` (cube/security/membership.py) the link speaks CURVE to the pinned manager key,
names no connection identity (the manager routes by the key that spoke; docs/security.md), and,
before its first hello, proves the join token with `worker.join`. A join the manager refuses, or
a manager that no longer knows our key when we hold no token, is fatal: `on_fatal(message)`.

Several managers (docs/ha.md): `endpoint` may list them, comma-separated. Only the leader
serves; a follower answers `not_leader` with the leader's workers address, and the link goes
there. A manager that falls silent or cannot be reached makes the link try the next one.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable

import zmq

from cube.messages import worker as msg
from cube.wire import sockets
from cube.wire.actor import Actor
from cube.wire.envelope import REPLY_ERROR, Envelope
from cube.wire.errors import FORBIDDEN, NOT_FOUND, NOT_JOINED, NOT_LEADER, UNAVAILABLE, leader_in
from cube.wire.handshake import REFUSED, HandshakeWatch

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 4.0
HELLO_TIMEOUT = 2.0
REFUSALS_BEFORE_GIVING_UP = 5  # handshakes cut short in a row without a reason
LOADING_RETRY = 0.3  # seconds before a hello refused as `unavailable` (manager loading) is sent again
MAX_LEADERLESS_WAIT = 2.0  # seconds between hellos at most while no manager leads (doubling from LOADING_RETRY)
# Seconds a manager that fell silent is not gone back to when a follower names it leader: about a
# lease (docs/ha.md), long enough for a dead leader to be replaced; after that the follower's word
# is believed (the leader was alive, one hello or heartbeat was lost), so no worker stays away for
# good from a live leader, holding containers it has been replaced for.
MAX_PACE = 60.0  # seconds between heartbeats at most, whatever a manager asks
SILENT_HOLD = 5.0

Send = Callable[[dict[str, Any] | None], None]



def advised_seconds(body: dict[str, Any], key: str) -> float:
    """A pace the manager advises in `body[key]` (seconds), at most MAX_PACE; 0.0 when absent or
    not a positive number (the worker keeps its own)."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return 0.0
    return min(float(value), MAX_PACE)

class ManagerLink:
    def __init__(self, actor: Actor, endpoint: str, identity: str, accept: set[str],
                 make_hello: Callable[[Send], None], on_registered: Callable[[dict[str, Any]], None],
                 heartbeat: float = 1.0, liveness: int = 3, jitter: Callable[[], float] = random.random,
                 membership: Any = None, address: str = "", on_fatal: Callable[[str], None] | None = None,
                 on_pace: Callable[[dict[str, Any]], None] | None = None):
        self.actor = actor
        self.endpoints = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.endpoint = self.endpoints[0]
        self.silent = ""  # the manager we last left because it did not answer
        self.silent_at = 0.0  # when (the loop's clock)
        self._hello_soon = False
        self._leaderless = 0  # `not_leader` answers in a row that named no live leader
        self.identity = identity
        self.accept = accept
        self.make_hello = make_hello
        self.on_registered = on_registered
        self.heartbeat = heartbeat
        self.liveness = liveness  # missed heartbeat replies before the manager is presumed gone
        self.jitter = jitter
        self.membership = membership
        self.address = address  # the address this worker joins with
        self.on_fatal = on_fatal or (lambda why: log.error("%s: %s", actor.name, why))
        self.on_pace = on_pace or (lambda body: None)
        self.sock: zmq.Socket | None = None
        self.watch: HandshakeWatch | None = None
        self.registered = False
        self.missed = 0
        self.backoff = FIRST_BACKOFF
        self._hello_pending = False
        self._timer: Any = None
        self.connect()

    def connect(self) -> None:
        """A fresh connection; requests still waiting for an answer move to it."""
        old, old_watch = self.sock, self.watch
        # Not `immediate`: the hello must wait for the connection in progress, not be dropped.
        if self.membership is not None:
            def watch(sock: zmq.Socket) -> None:
                self.watch = HandshakeWatch(sock, unexplained_limit=REFUSALS_BEFORE_GIVING_UP)
            self.sock = sockets.dealer(self.actor.loop.ctx, self.endpoint, curve=self.membership.curve(),
                                       before_connect=watch)
            self.actor.loop.add_reader(self.watch.monitor, self._on_handshake)
        else:
            self.sock = sockets.dealer(self.actor.loop.ctx, self.endpoint, identity=self.identity)
        self.actor.serve(self.sock, accept=self.accept)
        if old_watch is not None:
            self.actor.loop.remove_reader(old_watch.monitor)
            old_watch.close()
        if old is not None:
            self.actor.retarget(old, self.sock)
            self.actor.loop.remove_reader(old)
            old.close(linger=0)

    def start(self) -> None:
        self._timer = self.actor.loop.call_every(self.heartbeat, self._beat)
        self.hello()

    # ---- several managers (docs/ha.md) ----------------------------------------------------------
    def move_on(self, leader: str | None = None) -> None:
        """To the leader a follower named, else to the next manager in the list; a fresh
        connection either way (with one manager: the same one, reconnected)."""
        if leader:
            self.endpoint = leader
        elif len(self.endpoints) > 1:
            self.silent = self.endpoint  # it did not answer: a follower may still name it leader
            self.silent_at = self.actor.loop.clock()
            i = self.endpoints.index(self.endpoint) if self.endpoint in self.endpoints else -1
            self.endpoint = self.endpoints[(i + 1) % len(self.endpoints)]
        self.connect()

    def _not_leader(self, reply: Envelope | None) -> bool:
        """A follower answered: go to the leader it names (or the next manager), and say hello
        there soon. True when that was the case."""
        if reply is None or reply.type != REPLY_ERROR or reply.body.get("code") != NOT_LEADER:
            return False
        self.registered = False
        self._hello_pending = False
        leader = leader_in(str(reply.body.get("message", "")))
        if leader is not None and "://" not in leader:
            leader = f"tcp://{leader}"
        if leader == self.silent and self.actor.loop.clock() - self.silent_at >= SILENT_HOLD:
            self.silent = ""  # a follower still names it well after it fell silent: it is alive after all
        if leader is None or leader == self.silent:  # none yet, or the one that just fell silent:
            log.info("%s: manager %s does not lead, and knows no live leader yet; asking it again soon",
                     self.actor.name, self.endpoint)  # a live follower learns the next leader first
            self._leaderless += 1  # (each hello lists our containers: back off while etcd elects nobody)
        else:
            log.info("%s: manager %s does not lead; going to the leader at %s", self.actor.name, self.endpoint, leader)
            self.move_on(leader)
            self._leaderless = 0
        if not self._hello_soon:  # one hello, however many replies said `not_leader`
            self._hello_soon = True
            wait = min(LOADING_RETRY * 2 ** min(self._leaderless, 8), MAX_LEADERLESS_WAIT)
            self.actor.loop.call_later(wait * (0.5 + self.jitter()), self._hello_again)
        return True

    def _hello_again(self) -> None:
        self._hello_soon = False
        if not self.registered:
            self.hello()

    # ---- hello --------------------------------------------------------------------------------
    def hello(self) -> None:
        if self._hello_pending:
            return
        self._hello_pending = True
        if self.membership is not None and self.membership.needs_join(self.identity):
            self._join()
            return
        self.make_hello(self._send_hello)

    def _on_handshake(self, _monitor: zmq.Socket) -> None:
        """The manager turned our key down at handshake (revoked), or does not hold the key we
        pinned (a token for another manager, or one re-created since): no retry can help."""
        if self.watch is not None and self.watch.verdict() == REFUSED:
            self.on_fatal(f"the manager at {self.endpoint} refused this worker's secure handshake: its key was "
                          f"removed (`cube node rm`), or the manager does not hold the key pinned from the join "
                          f"token (a token for another manager, or a manager re-created since: join again with "
                          f"its new token)")

    # ---- joining (docs/security.md) -----------------------------------------------------------
    def _join(self) -> None:
        secret = self.membership.join_secret()
        if secret is None:
            self._hello_pending = False
            joined = self.membership.joined_as
            if joined and joined != self.identity:
                self.on_fatal(f"this worker's key joined as {joined!r}, and speaks for that name only: start it "
                              f"with --name {joined}, or join anew under {self.identity!r} (remove its curve/ "
                              f"directory, then start it with a join token)")
            else:
                self.on_fatal("the manager does not know this worker's key (it was removed, or the manager's "
                              "data was reset): start the worker again with a join token (CUBE_WORKER_JOIN)")
            return
        body = {"name": self.identity, "address": self.address, "secret": secret}
        self.actor.request(self.sock, Envelope(msg.JOIN, body), self._on_join_reply, timeout=HELLO_TIMEOUT)

    def _on_join_reply(self, reply: Envelope | None) -> None:
        self._hello_pending = False
        if self._not_leader(reply):
            return
        if reply is not None and reply.type == REPLY_ERROR and reply.body.get("code") == FORBIDDEN:
            self.on_fatal(f"the manager at {self.endpoint} refused to let this worker join: "
                          f"{reply.body.get('message')}")
            return
        if reply is None or reply.type == REPLY_ERROR:
            self.move_on()
            self._retry_later("no answer to join" if reply is None else str(reply.body.get("message")))
            return
        log.info("%s: joined the cluster of manager %s", self.actor.name, self.endpoint)
        self.membership.joined(self.identity)
        self.hello()

    def _send_hello(self, body: dict[str, Any] | None) -> None:
        if body is None:  # the owner could not say what it has: try again later
            self._hello_pending = False
            self._retry_later("nothing to say yet")
            return
        self.actor.request(self.sock, Envelope(msg.HELLO, body), self._on_hello_reply, timeout=HELLO_TIMEOUT)

    def _on_hello_reply(self, reply: Envelope | None) -> None:
        self._hello_pending = False
        if self._not_leader(reply):
            return
        if reply is not None and reply.type == REPLY_ERROR and reply.body.get("code") == UNAVAILABLE:
            # The manager is there but not ready (loading its state): ask again soon, on the
            # same connection, without backing off.
            self.actor.loop.call_later(LOADING_RETRY * (0.5 + self.jitter()), self.hello)
            return
        if reply is not None and reply.type == REPLY_ERROR and reply.body.get("code") in (NOT_JOINED, FORBIDDEN):
            self._not_member(reply)
            return
        if reply is None or reply.type == REPLY_ERROR:
            self.move_on()
            self._retry_later("no answer" if reply is None else str(reply.body.get("message")))
            return
        self.registered = True
        self._leaderless = 0
        self.silent = ""
        self.missed = 0
        self.backoff = FIRST_BACKOFF
        self._pace(reply.body)
        log.info("%s: registered with manager %s", self.actor.name, self.endpoint)
        self.on_registered(reply.body)

    def _pace(self, body: dict[str, Any]) -> None:
        """The manager says how often to report (more seldom in a large cluster: docs/architecture.md,
        "Pace"); the actor hears it too (a worker's metrics samples follow it)."""
        beat = advised_seconds(body, "heartbeat")
        if beat and beat != self.heartbeat:
            self.heartbeat = beat
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.actor.loop.call_every(self.heartbeat, self._beat)
        self.on_pace(body)

    def _retry_later(self, why: str) -> None:
        delay = self.backoff * (0.5 + self.jitter())  # 50% to 150% of the backoff
        log.warning("%s: manager at %s did not accept hello (%s); retrying in %.1fs",
                    self.actor.name, self.endpoint, why, delay)
        self.actor.loop.call_later(delay, self.hello)
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    # ---- heartbeats ---------------------------------------------------------------------------
    def _beat(self) -> None:
        if not self.registered:
            return
        self.missed += 1
        if self.missed > self.liveness:
            log.warning("%s: manager silent for %d heartbeats; reconnecting", self.actor.name, self.missed - 1)
            self.registered = False
            self.move_on()
            # A heartbeat first: the manager routes our commands by the connection our key last
            # spoke on, and the hello may take a while to build (a container listing).
            self._send_beat()
            self.hello()
            return
        self._send_beat()

    def _send_beat(self) -> None:
        self.actor.request(self.sock, Envelope(msg.HEARTBEAT, {"name": self.identity}), self._on_beat_reply,
                           timeout=self.heartbeat * 3)

    def _not_member(self, reply: Envelope) -> None:
        """The manager refused who we are: join again if we can, or give up with its reason."""
        self.registered = False
        if reply.body.get("code") == NOT_JOINED and self.membership is not None:
            self.membership.forgotten()
            self.hello()  # joins first, or reports that it cannot
            return
        self.on_fatal(f"the manager at {self.endpoint} refused this worker: {reply.body.get('message')}")

    def _on_beat_reply(self, reply: Envelope | None) -> None:
        if reply is None:
            return
        if self._not_leader(reply):  # our manager stopped leading
            return
        if reply.type == REPLY_ERROR and reply.body.get("code") == NOT_JOINED:
            self._not_member(reply)
            return
        self.missed = 0
        if reply.type != REPLY_ERROR:
            self._pace(reply.body)
        if reply.type == REPLY_ERROR and reply.body.get("code") == NOT_FOUND:
            log.info("%s: manager does not know us (restarted, or we were lost); saying hello", self.actor.name)
            self.registered = False
            self.hello()
