"""The TaskBook when the Store does not answer a write (issue 14, defect D3).

No answer (Unavailable) does not mean "not applied": `done` gets `in_doubt`, the task is in doubt, and its changes wait
while the TaskBook reads it back (at once, then on `resolve_doubts`): the stored version is
adopted, or the write is dropped. An error reply with code `unavailable` (the Store refused a
write past its deadline) is a definite "not applied". Event sequence numbers are never reused.

The FakeStore answers only when the test says, so each request in flight is visible.
"""
from __future__ import annotations

import pytest

from cube.manager.taskbook import EVENTS, MAX_QUEUED, META, TASKS, Skip, TaskBook
from cube.model.state import State
from cube.model.task import task_from_spec
from cube.wire.errors import BAD_REQUEST, CONFLICT, IN_DOUBT, NOT_FOUND, UNAVAILABLE, CubeError
from tests.unit import fakes
from tests.unit.fakes import Calls, FakeStore


@pytest.fixture
def book():
    published, adopted = [], []
    b = TaskBook(FakeStore(), lambda ev, t, _record: published.append((ev.seq, t.id, t.state)),
                 on_adopt=lambda old, new: adopted.append((old, new)))
    b.published, b.adopted = published, adopted
    return b


def new(name: str):
    return task_from_spec({"image": "img", "name": name, "id": f"{name}-0000-0000"})


def lost_add(book, task, applied: bool = False) -> CubeError:
    """Add `task`; its batch gets no answer (applied or not). Returns the error `done` got."""
    got = Calls()
    book.add(task, "submitted", got)
    book.store.next("batch").lose(applied)
    t, existing, error = got.one()
    assert t is None and not existing
    return error


def test_no_answer_and_not_applied_is_dropped_on_resolve(book):
    store = book.store
    t = new("a")
    err = lost_add(book, t)
    assert err.code == IN_DOUBT
    assert "may or may not" in err.message and t.id in err.message and "same id is safe" in err.message
    assert book.get(t.id) is None and t.id in book.doubts and book.seq == 1
    assert store.kinds() == ["get"]  # read back at once
    book.resolve_doubts()  # already being read back: no second read
    assert store.kinds() == ["get"]
    store.next("get").answer()
    assert book.get(t.id) is None and not book.doubts and book.published == [] and book.adopted == []
    book.resolve_doubts()  # nothing left in doubt: nothing to read
    assert not store.pending
    b = fakes.add(book, new("b"))
    assert book.get(b.id) is b
    assert book.seq == 2 and store.seq_writes == [2]  # seq 1 went with the dropped write, for good


def test_no_answer_but_applied_is_adopted_and_published(book):
    store = book.store
    first = fakes.add(book, new("first"))
    t = new("a")
    lost_add(book, t, applied=True)
    assert book.get(t.id) is None and book.seq == 2 and book.published == [(1, first.id, State.PENDING)]
    store.next("get").answer()
    adopted = book.get(t.id)
    assert adopted is not None and adopted.to_dict() == store.backend.get(TASKS, t.id)
    assert not book.doubts
    assert book.seq == 2 and book.published == [(1, first.id, State.PENDING), (2, t.id, State.PENDING)]
    assert book.adopted == [(None, adopted)]  # what its caller would have done next is done now
    fakes.commit(book, first.id, None, "again")
    assert store.seq_writes == [1, 2, 3]
    assert sorted(e["seq"] for _, e in store.backend.list(EVENTS)) == [1, 2, 3]


def test_a_commit_resolves_the_doubt_first(book):
    store = book.store
    t = new("a")
    lost_add(book, t, applied=True)
    store.next("get").lose()  # the read-back gets no answer either: still in doubt
    assert t.id in book.doubts and not store.pending
    retried = Calls()
    book.add(new("a"), "submitted", retried)  # the client's retry with the same id ...
    assert store.kinds() == ["get"] and not retried  # ... reads the task back before anything else
    store.next("get").answer()  # it was applied after all
    task, existing, error = retried.one()
    assert error is None and existing and task is book.get(t.id)
    assert book.seq == 1 and store.seq_writes == [1] and not store.pending
    assert [e["seq"] for e in fakes.events(book, t.id)] == [1]
    other = fakes.add(book, new("b"))
    assert book.seq == 2 and store.seq_writes == [1, 2] and book.get(other.id) is other


def test_a_change_queued_behind_a_doubt_is_decided_on_the_adopted_version(book):
    """(Was: a commit on a stale copy after adoption is refused.) A change is applied to the task
    as it is when its turn comes: after the doubt is resolved, on what the Store holds."""
    store = book.store
    t = fakes.add(book, new("a"))

    def place(node: str):
        def change(x) -> None:
            if x.state != State.PENDING:
                raise Skip  # placed already
            x.transition(State.SCHEDULED)
            x.worker = node
            x.attempt += 1
        return change
    first = Calls()
    book.commit(t.id, place("w1"), "placed", done=first)
    store.next("batch").lose(applied=True)
    assert first.one()[1].code == IN_DOUBT and "may or may not" in first.one()[1].message
    store.next("get").lose()  # not known yet
    again, note = Calls(), Calls()
    book.commit(t.id, place("w2"), "placed again", done=again)  # decided on the old copy, it would place twice
    book.commit(t.id, lambda x: x.env.update(seen=x.worker), "noted", event=False, done=note)
    assert store.kinds() == ["get"] and not again and not note
    store.next("get").answer()
    adopted = book.get(t.id)
    assert again.one() == (adopted, None)  # skipped: nothing written
    assert store.kinds() == ["batch"]  # the note only
    store.flush()
    assert adopted.state is State.SCHEDULED and adopted.worker == "w1" and adopted.attempt == 1
    noted, error = note.one()
    assert error is None and noted.env == {"seen": "w1"} and noted.worker == "w1" and noted.attempt == 1
    assert book.seq == 2 and store.seq_writes == [1, 2]
    assert store.backend.get(TASKS, t.id)["env"] == {"seen": "w1"}


def test_while_the_doubt_cannot_be_resolved_that_task_waits_and_others_do_not(book):
    store = book.store
    first = fakes.add(book, new("first"))
    lost_add(book, new("a"))
    store.next("get").lose()
    changed, retried = Calls(), Calls()
    calls = []
    book.commit("a-0000-0000", lambda x: calls.append(x), "x", done=changed)
    book.add(new("a"), "submitted", retried)
    assert store.kinds() == ["get"]  # one read back, nothing written
    store.next("get").lose()  # the Store still does not answer
    assert not changed and not retried and calls == [] and not store.pending
    for ref in ("a-0000-0000", "a"):  # the task in doubt: neither found nor not found
        with pytest.raises(CubeError) as err:
            book.find(ref)
        assert err.value.code == IN_DOUBT and "may or may not" in err.value.message
    assert book.find("first") is first  # others are found as usual ...
    assert fakes.commit(book, first.id, None, "x").reason == "x"  # ... and written: seq 3, not 2
    assert book.seq == 3 and store.seq_writes == [1, 3]

    book.resolve_doubts()  # the timer: the Store answers now, the write was not applied
    store.next("get").answer()
    assert changed.one()[1].code == NOT_FOUND and calls == []  # no such task after all
    with pytest.raises(CubeError) as err:
        book.find("a-0000-0000")
    assert err.value.code == NOT_FOUND  # until the retried add is written
    store.flush()
    task, existing, error = retried.one()
    assert error is None and not existing and book.find("a-0000-0000") is task
    assert store.seq_writes == [1, 3, 4]


def test_a_refusal_is_definite_and_leaves_nothing_in_doubt(book):
    store = book.store
    t = new("a")
    got = Calls()
    book.add(t, "submitted", got)
    store.next("batch").refuse()
    _, existing, err = got.one()
    assert err.code == UNAVAILABLE and not existing
    assert "was not created" in err.message and "retry" in err.message
    assert book.get(t.id) is None and not book.doubts
    assert not store.pending  # nothing to read back
    book.resolve_doubts()
    assert not store.pending
    assert fakes.add(book, t).id == t.id and book.seq == 2 and store.seq_writes == [2]


def test_a_change_to_an_existing_task_that_got_no_answer_says_so(book):
    store = book.store
    t = fakes.add(book, new("a"))
    got = Calls()
    book.commit(t.id, lambda x: x.transition(State.SCHEDULED), "placed", done=got)
    store.next("batch").lose()
    _, err = got.one()
    assert err.code == IN_DOUBT and "may or may not" in err.message and "once the store answers" in err.message
    assert book.find(t.id) is t  # the version before the change is still the one known
    store.next("get").answer()  # not applied: dropped
    assert not book.doubts and book.get(t.id) is t and book.adopted == []
    again = Calls()
    book.commit(t.id, lambda x: x.transition(State.SCHEDULED), "placed", done=again)
    store.next("batch").refuse()
    _, err = again.one()
    assert err.code == UNAVAILABLE and "not saved" in err.message and "retry" in err.message
    assert book.get(t.id) is t and t.state is State.PENDING and not book.doubts


def test_the_event_seq_is_never_reused(book):
    """Whatever happened to a write (applied, refused, dropped, adopted, failed), its sequence
    number is not handed out again; a restarted TaskBook continues after the stored one, even one
    stored by a write it never heard of."""
    store = book.store
    fakes.add(book, new("a"))  # 1
    lost_add(book, new("b"))  # 2: dropped
    store.next("get").answer()
    got = Calls()
    book.add(new("c"), "submitted", got)  # 3: refused
    store.next("batch").refuse()
    lost_add(book, new("d"), applied=True)  # 4: adopted
    store.next("get").answer()
    book.add(new("e"), "submitted", got)  # 5: failed
    store.next("batch").fail(CubeError(BAD_REQUEST, "disk full"))
    fakes.commit(book, "a-0000-0000", None, "again")  # 6
    assert store.seq_writes == [1, 4, 6] and book.seq == 6
    assert sorted(e["seq"] for _, e in store.backend.list(EVENTS)) == [1, 4, 6]
    assert [seq for seq, _, _ in book.published] == [1, 4, 6]

    store.backend.put(META, "event_seq", 7)  # somebody else moved it on
    fresh = TaskBook(FakeStore(store.backend))
    assert fakes.load(fresh) == 2 and fresh.seq == 7
    fakes.add(fresh, new("f"))
    assert fresh.seq == 8 and store.backend.get(META, "event_seq") == 8
    store.backend.put(META, "event_seq", 3)  # a stored number behind ours does not move us back
    assert fakes.load(fresh) == 3 and fresh.seq == 8


def test_other_errors_are_untouched(book):
    store = book.store
    got = Calls()
    book.add(new("a"), "submitted", got)
    store.next("batch").fail(CubeError(CONFLICT, "nope"))
    _, _, err = got.one()
    assert err.code == CONFLICT and err.message == "nope"
    assert not book.doubts and not store.pending
    book.resolve_doubts()
    assert not store.pending


# ---- beyond the old synchronous TaskBook --------------------------------------------------------

def test_a_read_back_answered_with_an_error_keeps_the_doubt(book):
    store = book.store
    t = new("a")
    lost_add(book, t, applied=True)
    store.next("get").fail(CubeError(UNAVAILABLE, "the store is restarting"))
    assert t.id in book.doubts and not book.doubts[t.id].resolving
    book.resolve_doubts()
    store.next("get").answer()
    assert book.get(t.id) is not None and not book.doubts


def test_changes_piling_up_behind_a_doubt_are_refused_past_max_queued(book):
    store = book.store
    t = fakes.add(book, new("a"))
    got = Calls()
    book.commit(t.id, None, "lost", done=got)
    store.next("batch").lose()
    store.next("get").lose()  # the Store is down
    waiting = [Calls() for _ in range(MAX_QUEUED)]
    for i, w in enumerate(waiting):
        book.commit(t.id, None, f"change {i}", event=False, done=w)
    assert book.busy(t.id) and store.kinds() == ["get"]
    store.next("get").lose()
    refused = Calls()
    book.commit(t.id, None, "one too many", done=refused)
    _, err = refused.one()
    assert err.code == UNAVAILABLE and "too many changes" in err.message
    assert not any(waiting) and not store.pending  # refused at once; the others still wait
    book.resolve_doubts()
    store.flush()  # the Store is back: dropped, then every waiting change in order
    assert all(w.one()[1] is None for w in waiting)
    assert book.get(t.id).reason == f"change {MAX_QUEUED - 1}" and not book.busy(t.id)


def test_a_task_in_doubt_with_a_short_id_is_not_reported_missing(book):
    t = task_from_spec({"image": "img", "name": "short", "id": "abc"})
    lost_add(book, t)
    with pytest.raises(CubeError) as err:
        book.find("abc")  # its exact id (shorter than a prefix may be)
    assert err.value.code == IN_DOUBT


# Review of issue 8: a task whose write is in doubt is busy (Placement must not place it again
# while its Scheduled write may have been applied).
def test_a_task_in_doubt_is_busy_until_resolved(book):
    t = fakes.add(book, new("a"))
    store = book.store
    book.commit(t.id, lambda x: x.transition(State.SCHEDULED), "placed")
    store.next("batch").lose(applied=False)  # no answer: in doubt
    assert t.id in book.doubts and book.busy(t.id)
    book.resolve_doubts()
    store.answer()
    assert t.id not in book.doubts and not book.busy(t.id)
