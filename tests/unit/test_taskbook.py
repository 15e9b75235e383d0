"""The asynchronous TaskBook: one task's changes strictly in order, different tasks' in flight
together, persist -> adopt -> publish -> done, `Skip`, retention (`prune`) and the queue bound.

The FakeStore answers only when the test says, so what is in flight at each step is visible.
"""
from __future__ import annotations

import pytest

from cube.manager.taskbook import EVENTS, MAX_EVENTS, MAX_QUEUED, TASKS, Skip, TaskBook
from cube.model.state import State
from cube.model.task import task_from_spec
from cube.wire.errors import UNAVAILABLE, CubeError
from tests.unit import fakes
from tests.unit.fakes import Calls, FakeStore


@pytest.fixture
def book():
    published = []
    b = TaskBook(FakeStore(), lambda ev, t, _record: published.append((ev.seq, t.id, t.state)))
    b.published = published
    return b


def new(name: str, **spec):
    return task_from_spec({"image": "img", "name": name, "id": f"{name}-0000-0000", **spec})


def append(letter: str, seen: list | None = None):
    """A change that appends `letter` to env["log"] (recording what it saw first)."""
    def change(t) -> None:
        if seen is not None:
            seen.append(t.env.get("log", ""))
        t.env["log"] = t.env.get("log", "") + letter
    return change


def test_changes_of_one_task_are_applied_in_order_each_on_the_previous_result(book):
    store = book.store
    t = fakes.add(book, new("a"))
    seen: list[str] = []
    order: list[str] = []
    book.commit(t.id, append("x", seen), "x", done=lambda task, err: order.append("x"))
    assert store.kinds() == ["batch"] and seen == [""]
    book.commit(t.id, append("y", seen), "y", done=lambda task, err: order.append("y"))
    book.commit(t.id, append("z", seen), "z", done=lambda task, err: order.append("z"))
    assert store.kinds() == ["batch"] and seen == [""]  # the next waits for the first's answer
    assert book.busy(t.id) and book.get(t.id).env == {}
    store.answer()
    assert order == ["x"] and seen == ["", "x"] and store.kinds() == ["batch"]
    assert book.get(t.id).env == {"log": "x"}
    store.answer()
    assert order == ["x", "y"] and seen == ["", "x", "xy"]
    store.answer()
    assert order == ["x", "y", "z"] and not store.pending and not book.busy(t.id)
    assert book.get(t.id).env == {"log": "xyz"} and store.backend.get(TASKS, t.id)["env"] == {"log": "xyz"}
    assert [e["reason"] for e in fakes.events(book, t.id)] == ["submitted", "x", "y", "z"]
    assert [seq for seq, _, _ in book.published] == [1, 2, 3, 4]


def test_a_change_after_a_failed_one_applies_to_the_version_before_it(book):
    store = book.store
    t = fakes.add(book, new("a"))
    first, second = Calls(), Calls()
    book.commit(t.id, append("x"), "x", done=first)
    book.commit(t.id, append("y"), "y", done=second)
    store.next("batch").refuse()
    assert first.one()[1].code == UNAVAILABLE and not second
    store.flush()
    task, error = second.one()
    assert error is None and task.env == {"log": "y"} and book.get(t.id) is task


def test_skip_writes_nothing(book):
    store = book.store
    t = fakes.add(book, new("a"))
    requests = len(store.requests)
    got, after = Calls(), Calls()

    def skip(_t) -> None:
        raise Skip
    book.commit(t.id, skip, "nothing to do", done=got)
    book.commit(t.id, append("x"), "x", event=False, done=after)
    assert got.one() == (t, None)  # the task as it is, no error
    assert store.kinds() == ["batch"] and len(store.requests) == requests + 1  # the next change only
    store.flush()
    assert after.one()[1] is None and book.seq == 1 and len(book.published) == 1
    assert book.get(t.id).reason == "x"


def test_different_tasks_are_written_concurrently(book):
    store = book.store
    a, b = fakes.add(book, new("a")), fakes.add(book, new("b"))
    done_a, done_b = Calls(), Calls()
    book.commit(a.id, append("x"), "x", done=done_a)
    book.commit(b.id, append("y"), "y", done=done_b)
    assert store.kinds() == ["batch", "batch"]  # both in flight
    assert {r.ops[0][2] for r in store.pending} == {a.id, b.id}
    assert book.busy(a.id) and book.busy(b.id)
    store.answer()
    assert done_a and not done_b and book.get(a.id).env == {"log": "x"} and book.get(b.id).env == {}
    store.answer()
    assert done_b.one()[0].env == {"log": "y"}
    # each took its own sequence number when it was sent
    assert sorted(seq for seq, _, _ in book.published) == [1, 2, 3, 4]


def test_add_of_an_existing_id_reports_existing(book):
    store = book.store
    t = fakes.add(book, new("a"))
    got = Calls()
    book.add(new("a", command=["other"]), "submitted", got)  # a retried submit
    assert not store.pending  # nothing written
    assert got.one() == (t, True, None)
    assert book.get(t.id) is t and book.seq == 1


def test_two_adds_of_one_new_id_create_it_once(book):
    store = book.store
    first, second = Calls(), Calls()
    book.add(new("b"), "submitted", first)
    book.add(new("b"), "submitted", second)  # the client retried while the first was in flight
    assert store.kinds() == ["batch"]
    store.flush()
    created, existing, error = first.one()
    assert error is None and not existing
    assert second.one() == (created, True, None)
    assert store.seq_writes == [1] and len(store.requests) == 1


def test_persist_then_adopt_then_publish_then_done(book):
    store = book.store
    t = fakes.add(book, new("a"))
    steps: list[tuple] = []
    book.publish = lambda ev, task, record: steps.append(
        ("publish", ev.seq, book.get(task.id) is task, store.backend.get(TASKS, task.id)["state"]))
    book.commit(t.id, lambda x: x.transition(State.SCHEDULED), "placed",
                done=lambda task, err: steps.append(("done", book.get(task.id) is task)))
    assert steps == [] and book.get(t.id) is t and t.state is State.PENDING  # nothing before the answer
    assert store.backend.get(TASKS, t.id)["state"] == "Pending"
    store.answer()
    # the Store held it first; memory had adopted it when it was published; then the caller heard
    assert steps == [("publish", 2, True, "Scheduled"), ("done", True)]


def test_a_callback_that_raises_does_not_wedge_the_queue(book):
    store = book.store
    t = fakes.add(book, new("a"))
    after = Calls()

    def bad(task, error):
        raise RuntimeError("caller bug")
    book.commit(t.id, append("x"), "x", done=bad)
    book.commit(t.id, append("y"), "y", done=after)
    store.flush()
    assert after.one()[0].env == {"log": "xy"} and not book.busy(t.id)


def test_more_than_max_queued_changes_of_one_task_are_refused(book):
    store = book.store
    t = fakes.add(book, new("a"))
    book.commit(t.id, append("0"), "in flight")
    waiting = [Calls() for _ in range(MAX_QUEUED)]
    for w in waiting:
        book.commit(t.id, append("."), event=False, done=w)
    refused = Calls()
    book.commit(t.id, append("!"), done=refused)
    task, err = refused.one()
    assert task is None and err.code == UNAVAILABLE and "too many changes" in err.message
    assert store.kinds() == ["batch"]
    store.flush()
    assert all(w.one()[1] is None for w in waiting)
    assert book.get(t.id).env["log"] == "0" + "." * MAX_QUEUED
    other = Calls()
    book.commit(t.id, append("!"), done=other)  # the queue drained: accepted again
    store.flush()
    assert other.one()[1] is None


def test_events_returns_the_newest(book):
    t = fakes.add(book, new("a"))
    for i in range(MAX_EVENTS + 5):
        fakes.commit(book, t.id, None, f"change {i}")
    evs = fakes.events(book, t.id)
    assert len(evs) == MAX_EVENTS and evs[-1]["reason"] == f"change {MAX_EVENTS + 4}"
    assert [e["seq"] for e in evs] == sorted(e["seq"] for e in evs)


# ---- prune --------------------------------------------------------------------------------------

def finish(book, task_id: str) -> None:
    fakes.commit(book, task_id, lambda x: x.transition(State.COMPLETED), "done")


def test_prune_deletes_tasks_and_their_events(book):
    store = book.store
    for name in ("a", "ab", "b", "keep"):
        fakes.add(book, new(name))
    for name in ("a", "ab", "b"):
        finish(book, f"{name}-0000-0000")
    got = Calls()
    book.prune(["a-0000-0000", "b-0000-0000", "unknown"], got)
    req = store.next("batch")
    assert ("delete", TASKS, "a-0000-0000", None) in req.ops
    assert ("delete_prefix", EVENTS, "a-0000-0000/", None) in req.ops
    assert len(req.ops) == 4  # nothing for an unknown id
    assert book.get("a-0000-0000") is not None and not got  # memory waits for the answer
    store.flush()
    assert got.one() == (2, None)
    assert book.get("a-0000-0000") is None and book.get("b-0000-0000") is None and len(book) == 2
    left = {k.split("/")[0] for k, _ in store.backend.list(EVENTS)}
    assert left == {"ab-0000-0000", "keep-0000-0000"}  # a prefix of another id is not its prefix
    assert {k for k, _ in store.backend.list(TASKS)} == left


def test_prune_skips_busy_tasks_and_doubts_and_nothing_is_a_no_op(book):
    store = book.store
    for name in ("a", "b", "c"):
        fakes.add(book, new(name))
        finish(book, f"{name}-0000-0000")
    book.commit("a-0000-0000", None, "in flight", event=False)  # busy
    doubt = Calls()
    book.commit("b-0000-0000", None, "lost", done=doubt)
    store.pending[1].lose()  # b in doubt (its read-back queued)
    assert "b-0000-0000" in book.doubts
    got = Calls()
    book.prune(["a-0000-0000", "b-0000-0000"], got)
    assert got.one() == (0, None)  # nothing to do, nothing sent
    assert store.kinds() == ["batch", "get"]
    store.flush()
    got = Calls()
    book.prune(["a-0000-0000", "c-0000-0000"], got)
    book.commit("a-0000-0000", None, "late change", event=False)  # arrives while the prune is in flight
    store.flush()
    assert got.one() == (2, None)
    # The change was written after the delete: the Store and memory both still have the task.
    assert book.get("a-0000-0000") is not None and store.backend.get(TASKS, "a-0000-0000") is not None
    assert book.get("c-0000-0000") is None and store.backend.get(TASKS, "c-0000-0000") is None


def test_a_failed_prune_forgets_nothing(book):
    store = book.store
    fakes.add(book, new("a"))
    finish(book, "a-0000-0000")
    got = Calls()
    book.prune(["a-0000-0000"], got)
    store.next("batch").fail(CubeError(UNAVAILABLE, "expired"))
    assert got.one()[0] == 0 and got.one()[1].code == UNAVAILABLE
    assert book.get("a-0000-0000") is not None
