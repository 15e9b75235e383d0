"""Actor.request's re-sends with `backoff` (cube/wire/actor.py), on a Loop whose clock the test
moves: each re-send waits `backoff` times longer than the one before, at most `max_every`,
jittered by a quarter either way; `backoff=1` keeps the fixed interval, without jitter; `tries`
still bounds the sends, and on_reply(None) comes after the last one has had its wait."""
from __future__ import annotations

import random

import pytest

import cube.messages  # noqa: F401  (declares every schema)
from cube.messages import node as node_msg
from cube.wire import actor as actor_mod
from cube.wire.actor import Actor
from cube.wire.envelope import Envelope
from cube.wire.errors import UNAVAILABLE
from cube.wire.loop import Loop
from tests.unit.fakes import FakeSock

PING = node_msg.PING
STEP = 0.001  # the clock moves by this much per turn of the loop
SLACK = STEP * 1.5  # a send is seen at the first turn at or after it was due


class Clock:
    def __init__(self) -> None:
        self.start = self.now = 1000.0
        self.turns = 0

    def __call__(self) -> float:
        return self.now


class Asker(Actor):
    pass


class Rig:
    """An actor on a clocked loop, sending on a FakeSock (a peer that never answers)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.actor = Asker("asker", loop=Loop("asker", clock=self.clock))
        self.sock = FakeSock()
        self.answers: list = []
        self.sent_at: list[float] = []  # clock time of each copy, relative to the first request
        self.gave_up_at: float | None = None

    def request(self, **kw) -> Envelope:
        env = Envelope(PING, {}, route=[b"peer"])

        def on_reply(reply):
            self.answers.append(reply)
            if reply is None:
                self.gave_up_at = self.clock.now - self.clock.start
        self.actor.request(self.sock, env, on_reply, **kw)
        self._saw_sends()
        return env

    def _saw_sends(self) -> None:
        while len(self.sent_at) < len(self.sock.sent):
            self.sent_at.append(self.clock.now - self.clock.start)

    def run(self, seconds: float) -> None:
        """Move the clock `seconds` forward in steps, one loop turn each."""
        for _ in range(round(seconds / STEP)):
            self.clock.turns += 1
            self.clock.now = self.clock.start + self.clock.turns * STEP  # no accumulated error
            self.actor.loop.run_once(0)
            self._saw_sends()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.sent_at, self.sent_at[1:])]

    def close(self) -> None:
        loop = self.actor.loop
        loop.drain()
        loop.close()
        loop.ctx.term()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def fixed_jitter(monkeypatch, *values: float) -> list[tuple]:
    """random.uniform as cube.wire.actor calls it returns `values` in turn (the last one once
    they run out); the arguments of every call are recorded."""
    calls: list[tuple] = []

    def uniform(a, b):
        calls.append((a, b))
        return values[min(len(calls), len(values)) - 1]
    monkeypatch.setattr(actor_mod.random, "uniform", uniform)
    return calls


def assert_gaps(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want), (got, want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, abs=SLACK), f"wait before copy {i + 2}: {g:.4f}s, expected {w:.4f}s ({got})"


# ---- backoff > 1 -------------------------------------------------------------------------------------

def test_each_resend_waits_twice_as_long_up_to_the_cap(rig, monkeypatch):
    jitter = fixed_jitter(monkeypatch, 1.0)
    env = rig.request(retry_every=0.05, tries=7, backoff=2.0, max_every=0.2)
    rig.run(2.0)
    # 7 copies: 0.05 s after the first, then 0.1, then 0.2 every time (the cap) ...
    assert_gaps(rig.gaps(), [0.05, 0.1, 0.2, 0.2, 0.2, 0.2])
    assert [e.id for e in rig.sock.replies()] == [env.id] * 7  # the same envelope: the peer can tell a repeat
    # ... and after the last one, a capped wait, then the caller hears there was no answer.
    assert rig.answers == [None]
    assert rig.gave_up_at - rig.sent_at[-1] == pytest.approx(0.2, abs=SLACK)
    assert not rig.actor._outstanding and rig.actor.stats["retries"] == 6
    assert jitter == [(0.75, 1.25)] * 6  # every armed re-send wait is jittered by a quarter either way


def test_the_first_wait_is_not_jittered_and_the_jitter_does_not_compound(rig, monkeypatch):
    fixed_jitter(monkeypatch, 0.75, 1.25, 0.75, 1.25, 1.25)
    rig.request(retry_every=0.05, tries=6, backoff=2.0, max_every=0.2)
    rig.run(2.0)
    # The nominal waits are 0.05 (unjittered), 0.1, 0.2, 0.2, 0.2: each jitter scales one wait
    # only; the next grows from the nominal value, not from the jittered one.
    assert_gaps(rig.gaps(), [0.05, 0.1 * 0.75, 0.2 * 1.25, 0.2 * 0.75, 0.2 * 1.25])
    assert rig.answers == [None]
    assert rig.gave_up_at - rig.sent_at[-1] == pytest.approx(0.2 * 1.25, abs=SLACK)


def test_real_jitter_stays_within_a_quarter_of_the_nominal_wait(rig):
    state = random.getstate()
    random.seed(1234)  # reproducible, and the global generator is left as it was
    try:
        rig.request(retry_every=0.05, tries=25, backoff=2.0, max_every=0.2)
        rig.run(6.5)
    finally:
        random.setstate(state)
    gaps = rig.gaps()
    assert len(rig.sent_at) == 25 and rig.answers == [None]
    nominal = [0.05, 0.1] + [0.2] * 22
    for i, (g, n) in enumerate(zip(gaps, nominal)):
        low, high = (n, n) if i == 0 else (0.75 * n, 1.25 * n)
        assert low - SLACK <= g <= high + SLACK, f"wait before copy {i + 2}: {g:.4f}s, nominal {n}s"
    capped = gaps[2:]
    assert max(capped) - min(capped) > 0.02  # the copies of many senders do not line up


def test_without_max_every_the_wait_keeps_growing(rig, monkeypatch):
    fixed_jitter(monkeypatch, 1.0)
    rig.request(retry_every=0.05, tries=6, backoff=2.0)
    rig.run(3.5)
    assert_gaps(rig.gaps(), [0.05, 0.1, 0.2, 0.4, 0.8])
    assert rig.answers == [None]
    assert rig.gave_up_at - rig.sent_at[-1] == pytest.approx(1.6, abs=SLACK)


def test_tries_bounds_the_sends_with_backoff(rig, monkeypatch):
    fixed_jitter(monkeypatch, 1.0)
    rig.request(retry_every=0.05, tries=3, backoff=2.0, max_every=0.2)
    rig.run(1.0)
    assert len(rig.sock.sent) == 3 and rig.answers == [None]
    assert_gaps(rig.gaps(), [0.05, 0.1])
    assert rig.gave_up_at - rig.sent_at[-1] == pytest.approx(0.2, abs=SLACK)


def test_tries_one_sends_once_and_gives_up_after_retry_every(rig, monkeypatch):
    calls = fixed_jitter(monkeypatch, 1.0)
    rig.request(retry_every=0.05, tries=1, backoff=2.0, max_every=0.2)
    rig.run(0.5)
    assert len(rig.sock.sent) == 1 and rig.answers == [None]
    assert rig.gave_up_at == pytest.approx(0.05, abs=SLACK) and calls == []


def test_a_reply_ends_the_resends(rig, monkeypatch):
    fixed_jitter(monkeypatch, 1.0)
    env = rig.request(retry_every=0.05, tries=10, backoff=2.0, max_every=0.2)
    rig.run(0.2)  # copies at 0, 0.05, 0.15
    assert len(rig.sock.sent) == 3
    rig.actor.receive(rig.sock, [b"peer", env.reply({"pong": 1}, "peer").encode()])
    rig.run(2.0)
    assert len(rig.sock.sent) == 3
    assert [r.body for r in rig.answers] == [{"pong": 1}] and not rig.actor._outstanding


def test_a_retryable_error_does_not_reset_or_speed_up_the_backoff(rig, monkeypatch):
    fixed_jitter(monkeypatch, 1.0)
    env = rig.request(retry_every=0.05, tries=6, backoff=2.0, max_every=0.2,
                      retry_errors=frozenset({UNAVAILABLE}))
    rig.run(0.1)  # copies at 0 and 0.05
    busy = env.error(UNAVAILABLE, "my store is restarting", "peer")
    rig.actor.receive(rig.sock, [b"peer", busy.encode()])  # not an answer: the timer sends again
    rig.run(2.0)
    assert_gaps(rig.gaps(), [0.05, 0.1, 0.2, 0.2, 0.2])
    assert rig.answers == [None] and rig.actor.stats["retried_errors"] == 1


def test_a_newer_request_with_the_same_key_starts_again_from_retry_every(rig, monkeypatch):
    fixed_jitter(monkeypatch, 1.0)
    first = rig.request(retry_every=0.05, tries=10, backoff=2.0, max_every=0.2, key=("status", "t1"))
    rig.run(0.3)  # copies at 0, 0.05, 0.15 (the next due at 0.35)
    assert len(rig.sock.sent) == 3
    second = rig.request(retry_every=0.05, tries=3, backoff=2.0, max_every=0.2, key=("status", "t1"))
    rig.run(1.0)
    ids = [e.id for e in rig.sock.replies()]
    assert ids == [first.id] * 3 + [second.id] * 3  # the older one is never sent again
    assert_gaps(rig.gaps()[3:], [0.05, 0.1])  # the newer one's own schedule, from the start
    assert rig.answers == [None]  # the newer one gave up; the replaced one was cancelled, unanswered


# ---- backoff == 1 (the default) ------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"backoff": 1.0}, {"backoff": 1.0, "max_every": 0.01}])
def test_backoff_one_keeps_the_exact_interval_without_jitter(rig, monkeypatch, kw):
    calls = fixed_jitter(monkeypatch, 2.0)  # would double every wait if it were used
    env = rig.request(retry_every=0.05, tries=8, **kw)
    rig.run(1.0)
    assert_gaps(rig.gaps(), [0.05] * 7)
    assert [e.id for e in rig.sock.replies()] == [env.id] * 8
    assert rig.answers == [None]
    assert rig.gave_up_at - rig.sent_at[-1] == pytest.approx(0.05, abs=SLACK)
    assert calls == []
