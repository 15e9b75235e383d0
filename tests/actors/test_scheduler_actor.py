"""The Scheduler actor over real ZeroMQ: fake workers publish metrics, a Client asks for placements."""
from __future__ import annotations

import pytest

from cube.wire.errors import CubeError
from tests.actors.helpers import GiB, FakeNodes, wait_for


@pytest.fixture
def sched(actors):
    made = []

    def make(algorithm="roundrobin", stale_after=5.0):
        actor, api, metrics = actors.scheduler(algorithm, stale_after)
        nodes = FakeNodes(metrics)
        made.append(nodes)
        return actor, actors.client(api), nodes
    yield make
    for nodes in made:
        nodes.close()


def names(client, state=None) -> set[str]:
    return {n["name"] for n in client.call("sched.nodes")["nodes"] if state is None or n["state"] == state}


def place(client, task_id, cpu=0.1, memory=0, disk=0, exclude=None):
    body = {"task_id": task_id, "cpu": cpu, "memory": memory, "disk": disk}
    if exclude is not None:
        body["exclude"] = exclude
    return client.call("sched.place", body)


def test_nodes_lists_what_publishes(sched):
    _, c, nodes = sched()
    assert c.call("sched.nodes") == {"nodes": [], "algorithm": "roundrobin"}
    nodes.set("n1")
    nodes.set("n2", cpus=4.0)
    wait_for(lambda: names(c) == {"n1", "n2"}, what="both nodes listed")
    rows = {n["name"]: n for n in c.call("sched.nodes")["nodes"]}
    assert rows["n2"]["cpus"] == 4.0 and rows["n1"]["state"] == "alive"
    assert rows["n1"]["memory"] == 2 * GiB and rows["n1"]["address"] == "127.0.0.1"


def test_nothing_to_place_on(sched):
    _, c, _ = sched()
    reply = place(c, "t1")
    assert reply["node"] is None and reply["reason"]


def test_roundrobin_alternates(sched):
    _, c, nodes = sched()
    nodes.set("n1")
    nodes.set("n2")
    wait_for(lambda: names(c, "alive") == {"n1", "n2"}, what="both nodes alive")
    picks = [place(c, f"t{i}")["node"] for i in range(6)]
    assert picks in (["n1", "n2"] * 3, ["n2", "n1"] * 3)


@pytest.mark.parametrize("algorithm", ["roundrobin", "greedy", "epvm", "epvm-book"])
def test_a_node_too_small_is_never_chosen(sched, algorithm):
    _, c, nodes = sched(algorithm)
    nodes.set("big", cpus=4.0, memory=4 * GiB)
    nodes.set("tiny", cpus=0.5, memory=256 << 20)
    wait_for(lambda: names(c, "alive") == {"big", "tiny"}, what="both nodes alive")
    picks = {place(c, f"t{i}", cpu=1.0, memory=512 << 20)["node"] for i in range(4)}
    assert picks == {"big"}
    # big has 4 cpus: four 1-cpu tasks reserved it full, so a fifth fits nowhere, with a reason
    reply = place(c, "t-overflow", cpu=1.0, memory=512 << 20)
    assert reply["node"] is None and "cpu" in reply["reason"].lower()


def test_exclude_and_release(sched):
    _, c, nodes = sched()
    nodes.set("n1", cpus=1.0)
    nodes.set("n2", cpus=1.0)
    wait_for(lambda: names(c, "alive") == {"n1", "n2"}, what="both nodes alive")
    assert place(c, "a", cpu=1.0, exclude=["n1"])["node"] == "n2"
    assert place(c, "b", cpu=1.0, exclude=["n1"])["node"] is None  # n2 is full, n1 excluded
    assert c.call("sched.release", {"task_id": "a"}) == {"released": True}
    assert c.call("sched.release", {"task_id": "a"}) == {"released": False}
    assert place(c, "b", cpu=1.0, exclude=["n1"])["node"] == "n2"


def test_a_silent_node_stops_being_a_candidate(sched):
    _, c, nodes = sched("roundrobin", stale_after=0.5)
    nodes.set("n1")
    nodes.set("n2")
    wait_for(lambda: names(c, "alive") == {"n1", "n2"}, what="both nodes alive")
    nodes.silence("n2")
    wait_for(lambda: names(c, "alive") == {"n1"}, timeout=5, what="n2 to go stale")
    assert names(c) == {"n1", "n2"}  # still listed, as stale
    assert {place(c, f"t{i}")["node"] for i in range(4)} == {"n1"}
    nodes.set("n2")  # it speaks again: a candidate again
    wait_for(lambda: names(c, "alive") == {"n1", "n2"}, what="n2 back")
    assert {place(c, f"u{i}")["node"] for i in range(4)} == {"n1", "n2"}


def test_bad_requests(sched):
    _, c, nodes = sched()
    for body, code in [
        ({"task_id": "t", "cpu": -1.0, "memory": 0, "disk": 0}, "bad_request"),
        ({"task_id": "t", "cpu": float("nan"), "memory": 0, "disk": 0}, "bad_request"),
        ({"task_id": "t", "cpu": 1.0, "memory": -5, "disk": 0}, "bad_request"),
        ({"task_id": "t", "cpu": "1", "memory": 0, "disk": 0}, "bad_body"),
        ({"task_id": "t", "cpu": 1.0, "memory": 0}, "bad_body"),
    ]:
        with pytest.raises(CubeError) as e:
            c.call("sched.place", body)
        assert e.value.code == code, body
    with pytest.raises(CubeError) as e:
        c.call("store.get", {"ns": "tasks", "key": "k"})
    assert e.value.code == "unknown_type"
    assert place(c, "t", memory=2**64 - 1)["node"] is None  # too big for anything, not an error


def test_bad_samples_are_ignored(sched):
    from cube.wire.envelope import Envelope
    actor, c, nodes = sched()
    nodes.publish_raw([b"node.metrics", b"\xc1 not msgpack"])
    nodes.publish_raw([b"node.metrics", Envelope("node.metrics", {"name": "x"}).encode()])  # bad body
    nodes.publish_raw([b"node.metrics", Envelope("node.metrics", {**_sample("bad"), "name": ""}).encode()])
    nodes.publish_raw([b"node.metrics", Envelope("node.metrics", {**_sample("bad2"), "reserved": {"cpu": "x"}}).encode()])
    nodes.set("good")
    wait_for(lambda: names(c) == {"good"}, what="the good node")
    wait_for(lambda: actor.stats["bad_samples"] >= 1, what="bad samples counted")
    assert place(c, "t")["node"] == "good"


# Regression: a sample with an integer above int64 used to half-register the node, and every
# place() that picked it raised OverflowError (round-robin never moved past it).
def test_a_sample_with_an_out_of_range_integer_does_not_break_placement(sched):
    _, c, nodes = sched("roundrobin")
    nodes.set("a-huge", memory=2**63)
    nodes.set("n1")
    wait_for(lambda: "n1" in names(c), what="n1")
    # a task that asks for no cpu (the default) finds the half-registered node feasible
    picks = [place(c, f"t{i}", cpu=0.0)["node"] for i in range(3)]
    assert picks == ["n1"] * 3


def _sample(name):
    from tests.actors.helpers import metrics_sample
    return metrics_sample(name, 1)


def test_only_registered_workers_are_candidates(sched):
    # a forged publisher ("impostor") looks emptier than the real worker, but the manager says
    # which workers are registered, and only those may be picked
    _, c, nodes = sched(algorithm="epvm")
    nodes.set("real")
    nodes.set("impostor", cpus=64.0)
    wait_for(lambda: names(c, "alive") == {"real", "impostor"}, what="both publishing")
    body = {"task_id": "t1", "cpu": 0.5, "memory": 0, "disk": 0, "only": ["real"]}
    assert c.call("sched.place", body)["node"] == "real"
    body = {"task_id": "t2", "cpu": 0.5, "memory": 0, "disk": 0, "only": []}
    assert c.call("sched.place", body)["node"] is None


# ---- sched.place_many: many decisions in one round trip --------------------------------------------

def item(task_id, cpu=0.1, memory=0, disk=0):
    return {"task_id": task_id, "cpu": cpu, "memory": memory, "disk": disk}


def place_many(client, items, **extra):
    return client.call("sched.place_many", {"tasks": items, **extra})["placements"]


def spy_on_decisions(actor) -> list[str]:
    tried = []
    original = actor._place

    def spy(task_id, body, exclude):
        tried.append(task_id)
        return original(task_id, body, exclude)
    actor._place = spy
    return tried


def test_place_many_decides_in_order_and_later_tasks_see_earlier_reservations(sched):
    _, c, nodes = sched("greedy")
    nodes.set("n1", cpus=1.0)
    nodes.set("n2", cpus=1.0)
    wait_for(lambda: names(c, "alive") == {"n1", "n2"}, what="both nodes alive")
    out = place_many(c, [item("t1", 0.6), item("t2", 0.6), item("t3", 0.6), item("t4", 0.3), item("t5", 0.3)])
    assert [p["task_id"] for p in out] == ["t1", "t2", "t3", "t4", "t5"]
    nodes_of = {p["task_id"]: p["node"] for p in out}
    assert {nodes_of["t1"], nodes_of["t2"]} == {"n1", "n2"}  # 0.6 + 0.6 fits on no one node
    assert nodes_of["t3"] is None and "cpu" in out[2]["reason"]
    assert nodes_of["t4"] is not None and nodes_of["t5"] is not None and nodes_of["t4"] != nodes_of["t5"]
    # The reservations stay for single decisions too, until released.
    assert place(c, "t6", cpu=0.2)["node"] is None
    assert c.call("sched.release", {"task_id": "t1"}) == {"released": True}
    assert place(c, "t6", cpu=0.6)["node"] == nodes_of["t1"]


def test_place_many_a_demand_that_fits_nowhere_short_circuits_the_same_demand(sched):
    actor, c, nodes = sched("greedy")
    nodes.set("n1", cpus=1.0, memory=GiB)
    wait_for(lambda: names(c, "alive") == {"n1"}, what="n1 alive")
    tried = spy_on_decisions(actor)
    out = place_many(c, [
        item("big", 2.0),
        item("big-again", 2.0),  # the same demand: not tried again
        item("bigger", 3.0, memory=GiB // 2),  # larger: cannot fit either, but its reason is its own
        item("small", 0.5),
        item("wider", 1.5, memory=2 * GiB),  # less cpu than "big": tried on its own
        item("huge", 8.0, memory=GiB, disk=1),
    ])
    by_id = {p["task_id"]: p for p in out}
    assert [p["task_id"] for p in out] == ["big", "big-again", "bigger", "small", "wider", "huge"]
    reason = by_id["big"]["reason"]
    assert by_id["big"]["node"] is None and "2.0 cpu" in reason
    assert by_id["big-again"] == {"task_id": "big-again", "node": None, "reason": reason}
    # a reason quotes the task's own demand, never another task's
    assert by_id["bigger"]["node"] is None and "3.0 cpu" in by_id["bigger"]["reason"]
    assert by_id["huge"]["node"] is None and "8.0 cpu" in by_id["huge"]["reason"]
    assert by_id["small"]["node"] == "n1"
    assert by_id["wider"]["node"] is None and by_id["wider"]["reason"] != reason
    assert tried == ["big", "bigger", "small", "wider", "huge"]


def test_place_many_applies_exclude_and_only_to_every_task(sched):
    _, c, nodes = sched("roundrobin")
    for n in ("n1", "n2", "n3"):
        nodes.set(n)
    wait_for(lambda: names(c, "alive") == {"n1", "n2", "n3"}, what="three nodes alive")
    out = place_many(c, [item(f"t{i}") for i in range(6)], exclude=["n1"], only=["n1", "n2"])
    assert {p["node"] for p in out} == {"n2"}
    assert place_many(c, [item("x")], only=[])[0]["node"] is None
    assert place_many(c, []) == []


@pytest.mark.parametrize("bad, code", [
    ({"cpu": 0.1, "memory": 0, "disk": 0}, "bad_request"),  # no task_id
    ({"task_id": 7, "cpu": 0.1, "memory": 0, "disk": 0}, "bad_request"),
    (item("t", cpu=-1.0), "bad_request"),
    (item("t", cpu="one"), "bad_request"),
    ({"task_id": "t", "cpu": 0.1}, "bad_request"),  # no memory, disk
    ("not a map", "bad_body"),
])
def test_place_many_refuses_bad_items_and_reserves_nothing(sched, bad, code):
    _, c, nodes = sched("greedy")
    nodes.set("n1", cpus=1.0)
    wait_for(lambda: names(c, "alive") == {"n1"}, what="n1 alive")
    with pytest.raises(CubeError) as e:
        place_many(c, [item("good", 1.0), bad])
    assert e.value.code == code
    # the good task before the bad one holds no reservation: the whole request was refused
    assert place(c, "other", cpu=1.0)["node"] == "n1"
