"""The leader election's logic (cube/ha/election.py) against a fake etcd on a fake clock."""
from __future__ import annotations

import base64

import pytest

from cube.ha.election import Election, Leader
from cube.store.base import StoreInDoubt, StoreUnavailable

KEY = b"/cube/leader"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEtcd:
    """Leases that expire on the clock, one key, a revision counter; `down` makes every call fail."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.leases: dict[int, float] = {}  # id -> expiry
        self.ttl: dict[int, int] = {}
        self.kv: tuple[bytes, int, int] | None = None  # value, create revision, lease
        self.revision = 1
        self.next_id = 0x10
        self.down: type[Exception] | None = None
        self.lose_answer = False  # apply the next txn, then raise StoreInDoubt
        self.reads = self.txns = 0

    def _expire(self) -> None:
        for lid, at in list(self.leases.items()):
            if at <= self.clock.now:
                del self.leases[lid]
                if self.kv and self.kv[2] == lid:
                    self.kv = None
                    self.revision += 1

    def call(self, path, body, write=False):
        if self.down:
            raise self.down("etcd down")
        self._expire()
        if path == "/lease/grant":
            self.next_id += 1
            self.leases[self.next_id] = self.clock.now + body["TTL"]
            self.ttl[self.next_id] = body["TTL"]
            return {"ID": str(self.next_id), "TTL": str(body["TTL"])}
        if path == "/lease/keepalive":
            lid = body["ID"]
            if lid not in self.leases:
                return {"result": {"ID": str(lid)}}
            self.leases[lid] = self.clock.now + self.ttl[lid]
            return {"result": {"ID": str(lid), "TTL": str(self.ttl[lid])}}
        if path == "/kv/lease/revoke":
            self.leases[body["ID"]] = self.clock.now
            self._expire()
            return {}
        if path == "/kv/range":
            self.reads += 1
            if self.kv is None:
                return {"header": {"revision": str(self.revision)}}
            value, rev, lease = self.kv
            return {"header": {"revision": str(self.revision)}, "kvs": [{
                "key": base64.b64encode(KEY).decode(), "value": base64.b64encode(value).decode(),
                "create_revision": str(rev), "lease": str(lease)}]}
        if path == "/kv/txn":
            self.txns += 1
            put = body["success"][0]["request_put"]
            if self.kv is None:
                self.revision += 1
                self.kv = (base64.b64decode(put["value"]), self.revision, put["lease"])
                if self.lose_answer:
                    self.lose_answer = False
                    raise StoreInDoubt("answer lost")
                return {"succeeded": True, "header": {"revision": str(self.revision)}}
            value, rev, lease = self.kv
            return {"succeeded": False, "header": {"revision": str(self.revision)},
                    "responses": [{"response_range": {"kvs": [{
                        "key": base64.b64encode(KEY).decode(), "value": base64.b64encode(value).decode(),
                        "create_revision": str(rev), "lease": str(lease)}]}}]}
        raise AssertionError(path)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def etcd(clock):
    return FakeEtcd(clock)


def manager(etcd, clock, name, ttl=3):
    return Election(etcd, KEY, Leader(name, f"{name}:5555", f"{name}:5556"), ttl, clock=clock)


def test_first_manager_leads_the_other_follows_and_knows_the_leader(etcd, clock):
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    b.step()
    assert a.leading() and a.term > 0
    assert not b.leading() and b.term == 0
    assert b.leader == Leader("a", "a:5555", "a:5556", a.term)


def test_leader_stops_leading_before_its_lease_can_expire(etcd, clock):
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    etcd.down = StoreUnavailable  # a cut off from etcd
    granted = clock.now
    while a.leading():
        clock.now += 0.1
        a.step()
    assert clock.now < granted + 3  # strictly before etcd could expire its lease
    assert a.deposed
    etcd.down = None
    clock.now = granted + 3.01  # a's lease expires at etcd
    b.step()
    assert b.leading() and b.term > a.term
    a.step()  # deposition is final
    assert not a.leading()


def test_a_live_leader_keeps_leading_and_a_dead_one_is_replaced(etcd, clock):
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    for _ in range(30):  # 15 s of keepalives every 0.5 s
        a.step()
        b.step()
        clock.now += 0.5
    assert a.leading() and not b.leading()
    # a dies (no more steps): b leads once the lease is gone, and not before
    for _ in range(5):
        b.step()
        clock.now += 0.5
    assert not b.leading()
    clock.now += 1.0
    b.step()
    assert b.leading() and b.term > a.term


def test_paused_leader_wakes_deposed(etcd, clock):
    """SIGSTOP past its TTL: when it resumes it does not lead, even before its first step."""
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    clock.now += 10
    assert not a.leading()
    b.step()
    assert b.leading()
    a.step()
    assert a.deposed and not a.leading()


def test_lost_answer_to_the_winning_attempt_is_found_next_round(etcd, clock):
    a = manager(etcd, clock, "a")
    etcd.lose_answer = True
    a.step()
    assert not a.leading()
    clock.now += 0.5
    a.step()
    assert a.leading() and a.term == etcd.kv[1]


def test_a_follower_whose_lease_lapsed_takes_a_new_one(etcd, clock):
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    b.step()
    old = b.lease
    clock.now += 2.0
    a.step()
    clock.now += 2.0  # b was paused past its lease's TTL
    a.step()
    b.step()
    assert b.lease != old and not b.leading() and a.leading()


def test_resign_lets_another_lead_at_once(etcd, clock):
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    a.resign()
    assert not a.leading()
    b.step()
    assert b.leading()


def test_etcd_in_doubt_keeps_the_leader_within_its_margin(etcd, clock):
    a = manager(etcd, clock, "a")
    a.step()
    etcd.down = StoreInDoubt
    clock.now += 1.0
    a.step()
    assert a.leading()  # one unanswered keepalive is no reason to stop
    etcd.down = None
    clock.now += 0.5
    a.step()
    assert a.leading()


def test_ttl_is_whole_seconds():
    e = Election(FakeEtcd(Clock()), KEY, Leader("a", "", ""), 2.2)
    assert e.ttl == 3 and 0 < e.margin < e.ttl


# ---- the Manager's gate (cube/ha/leadership.py) -------------------------------------------------

class FakeLoop:
    def call_soon_threadsafe(self, fn):
        fn()


def leadership(etcd, clock, config=None):
    from cube.config import ManagerConfig
    from cube.ha.leadership import Leadership
    exits, elected = [], []
    config = config or ManagerConfig(store="etcd", etcd="http://127.0.0.1:1", lease_ttl=3, api_port=7001,
                                     worker_port=7002, host="127.0.0.1")
    lead = Leadership(FakeLoop(), config, elected.append, exit=exits.append)
    if lead.election is not None:
        lead.election.etcd, lead.election.clock = etcd, clock
    return lead, exits, elected


def test_a_single_manager_always_leads():
    from cube.config import ManagerConfig
    lead, _, elected = leadership(None, None, ManagerConfig(store="leveldb"))
    lead.start()
    assert elected == [0] and lead.leading() and lead.view() == {"role": "leader", "term": 0}
    lead.check(False, "task.start")  # no error


def test_followers_refuse_with_the_leaders_address_and_the_leader_serves(etcd, clock):
    from cube.wire.errors import NOT_LEADER, CubeError
    other = manager(etcd, clock, "other")
    other.step()
    lead, exits, elected = leadership(etcd, clock)
    lead.election.step()
    lead._changed()
    with pytest.raises(CubeError) as api:
        lead.check(False, "task.start")
    with pytest.raises(CubeError) as workers:
        lead.check(True, "worker.hello")
    assert api.value.code == NOT_LEADER and api.value.message == "not leader: the leader is other:5555"
    assert workers.value.message == "not leader: the leader is other:5556"
    lead.check(False, "manager.ping")  # answered by everyone
    assert lead.view()["role"] == "follower" and not elected
    other.resign()
    lead.election.step()
    lead._changed()
    assert elected == [lead.term] and lead.term > 0
    lead.check(False, "task.start")
    clock.now += 10  # frozen past its lease: the next request finds out, and the process exits
    with pytest.raises(CubeError):
        lead.check(False, "task.start")
    assert exits and not lead.leading()


@pytest.mark.parametrize("kw,error", [
    ({"store": "etcd"}, "needs --etcd"),
    ({"store": "leveldb", "etcd": "http://h:2379"}, "needs --store etcd"),
    ({"store": "bolt"}, "use leveldb, etcd or memory"),
    ({"store": "etcd", "etcd": "http://h:2379", "lease_ttl": 1, "host": "10.0.0.5"}, "between 2 and 60"),
    ({"store": "etcd", "etcd": "http://h:2379", "host": "0.0.0.0"}, "needs the address they are reached at"),
])
def test_store_flags_are_checked(kw, error):
    from cube.config import ManagerConfig
    with pytest.raises(ValueError, match=error):
        ManagerConfig(**kw).check_store()
    ManagerConfig(store="etcd", etcd="http://h:2379", host="10.0.0.5", etcd_plaintext=True).check_store()
    ManagerConfig(store="etcd", etcd="http://h:2379", advertise="10.0.0.5", etcd_plaintext=True).check_store()
    ManagerConfig(store="etcd", etcd="http://127.0.0.1:2379").check_store()  # all on one machine


def test_a_restarted_manager_does_not_name_its_former_self_as_leader(etcd, clock):
    from cube.wire.errors import CubeError
    before = manager(etcd, clock, "127.0.0.1")  # this manager's previous run: it led, then exited
    before.me.api, before.me.workers = "127.0.0.1:7001", "127.0.0.1:7002"
    before.step()
    lead, _, _ = leadership(etcd, clock)  # the same addresses, a new process
    lead.election.step()
    lead._changed()
    with pytest.raises(CubeError, match="no leader elected yet"):
        lead.check(False, "task.start")
    assert lead.view()["leader"] == ""


def test_a_campaign_writes_to_etcd_only_when_the_leader_key_is_absent(etcd, clock):
    """Review of issue 13: every manager's campaign was a transaction (an entry in etcd's log on a
    majority) several times a second, even while it led."""
    a, b = manager(etcd, clock, "a"), manager(etcd, clock, "b")
    a.step()
    b.step()
    txns = etcd.txns
    for _ in range(20):
        clock.now += 0.5
        a.step()
        b.step()
    assert a.leading() and etcd.txns == txns  # reads only while a leads


def test_a_leader_whose_key_disappeared_steps_down_instead_of_leading_under_a_new_term(etcd, clock):
    a = manager(etcd, clock, "a")
    a.step()
    assert a.leading()
    etcd.kv = None  # deleted by hand
    a.step()
    assert not a.leading() and "disappeared" in a.deposed
