"""The event log (cube/manager/events.py) and its filters (cube/messages/events.py), over the
FakeStore: numbering across a restart, retention by count and by age, paged replay, seeking a time."""
from __future__ import annotations

import pytest

from cube.manager.events import LOG, META, EventLog, key
from cube.manager.taskbook import TaskBook
from cube.messages.events import FilterError, matches, parse_filters
from cube.model.task import Task
from tests.unit import fakes
from tests.unit.fakes import Calls, FakeStore


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def loaded(store: FakeStore, **kw) -> EventLog:
    log = EventLog(store, **kw)
    got = Calls()
    log.load(got)
    store.flush()
    assert got.one()[1] is None
    return log


def record(log: EventLog, n: int, clock: Clock | None = None, step: float = 1.0, **fields) -> list[dict]:
    out = []
    for i in range(n):
        out.append(log.record({"type": "node", "node": f"w{i}", "action": "joined", **fields}, "node.event"))
        if clock is not None:
            clock.now += step
    log.store.flush(limit=len(out) + 10)
    return out


def replay(log: EventLog, after: int = 0, **kw) -> list[dict]:
    """Every page, as a client reads them."""
    events: list[dict] = []
    while True:
        got = Calls()
        log.read(after, got, **kw)
        log.store.flush()
        page, error = got.one()
        assert error is None
        events += page["events"]
        after = page["next"]
        if not page["more"]:
            return events


def test_numbers_once_and_publishes_only_what_is_stored():
    published = []
    store = FakeStore()
    log = EventLog(store, lambda topic, body: published.append((topic, body["seq"])))
    a = log.record({"type": "node", "node": "w1", "action": "joined"}, "node.event")
    b = log.record({"type": "node", "node": "w2", "action": "joined"}, "node.event")
    assert (a["seq"], b["seq"]) == (1, 2) and not published  # not before the Store has them
    store.next().refuse()  # the first write was not applied: its number is not reused
    store.next().answer()
    assert published == [("node.event", 2)] and log.published == 2
    c = log.record({"type": "node", "node": "w3", "action": "lost"}, "node.event")
    store.flush()
    assert c["seq"] == 3 and [k for k, _ in store.backend.list(LOG)] == [key(2), key(3)]


def test_the_change_and_its_event_are_one_batch():
    store = FakeStore()
    log = EventLog(store)
    log.record({"type": "node", "node": "w1", "action": "drained"}, "node.event",
               ops=[("put", "nodes", "w1", {"name": "w1"})])
    (req,) = store.pending
    assert [(op, ns) for op, ns, _, _ in req.ops] == [("put", "nodes"), ("put", LOG), ("put", META)]


def test_numbers_continue_after_a_restart_even_when_writes_landed_out_of_order():
    store = FakeStore()
    log = loaded(store)
    record(log, 5)
    # A batch that reached the Store after a later one: the hint says 3, the log holds 5.
    store.backend.put(META, "event_seq", 3)
    again = loaded(store)
    assert again.seq == 5 and again.published == 5 and again.first == 1
    assert again.record({"type": "node", "node": "w", "action": "back"}, "node.event")["seq"] == 6


def test_a_task_change_writes_its_event_to_the_log_with_the_task_name():
    store = FakeStore()
    book = TaskBook(store)
    fakes.add(book, Task(id="t1", name="web", image="busybox"))
    (stored,) = [v for _, v in store.backend.list(LOG)]
    assert stored["type"] == "task" and stored["name"] == "web" and stored["task_id"] == "t1"
    assert stored["seq"] == book.seq == 1 and stored["state"] == "Pending"
    again = TaskBook(store)
    fakes.load(again)
    assert again.seq == 1


def test_replay_pages_and_filters():
    store = FakeStore()
    log = loaded(store)
    record(log, 2500)
    got = Calls()
    log.read(0, got, limit=1000)
    store.flush()
    page = got.one()[0]
    assert len(page["events"]) == 1000 and page["next"] == 1000 and page["more"]
    events = replay(log, 0)
    assert [e["seq"] for e in events] == list(range(1, 2501))
    assert [e["seq"] for e in replay(log, 2490)] == list(range(2491, 2501))
    assert [e["seq"] for e in replay(log, 10, until=20)] == list(range(11, 21))
    assert [e["node"] for e in replay(log, 0, filters={"node": ["w7", "w9"]})] == ["w7", "w9"]
    assert replay(log, 2500) == []


def test_retention_by_count():
    store = FakeStore()
    log = loaded(store, kept=1000)
    record(log, 12_000)
    log.prune()
    store.flush()  # one chunk leads to the next until the bound holds
    keys = [int(k) for k, _ in store.backend.list(LOG)]
    assert keys == list(range(11_001, 12_001)) and log.first == 11_001


def test_retention_by_age():
    clock = Clock()
    store = FakeStore()
    log = loaded(store, max_age=100.0, clock=clock)
    record(log, 300, clock)  # times 1000 .. 1299
    clock.now = 1250.0  # events before 1150 are too old
    log.prune()
    store.flush()
    keys = [int(k) for k, _ in store.backend.list(LOG)]
    assert keys == list(range(151, 301)) and log.first == 151 and log.first_time == 1150.0
    n = len(store.requests)
    log.prune()  # nothing old: no request at all
    assert len(store.requests) == n
    # After a restart, the oldest is read back.
    again = loaded(store, max_age=100.0, clock=clock)
    assert again.first == 151 and again.first_time == 1150.0


def test_seek_finds_the_first_event_at_a_time():
    clock = Clock()
    store = FakeStore()
    log = loaded(store, clock=clock)
    record(log, 1000, clock)  # event n at time 999 + n
    for when, expect in ((1500.0, 501), (0.0, 1), (5000.0, None), (1500.5, 502)):
        got = Calls()
        log.seek(when, got)
        store.flush()
        after, error = got.one()
        assert error is None
        events = replay(log, after)
        assert (events[0]["seq"] if events else None) == expect
    assert len(store.requests) < 2000  # a bisection, not a scan


def test_filters():
    assert parse_filters(["task=web", "type=task", "type=node"]) == {"task": ["web"], "type": ["task", "node"]}
    for bad in ("task", "colour=red", "type=pod", "node="):
        with pytest.raises(FilterError):
            parse_filters([bad])
    task = {"type": "task", "task_id": "abc123", "name": "web.1", "worker": "w1", "service": "web"}
    node = {"type": "node", "node": "w1", "action": "lost"}
    svc = {"type": "service", "service": "web", "message": "created"}
    assert matches(task, {"task": ["abc1"]}) and matches(task, {"task": ["web.1"]}) and not matches(node, {"task": ["abc1"]})
    assert not matches(task, {"task": ["ab"]}) and matches(task, {"task": ["abc123"]})
    assert matches(task, {"node": ["w1"]}) and matches(node, {"node": ["w1"]}) and not matches(svc, {"node": ["w1"]})
    assert matches(task, {"service": ["web"]}) and matches(svc, {"service": ["web"]}) and not matches(node, {"service": ["web"]})
    assert matches(node, {"type": ["node", "task"], "node": ["w1"]}) and not matches(node, {"type": ["task"]})


# ---- the follower (cube/cli/events.py): replay, then live, each event once ----------------------------

class Manager:
    """events.since over a list of stored events, as the Manager answers it (pages of `limit`)."""

    def __init__(self, stored: list[int], limit: int = 3) -> None:
        self.stored = stored
        self.limit = limit
        self.asked: list[dict] = []

    def fetch(self, body: dict) -> dict:
        self.asked.append(body)
        after, until = body.get("seq", max(self.stored, default=0)), body.get("until")
        wanted = [s for s in self.stored if s > after and (until is None or s <= until)]
        page = wanted[:self.limit]
        more = len(wanted) > self.limit
        last = page[-1] if page else after
        gaps = [s for s in range(after + 1, last) if s not in self.stored]
        if until is not None and not more:
            gaps += [s for s in range(last + 1, until + 1)]
            last = max(last, until)
        return {"events": [ev(s) for s in page], "next": last, "more": more, "gaps": gaps,
                "last": max(self.stored, default=0), "first": 1, "after": after}


def ev(seq: int, **kw) -> dict:
    return {"seq": seq, "type": "task", "task_id": f"t{seq}", "name": f"n{seq}", "state": "Running", **kw}


def follower(stored: list[int], filters: dict | None = None):
    from cube.cli.events import Follower
    m = Manager(stored)
    printed: list[int] = []
    f = Follower(m.fetch, lambda e: printed.append(e["seq"]), filters or {}, matches)
    return f, m, printed


def test_follower_replays_then_follows_without_a_repeat():
    f, m, printed = follower(list(range(1, 9)))
    f.replay({"seq": 0})
    assert printed == list(range(1, 9)) and len(m.asked) == 3  # pages of 3
    for s in (7, 8, 9, 10):  # 7 and 8 were replayed: published while replaying
        f.live(ev(s))
    assert printed == list(range(1, 11))


def test_follower_fills_a_gap_from_the_store():
    f, m, printed = follower([1, 2, 3, 4, 5, 6])
    f.replay({})  # from now: nothing printed
    assert printed == [] and f.last == 6
    m.stored += [7, 8, 9, 10]
    f.live(ev(10))  # 7..9 were lost on the way
    assert printed == [7, 8, 9, 10] and m.asked[-1]["until"] == 9
    m.stored += [11, 12]
    f.heard(12)  # a heartbeat says 12 was published: the tail was lost
    assert printed == [7, 8, 9, 10, 11, 12]
    f.heard(12)
    assert len(m.asked) == 3  # nothing missing: nothing asked


def test_follower_prints_a_late_event_once_and_never_asks_twice_for_a_hole():
    f, m, printed = follower([1, 2, 4])  # 3 was not stored yet (still in flight) when read
    f.replay({"seq": 0})
    assert printed == [1, 2, 4] and 3 in f.holes
    f.live(ev(3))
    f.live(ev(3))
    assert printed == [1, 2, 4, 3]
    m.stored += [5, 7]
    f.live(ev(7))  # 5 is in the Store, 6 never will be (a write refused)
    f.heard(7)
    assert printed == [1, 2, 4, 3, 5, 7] and len(m.asked) == 2


def test_follower_filters_replayed_and_live_events_alike():
    f, m, printed = follower([1, 2, 3], {"task": ["t2", "t5"]})
    f.replay({"seq": 0})
    m.stored += [4, 5]
    f.live(ev(4))
    f.live(ev(5))
    assert printed == [2, 5]


def test_since_values():
    from cube.cli.args import UsageError
    from cube.cli.events import since_value
    assert since_value("0", 1000.0) == {"seq": 0} and since_value("1200", 1000.0) == {"seq": 1200}
    assert since_value("10m", 1000.0) == {"time": 400.0} and since_value("1h30m", 10_000.0) == {"time": 4600.0}
    assert since_value("1d", 100_000.0) == {"time": 13_600.0}
    for bad in ("", "ten", "10x", "-5", "m"):
        with pytest.raises(UsageError):
            since_value(bad, 0.0)


class TurnLoop:
    """The Manager's loop as far as the event log sees it: callbacks run when the turn ends."""

    def __init__(self) -> None:
        self.soon: list = []

    def call_later(self, delay: float, fn) -> None:
        self.soon.append(fn)

    def end_turn(self) -> None:
        soon, self.soon = self.soon, []
        for fn in soon:
            fn()


def test_the_seq_hint_is_written_once_a_loop_turn_and_numbers_still_continue():
    import types
    store = FakeStore()
    loop = TurnLoop()
    store.actor = types.SimpleNamespace(loop=loop)
    log = loaded(store)
    record(log, 5)  # one turn: five batches, one hint (the first event's number)
    assert store.seq_writes == [1]
    loop.end_turn()
    record(log, 2)  # the next turn
    assert store.seq_writes == [1, 6]
    again = loaded(FakeStore(store.backend))  # the start-up scan finds what is after the hint
    assert again.seq == 7 and again.record({"type": "node", "node": "w", "action": "back"}, "node.event")["seq"] == 8


def test_pruning_every_event_keeps_the_numbers_going_after_a_restart():
    clock = Clock()
    store = FakeStore()
    log = loaded(store, max_age=10.0, clock=clock)
    record(log, 20, clock)
    store.backend.put(META, "event_seq", 3)  # a hint behind (written with an early event only)
    clock.now += 1000
    log.prune()
    store.flush()
    assert store.backend.list(LOG) == [] and store.backend.get(META, "event_seq") == 20
    again = loaded(FakeStore(store.backend))
    assert again.seq == 20  # 1..20 are never handed out again
