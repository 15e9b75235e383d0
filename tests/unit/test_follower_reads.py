"""A follower's reads from the Store (cube/manager/reads.py, docs/ha.md "Reads on followers")."""
from __future__ import annotations

import pytest

from cube.manager.reads import FollowerReads
from cube.model.task import task_from_spec
from cube.security.authority import ADMIN
from cube.wire.envelope import Envelope
from cube.wire.errors import CubeError
from tests.unit.fakes import FakeStore


def env(msg_type: str, body: dict) -> tuple[Envelope, list]:
    m = Envelope(msg_type, body)
    m.principal = ADMIN
    answers: list = []
    m.respond = lambda body=None, error=None: answers.append(error or body)
    return m, answers


@pytest.fixture
def reads():
    store = FakeStore()
    ops = []
    for i, tid in enumerate(["aaaa1111", "aaaa2222", "bbbb3333"]):
        t = task_from_spec({"image": "x", "name": f"t{i}", "env": {"K": "secret"}}, task_id=tid)
        if tid == "bbbb3333":
            t.state, t.desired = t.state.__class__("Completed"), "stopped"
        ops += [("put", "tasks", tid, t.to_dict()), ("put", "events", f"{tid}/1", {"seq": 1, "state": "Pending"})]
    store.apply(ops)
    return FollowerReads(store, lambda: {"role": "follower", "term": 7, "leader": "h1:5555"}), store


def test_task_ls_pages_live_tasks_by_id_and_says_who_served(reads):
    r, store = reads
    m, out = env("task.ls", {"limit": 1})
    r.tasks(m)
    store.flush()
    assert [t["id"] for t in out[0]["tasks"]] == ["aaaa1111"] and out[0]["continue"] == "aaaa1111"
    assert out[0]["served_by"] == "follower" and out[0]["leader"] == "h1:5555"
    assert out[0]["tasks"][0]["env"] == {"K": "<hidden>"}
    m, out = env("task.ls", {"continue": "aaaa1111"})
    r.tasks(m)
    store.flush()
    assert [t["id"] for t in out[0]["tasks"]] == ["aaaa2222"]  # the finished one only with --all
    m, out = env("task.ls", {"all": True})
    r.tasks(m)
    store.flush()
    assert len(out[0]["tasks"]) == 3 and out[0]["continue"] == ""


def test_inspect_by_id_and_prefix_with_events(reads):
    r, store = reads
    m, out = env("task.inspect", {"id": "bbbb"})
    r.inspect(m)
    store.flush()
    assert out[0]["task"]["id"] == "bbbb3333" and out[0]["events"] == [{"seq": 1, "state": "Pending"}]
    assert out[0]["task"]["env"] == {"K": "secret"}  # an admin sees env values, as on the leader


@pytest.mark.parametrize("ref,says", [("aaaa", "matches several tasks"), ("t0", "by name, ask the leader"),
                                      ("zzzz9", "no task with id")])
def test_inspect_says_what_a_follower_cannot_find(reads, ref, says):
    r, store = reads
    m, out = env("task.inspect", {"id": ref})
    r.inspect(m)
    store.flush()
    assert isinstance(out[0], CubeError) and says in out[0].message


def test_a_made_up_continue_token_is_refused(reads):
    r, _ = reads
    m, _ = env("task.ls", {"continue": "{\"k\": 1}"})
    with pytest.raises(CubeError, match="bad continue token"):
        r.tasks(m)
