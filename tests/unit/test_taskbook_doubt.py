"""The TaskBook when the Store does not answer a write (issue 14, defect D3).

No answer (Unavailable) does not mean "not applied": the commit is recorded as in doubt and
resolved by reading the Store back before anything else is written. An error reply with code
`unavailable` (the Store refused a write past its deadline) is a definite "not applied".
"""
from __future__ import annotations

import pytest

from cube.control.taskbook import EVENTS, META, TASKS, TaskBook
from cube.model.state import State
from cube.model.task import task_from_spec
from cube.store.memory import MemoryStore
from cube.wire.errors import CONFLICT, NOT_FOUND, UNAVAILABLE, CubeError, Unavailable


class SilentStore(MemoryStore):
    """`lose`: the next batch gets no answer (applied or not, per `apply`); `deaf`: reads and
    writes get no answer at all; `refuse`: the next batch is refused (expired)."""

    def __init__(self):
        super().__init__()
        self.lose = False
        self.apply = False
        self.deaf = False
        self.refuse = False
        self.batches = 0
        self.seq_writes: list[int] = []

    def get(self, ns, key):
        if self.deaf:
            raise Unavailable("no answer from the store within 2s")
        return super().get(ns, key)

    def batch(self, ops):
        ops = list(ops)
        if self.deaf:
            raise Unavailable("no answer from the store within 2s")
        if self.refuse:
            self.refuse = False
            raise CubeError(UNAVAILABLE, "store.batch expired: the write was not applied")
        self.batches += 1
        if self.lose:
            self.lose = False
            if self.apply:
                self._write(ops)
            raise Unavailable("no answer from the store within 2s")
        self._write(ops)

    def _write(self, ops):
        super().batch(ops)
        self.seq_writes += [v for op, ns, key, v in ops if (op, ns, key) == ("put", META, "event_seq")]


@pytest.fixture
def book():
    published = []
    b = TaskBook(SilentStore(), lambda ev, t: published.append((ev.seq, t.id, t.state)))
    b.published = published
    return b


def new(name: str):
    return task_from_spec({"image": "img", "name": name, "id": f"{name}-0000-0000"})


def test_no_answer_and_not_applied_is_dropped_on_resolve(book):
    book.store.lose = True
    t = new("a")
    with pytest.raises(CubeError) as err:
        book.add(t)
    assert err.value.code == UNAVAILABLE
    assert "may or may not" in err.value.message and t.id in err.value.message
    assert book.get(t.id) is None and book.seq == 0
    assert book.resolve_doubt() is True
    assert book.get(t.id) is None and book.seq == 0 and book.published == []
    assert book.resolve_doubt() is True  # nothing left in doubt
    b = book.add(new("b"))
    assert book.seq == 1 and book.store.seq_writes == [1] and book.get(b.id) is b


def test_no_answer_but_applied_is_adopted_and_published(book):
    first = book.add(new("first"))
    book.store.lose, book.store.apply = True, True
    t = new("a")
    with pytest.raises(CubeError):
        book.add(t)
    assert book.get(t.id) is None and book.seq == 1
    assert book.resolve_doubt() is True
    adopted = book.get(t.id)
    assert adopted is not None and adopted.to_dict() == book.store.get(TASKS, t.id)
    assert book.seq == 2 and book.published == [(1, first.id, State.PENDING), (2, t.id, State.PENDING)]
    book.commit(first, None, "again")
    assert book.store.seq_writes == [1, 2, 3]
    assert sorted(e["seq"] for _, e in book.store.list(EVENTS)) == [1, 2, 3]


def test_a_commit_resolves_the_doubt_first(book):
    book.store.lose, book.store.apply = True, True
    t = new("a")
    with pytest.raises(CubeError):
        book.add(t)
    retried = book.add(new("a"))  # the client's retry with the same id: it was applied after all
    assert retried is book.get(t.id) and book.seq == 1 and book.store.seq_writes == [1]
    assert [e["seq"] for e in book.events(t.id)] == [1]
    other = book.add(new("b"))
    assert book.seq == 2 and book.store.seq_writes == [1, 2] and book.get(other.id) is other


def test_a_commit_on_a_stale_copy_after_adoption_is_refused_not_applied_to_the_old_state(book):
    t = book.add(new("a"))
    book.store.lose, book.store.apply = True, True
    with pytest.raises(CubeError):
        book.commit(t, lambda x: x.transition(State.SCHEDULED), "placed")
    with pytest.raises(CubeError) as err:  # decided on the old copy: must be decided again
        book.commit(t, lambda x: x.transition(State.SCHEDULED), "placed again")
    assert err.value.code == UNAVAILABLE
    assert book.get(t.id).state is State.SCHEDULED and book.seq == 2
    assert book.store.seq_writes == [1, 2]


def test_while_the_doubt_cannot_be_resolved_nothing_is_written(book):
    first = book.add(new("first"))
    book.store.lose = True
    with pytest.raises(CubeError):
        book.add(new("a"))
    batches = book.store.batches
    book.store.deaf = True
    assert book.resolve_doubt() is False
    for attempt in (lambda: book.add(new("b")), lambda: book.commit(first, None, "x"),
                    lambda: book.commit(first, None, "quiet", event=False)):
        with pytest.raises(CubeError) as err:
            attempt()
        assert err.value.code == UNAVAILABLE and "not answering" in err.value.message
    with pytest.raises(CubeError) as err:  # the task in doubt: neither found nor not found
        book.find("a-0000-0000")
    assert err.value.code == UNAVAILABLE and "may or may not" in err.value.message
    assert book.find("first") is first  # others are found as usual
    assert book.store.batches == batches and book.seq == 1
    book.store.deaf = False
    with pytest.raises(CubeError) as err:
        book.find("a-0000-0000")
    assert err.value.code == NOT_FOUND
    book.add(new("b"))
    assert book.store.seq_writes == [1, 2]


def test_a_refusal_is_definite_and_leaves_nothing_in_doubt(book):
    book.store.refuse = True
    t = new("a")
    with pytest.raises(CubeError) as err:
        book.add(t)
    assert err.value.code == UNAVAILABLE
    assert "was not created" in err.value.message and "retry" in err.value.message
    assert book.get(t.id) is None
    book.store.deaf = True  # nothing to re-read: a commit is only refused for the Store itself
    assert book.resolve_doubt() is True
    book.store.deaf = False
    assert book.add(t).id == t.id and book.seq == 1


def test_a_change_to_an_existing_task_that_got_no_answer_says_so(book):
    t = book.add(new("a"))
    book.store.lose = True
    with pytest.raises(CubeError) as err:
        book.commit(t, lambda x: x.transition(State.SCHEDULED), "placed")
    assert err.value.code == UNAVAILABLE and "may or may not" in err.value.message
    book.store.refuse = True
    assert book.resolve_doubt() is True  # (reads work; the refusal is for the next batch)
    with pytest.raises(CubeError) as err:
        book.commit(t, lambda x: x.transition(State.SCHEDULED), "placed")
    assert err.value.code == UNAVAILABLE and "not saved" in err.value.message


def test_the_stored_event_seq_is_never_reused(book):
    """Even a sequence number stored by a write the TaskBook never heard of is not reused."""
    book.add(new("a"))
    book.store.lose = True
    with pytest.raises(CubeError):
        book.add(new("b"))
    book.store.put(META, "event_seq", 7)  # somebody else moved it on
    assert book.resolve_doubt() is True
    book.add(new("c"))
    assert book.seq == 8 and book.store.get(META, "event_seq") == 8


def test_other_errors_are_untouched(book):
    book.store.refuse = False

    class Conflict(SilentStore):
        def batch(self, ops):
            raise CubeError(CONFLICT, "nope")
    b = TaskBook(Conflict())
    with pytest.raises(CubeError) as err:
        b.add(new("a"))
    assert err.value.code == CONFLICT and err.value.message == "nope"
    assert b.resolve_doubt() is True
