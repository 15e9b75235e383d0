"""The TaskTally (cube/manager/tally.py): tasks by state and a service's running replicas, kept as
a TaskBook watcher, agree with a count over every task after each kind of change: added, changed,
refused, adopted after a doubt, pruned, loaded after a restart."""
from __future__ import annotations

import collections
import random
from types import SimpleNamespace

import pytest

from cube.manager.tally import TaskTally
from cube.manager.taskbook import TaskBook
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, DESIRED_STOPPED, task_from_spec
from tests.unit import fakes
from tests.unit.fakes import Calls, FakeStore


def counted_by_walking(book: TaskBook) -> dict[str, int]:
    """What the tally replaces: a walk of every task."""
    c = collections.Counter(t.state.value for t in book.tasks.values())
    return {s.value: c.get(s.value, 0) for s in State}


def running_by_walking(book: TaskBook, svc) -> int:
    """`service ls`'s count as it was computed before the tally (over the service's tasks)."""
    return sum(1 for t in book.tasks.values() if t.service == svc.name and t.state == State.RUNNING
               and t.desired == DESIRED_RUNNING and 0 < t.slot <= svc.replicas and t.version == svc.version)


def tallied(store: FakeStore | None = None) -> tuple[TaskBook, TaskTally]:
    book = TaskBook(store or FakeStore())
    tally = TaskTally()
    book.watchers.append(tally.watch)
    return book, tally


def new(name: str, service: str = "", slot: int = 0, version: int = 0):
    t = task_from_spec({"image": "img", "name": name, "id": f"{name}-0000-0000"})
    t.service, t.slot, t.version = service, slot, version  # as the ServiceController makes replicas
    return t


def to(state: State, **fields):
    def change(t) -> None:
        t.transition(state)
        for k, v in fields.items():
            setattr(t, k, v)
    return change


def agree(book: TaskBook, tally: TaskTally) -> None:
    assert tally.states() == counted_by_walking(book)
    assert sum(tally.by_state.values()) == len(book)


def test_counts_follow_adds_changes_refusals_doubts_and_prunes():
    book, tally = tallied()
    store = book.store
    assert tally.states() == {s.value: 0 for s in State}
    ids = [fakes.add(book, new(f"t{i}")).id for i in range(6)]
    agree(book, tally)
    assert tally.states()["Pending"] == 6
    for i in ids[:4]:
        fakes.commit(book, i, to(State.SCHEDULED, worker="w1"))
    for i in ids[:3]:
        fakes.commit(book, i, to(State.RUNNING))
    fakes.commit(book, ids[0], to(State.FAILED))
    fakes.commit(book, ids[1], to(State.COMPLETED))
    fakes.commit(book, ids[0], to(State.PENDING))  # restarted
    fakes.commit(book, ids[2], to(State.RUNNING), event=False)  # the same state again
    agree(book, tally)
    assert tally.states() == {"Pending": 3, "Scheduled": 1, "Running": 1, "Completed": 1, "Failed": 0}

    refused = Calls()  # a refused write changes nothing in memory, nor in the counts
    book.commit(ids[3], to(State.RUNNING), "refused", done=refused)
    store.next("batch").refuse()
    agree(book, tally)
    assert tally.states()["Scheduled"] == 1

    lost = Calls()  # no answer, but applied: adopted once read back, and counted then
    book.commit(ids[3], to(State.RUNNING), "in doubt", done=lost)
    store.next("batch").lose(applied=True)
    agree(book, tally)
    store.next("get").answer()
    agree(book, tally)
    assert tally.states()["Running"] == 2 and tally.states()["Scheduled"] == 0

    lost_add = Calls()  # a creation in doubt, not applied: never counted
    book.add(new("ghost"), "submitted", lost_add)
    store.next("batch").lose(applied=False)
    store.next("get").answer()
    agree(book, tally)

    pruned = Calls()
    book.prune([ids[1], "unknown"], pruned)
    store.flush()
    assert pruned.one() == (1, None)
    agree(book, tally)
    assert tally.states()["Completed"] == 0 and len(book) == 5


def test_a_restarted_manager_counts_what_it_loads():
    book, _ = tallied()
    for i in range(4):
        t = fakes.add(book, new(f"t{i}"))
        if i % 2:
            fakes.commit(book, t.id, to(State.SCHEDULED, worker="w1"))
    again, tally = tallied(FakeStore(book.store.backend))
    assert fakes.load(again) == 4
    agree(again, tally)
    assert tally.states()["Pending"] == 2 and tally.states()["Scheduled"] == 2


def test_running_replicas_count_only_the_current_version_in_its_slots():
    book, tally = tallied()
    svc = SimpleNamespace(name="web", replicas=3, version=2)

    def replica(slot: int, version: int, service: str = "web"):
        t = fakes.add(book, new(f"{service}-{slot}-v{version}", service=service, slot=slot, version=version))
        fakes.commit(book, t.id, to(State.SCHEDULED, worker="w1"))
        return fakes.commit(book, t.id, to(State.RUNNING)).id
    current = [replica(s, 2) for s in (1, 2, 3)]
    old = replica(1, 1)  # an old version's replica, still running during a rollout
    extra = replica(4, 2)  # a slot beyond the replicas (scaled down)
    other = replica(1, 2, "api")
    assert tally.running(svc) == running_by_walking(book, svc) == 3
    assert tally.running(SimpleNamespace(name="api", replicas=1, version=2)) == 1
    assert tally.running(SimpleNamespace(name="none", replicas=1, version=1)) == 0
    fakes.commit(book, current[0], lambda t: setattr(t, "desired", DESIRED_STOPPED))  # being stopped
    assert tally.running(svc) == running_by_walking(book, svc) == 2
    fakes.commit(book, current[1], to(State.FAILED))
    assert tally.running(svc) == running_by_walking(book, svc) == 1
    svc.replicas = 4  # scaled up: slot 4 counts now
    assert tally.running(svc) == running_by_walking(book, svc) == 2
    svc.version = 1  # rolled back
    assert tally.running(svc) == running_by_walking(book, svc) == 1
    for i in (current[0], old, other):
        fakes.commit(book, i, to(State.COMPLETED))
    book.prune([current[0], old, other], Calls())
    book.store.flush()
    assert tally.running(svc) == running_by_walking(book, svc) == 0
    assert set(tally._running) == {("web", 2)} and extra in tally._replica_of  # emptied entries are dropped
    agree(book, tally)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_keep_the_counts_right(seed):
    """Many legal transitions, desired flips and prunes in a random order: the counts always agree."""
    from cube.model.state import TRANSITIONS
    rnd = random.Random(seed)
    book, tally = tallied()
    svcs = [SimpleNamespace(name=n, replicas=2, version=1) for n in ("a", "b")]
    ids: list[str] = []
    for step in range(400):
        roll = rnd.random()
        if roll < 0.2 or not ids:
            svc = rnd.choice(svcs + [None])
            spec = {"service": svc.name, "slot": rnd.randint(0, 3), "version": rnd.randint(1, 2)} if svc else {}
            ids.append(fakes.add(book, new(f"x{step}", **spec)).id)
        elif roll < 0.85:
            task_id = rnd.choice(ids)
            dst = rnd.choice(sorted(TRANSITIONS[book.get(task_id).state]))
            fakes.commit(book, task_id, to(dst, worker="w1"))
        elif roll < 0.95:
            fakes.commit(book, rnd.choice(ids), lambda t: setattr(t, "desired", rnd.choice(
                [DESIRED_RUNNING, DESIRED_STOPPED])))
        else:
            gone = rnd.sample(ids, min(3, len(ids)))
            book.prune(gone, Calls())
            book.store.flush()
            ids = [i for i in ids if i not in gone]
        agree(book, tally)
        for svc in svcs:
            svc.version, svc.replicas = rnd.randint(1, 2), rnd.randint(0, 3)
            assert tally.running(svc) == running_by_walking(book, svc)
        for slots in tally._running.values():
            assert slots.order == sorted(slots.count) and slots.total == sum(slots.count.values()) > 0
