"""The service planner (cube/control/rollout.py), pure: Replica rows built by hand, a Service
from cube.model.service, and the clock passed in. No I/O, no actors.

`Sim` plays the ServiceController's part in a few lines: it applies a plan (a stop ends the
task, a create adds a Pending one created now, a new rollout record or a rollback replaces the
service's) so a whole rolling update can be walked through step by step.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from cube.control import rollout
from cube.control.rollout import HEALTH_TIMEOUT, PLACE_TIMEOUT, SLOT_BACKOFF, Plan, Replica, failed, plan, settled
from cube.manager.services import rolled_back
from cube.model.service import (
    COMPLETED,
    PAUSED,
    ROLLBACK_PAUSED,
    ROLLED_BACK,
    ROLLING_BACK,
    UPDATING,
    Rollout,
    Service,
    UpdatePolicy,
)

T0 = 1000.0  # the update starts here
V1 = {"image": "img:1"}
V2 = {"image": "img:2"}


def service(replicas: int = 3, version: int = 1, state: str = "", started: float = T0, **policy) -> Service:
    """A service at `version`; from version 2 on its previous spec is version 1's and, with a
    `state`, a rollout to it started at `started`."""
    svc = Service(name="web", spec=V2 if version > 1 else V1, replicas=replicas, version=version,
                  update=UpdatePolicy(**policy))
    if version > 1:
        svc.previous_spec, svc.previous_version = V1, version - 1
    if state:
        svc.rollout = Rollout(state=state, from_version=svc.previous_version, to_version=version,
                              started_at=started, updated_at=started, message=state)
    return svc


def rep(task_id: str, slot: int, version: int = 1, state: str = "Running", desired: str = "running",
        finished: bool = False, restarts: int = 0, created: float = 0.0, healthy: float | None = 0.0,
        worker: str = "w1", finished_at: float = 0.0) -> Replica:
    """A replica; Running ones are healthy since `healthy` (None: not known healthy yet)."""
    return Replica(task_id=task_id, slot=slot, version=version, state=state, desired=desired, finished=finished,
                   restart_count=restarts, created_at=created,
                   healthy_since=healthy if state == "Running" else None, worker=worker, finished_at=finished_at)


def old(n: int, worker=lambda slot: "w1" if slot % 2 else "w2") -> list[Replica]:
    """Slots 1..n at version 1, Running and healthy for long."""
    return [rep(f"old{s}", s, worker=worker(s)) for s in range(1, n + 1)]


def ids(stops: list[tuple[str, str]]) -> list[str]:
    return sorted(t for t, _ in stops)


class Sim:
    """The ServiceController's role, minus the I/O: apply each plan to the replicas and service."""

    def __init__(self, svc: Service, replicas: list[Replica]):
        self.svc = svc
        self.replicas = {r.task_id: r for r in replicas}
        self.seq = 0
        self.plans: list[Plan] = []

    def plan(self, now: float, drained: frozenset[str] = frozenset()) -> Plan:
        p = plan(self.svc, list(self.replicas.values()), now, drained)
        self.plans.append(p)
        if p.rollback:  # what the controller does: the previous spec is the target again
            self.svc = rolled_back(self.svc, now)
            return p
        if p.rollout is not None:
            self.svc.rollout = p.rollout
        for task_id, _ in p.stop:
            r = self.replicas[task_id]
            self.replicas[task_id] = replace(r, desired="stopped", state="Completed", finished=True,
                                             healthy_since=None)
        for slot, version in p.create:
            self.seq += 1
            task_id = f"s{slot}v{version}n{self.seq}"
            self.replicas[task_id] = rep(task_id, slot, version, state="Pending", created=now, worker="")
        return p

    def run(self, task_id: str, now: float, healthy: float | None = None, worker: str = "w1") -> None:
        """Pending -> Running on `worker`, healthy since `healthy` (default: now)."""
        self.replicas[task_id] = replace(self.replicas[task_id], state="Running", worker=worker,
                                         healthy_since=now if healthy is None else healthy)

    def fail(self, task_id: str, for_good: bool = False) -> None:
        r = self.replicas[task_id]
        self.replicas[task_id] = replace(r, state="Failed", healthy_since=None, finished=for_good,
                                         restart_count=r.restart_count if for_good else r.restart_count + 1)

    def pending(self) -> list[str]:
        return sorted(t for t, r in self.replicas.items() if r.state == "Pending")

    def live(self, slot: int | None = None) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.live and (slot is None or r.slot == slot)),
                      key=lambda r: (r.slot, r.created_at))

    def versions(self) -> dict[int, list[int]]:
        """slot -> versions of its live tasks (one each when nothing is duplicated)."""
        out: dict[int, list[int]] = {}
        for r in self.live():
            out.setdefault(r.slot, []).append(r.version)
        return out


# ---- slots ------------------------------------------------------------------------------------------

def test_empty_slots_are_filled_at_the_current_version():
    p = plan(service(replicas=3), [], T0)
    assert sorted(p.create) == [(1, 1), (2, 1), (3, 1)]
    assert p.stop == [] and p.rollout is None and not p.rollback


def test_only_the_missing_slots_are_filled():
    p = plan(service(replicas=4), [rep("a", 1), rep("c", 3, state="Pending", healthy=None)], T0)
    assert sorted(p.create) == [(2, 1), (4, 1)]
    assert p.stop == []


def test_a_service_at_its_count_needs_nothing():
    p = plan(service(replicas=3), old(3), T0)
    assert (p.create, p.stop, p.rollout, p.rollback, p.events) == ([], [], None, False, [])


def test_scale_down_stops_the_slots_above_n():
    replicas = old(5) + [rep("gone", 4, state="Completed", desired="stopped", finished=True)]
    p = plan(service(replicas=2), replicas, T0)
    assert ids(p.stop) == ["old3", "old4", "old5"]  # not the one already stopped
    assert all(reason == "scaled down to 2" for _, reason in p.stop)
    assert p.create == []


def test_scale_to_zero_stops_everything():
    p = plan(service(replicas=0), old(3), T0)
    assert ids(p.stop) == ["old1", "old2", "old3"] and p.create == []


def test_a_slot_whose_task_was_stopped_by_hand_is_refilled():
    replicas = old(3)
    replicas[1] = replace(replicas[1], desired="stopped", state="Completed", finished=True)
    p = plan(service(replicas=3), replicas, T0)
    assert p.create == [(2, 1)] and p.stop == []


def test_a_stop_by_hand_not_yet_done_is_refilled_too():
    """Desired stopped but its container still running: the slot has no live task any more."""
    replicas = old(2)
    replicas[0] = replace(replicas[0], desired="stopped")
    assert plan(service(replicas=2), replicas, T0).create == [(1, 1)]


def test_a_slot_whose_task_failed_for_good_gets_a_new_one_after_a_backoff():
    """Keeping N running outlives a task's restart policy (Swarm restarts a slot for ever)."""
    replicas = old(3)
    replicas[2] = rep("old3", 3, state="Failed", finished=True, restarts=10, finished_at=T0)
    p = plan(service(replicas=3), replicas, T0 + 1)
    assert p.create == [] and p.stop == []  # not at once: a crash loop must not spin
    p = plan(service(replicas=3), replicas, T0 + SLOT_BACKOFF)
    assert p.create == [(3, 1)] and p.stop == []


def test_a_replica_waiting_for_its_restart_is_left_to_its_restart_policy():
    replicas = old(2)
    replicas[0] = rep("old1", 1, state="Failed", restarts=1)  # live: a restart will come
    p = plan(service(replicas=2), replicas, T0)
    assert p.create == [] and p.stop == []


def test_the_newest_task_of_a_slot_decides():
    """An old stopped task and a live one in the same slot: nothing to do."""
    replicas = [rep("x", 1, state="Completed", desired="stopped", finished=True, created=1.0), rep("y", 1, created=2.0)]
    assert plan(service(replicas=1), replicas, T0).create == []


# ---- settled / failed ----------------------------------------------------------------------------------

def test_settled_needs_running_and_healthy_for_the_monitor_period():
    r = rep("a", 1, healthy=T0)
    assert not settled(r, 5.0, T0 + 4.99)
    assert settled(r, 5.0, T0 + 5.0)
    # a restarted task settles again (e.g. a drain's replacement); a rollout counts its restart as a
    # failure before it asks whether it settled
    assert settled(replace(r, restart_count=1), 5.0, T0 + 60)
    assert not settled(replace(r, healthy_since=None), 5.0, T0 + 60)  # no passing probe yet
    assert not settled(replace(r, state="Scheduled"), 5.0, T0 + 60)
    assert settled(r, 0.0, T0)


def test_failed_is_an_end_a_restart_or_no_room_in_time():
    assert failed(rep("a", 1, state="Failed", healthy=None), 5.0, T0)
    assert failed(rep("a", 1, restarts=1), 5.0, T0)
    assert failed(rep("a", 1, state="Completed", finished=True), 5.0, T0)  # ended although wanted running
    assert not failed(rep("a", 1, state="Completed", desired="stopped", finished=True), 5.0, T0)
    pending = rep("a", 1, state="Pending", created=T0)
    assert not failed(pending, 5.0, T0 + 5.0 + PLACE_TIMEOUT)
    assert failed(pending, 5.0, T0 + 5.0 + PLACE_TIMEOUT + 0.01)
    assert failed(replace(pending, state="Scheduled"), 5.0, T0 + 5.0 + PLACE_TIMEOUT + 0.01)
    assert not failed(rep("a", 1, healthy=None, created=T0), 5.0, T0 + 60)  # Running, not healthy yet: not yet
    # ... but a check that never passes (or cannot be probed) fails it, in time
    assert failed(rep("a", 1, healthy=None, created=T0), 5.0, T0 + 5.0 + PLACE_TIMEOUT + HEALTH_TIMEOUT + 1)


# ---- rolling update ---------------------------------------------------------------------------------------

def test_start_update_and_rollback_records():
    svc = service(version=2)
    r = rollout.start_update(svc, T0)
    assert (r.state, r.from_version, r.to_version, r.started_at, r.updated_at) == (UPDATING, 1, 2, T0, T0)
    b = rollout.start_rollback(svc, T0)
    assert b.state == ROLLING_BACK and b.message == "rolling back"


def test_parallelism_1_replaces_one_slot_at_a_time_and_completes():
    sim = Sim(service(replicas=3, version=2, state=UPDATING, monitor=5.0), old(3))
    p = sim.plan(T0)
    assert p.create == [(1, 2)] and ids(p.stop) == ["old1"]  # stop-first: the old one goes with it
    assert p.rollout.batches == 1 and p.rollout.updated_at == T0
    assert p.events == ["slot 1: replacing version 1 with 2"]
    [new] = sim.pending()
    assert sim.plan(T0 + 0.5).create == []  # in flight: the next slot waits
    sim.run(new, T0 + 1.0)
    assert sim.plan(T0 + 3.0).create == []  # Running, healthy for 2 s of 5: not settled
    p = sim.plan(T0 + 6.0)  # settled: the next slot
    assert p.create == [(2, 2)] and ids(p.stop) == ["old2"] and p.rollout.batches == 2
    sim.run(sim.pending()[0], T0 + 6.5)
    p = sim.plan(T0 + 11.5)
    assert p.create == [(3, 2)] and ids(p.stop) == ["old3"]
    sim.run(sim.pending()[0], T0 + 12.0)
    assert sim.plan(T0 + 16.0).rollout is None  # still monitoring the last one
    p = sim.plan(T0 + 17.0)
    assert p.rollout.state == COMPLETED and p.rollout.message == "update completed"
    assert p.events == ["update completed"] and p.create == [] and p.stop == []
    assert sim.versions() == {1: [2], 2: [2], 3: [2]}
    assert sim.plan(T0 + 30).create == []  # completed: nothing more


@pytest.mark.parametrize("parallelism, batches", [(1, [[1], [2], [3], [4], [5]]), (2, [[1, 2], [3, 4], [5]]),
                                                  (0, [[1, 2, 3, 4, 5]])])
def test_parallelism_sets_the_batch_size(parallelism, batches):
    """0 means every slot at once."""
    sim = Sim(service(replicas=5, version=2, state=UPDATING, monitor=1.0, parallelism=parallelism), old(5))
    now, seen = T0, []
    while sim.svc.rollout.state == UPDATING and now < T0 + 100:
        p = sim.plan(now)
        if p.create:
            seen.append(sorted(s for s, _ in p.create))
            assert len(sim.live()) <= 5  # stop-first never runs more than N
        for task_id in sim.pending():
            sim.run(task_id, now)
        now += 0.5
    assert seen == batches
    assert sim.svc.rollout.state == COMPLETED and sim.svc.rollout.batches == len(batches)
    assert sim.versions() == {s: [2] for s in range(1, 6)}


def test_parallelism_is_a_window_of_replacements_in_flight():
    """As Swarm's updater: `parallelism` slots in flight at most; one that settles makes room."""
    sim = Sim(service(replicas=4, version=2, state=UPDATING, monitor=1.0, parallelism=2), old(4))
    sim.plan(T0)
    first, second = sim.pending()
    assert sim.plan(T0 + 0.5).create == []  # two in flight: no room
    sim.run(first, T0 + 0.1)
    assert sim.plan(T0 + 1.5).create == [(3, 2)]  # one settled, one still in flight: room for one
    sim.run(second, T0 + 1.5)
    assert sim.plan(T0 + 2.0).create == []  # slot 3 and slot 2 in flight
    assert sim.plan(T0 + 2.5).create == [(4, 2)]


def test_delay_waits_after_a_batch_settled():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, monitor=1.0, delay=10.0), old(2))
    sim.plan(T0)
    sim.run(sim.pending()[0], T0 + 0.5)
    assert sim.plan(T0 + 1.0).create == []  # not settled yet
    p = sim.plan(T0 + 2.0)  # settled now: the delay starts counting from here
    assert p.create == [] and p.rollout.settled_at == T0 + 2.0
    assert sim.plan(T0 + 11.9).create == []
    p = sim.plan(T0 + 12.0)
    assert p.create == [(2, 2)] and p.rollout.batches == 2 and p.rollout.updated_at == T0 + 12.0
    sim.run(sim.pending()[0], T0 + 12.5)
    p = sim.plan(T0 + 14.0)
    assert p.rollout.state == COMPLETED  # no delay after the last batch


def test_delay_applies_when_a_batch_settles_unevenly():
    """parallelism 2, delay 10: slot 1's replacement settles before slot 2's. The next slot must
    not start with no delay at all (docs: "the next batch waits `delay` after the previous one
    settled"; Swarm: each of the `parallelism` updaters waits `delay` after its own slot)."""
    sim = Sim(service(replicas=4, version=2, state=UPDATING, monitor=1.0, parallelism=2, delay=10.0), old(4))
    sim.plan(T0)
    first, _ = sim.pending()
    sim.run(first, T0 + 0.5)
    assert sim.plan(T0 + 2.0).create == []  # slot 1 just settled, slot 2 in flight: no delay has passed


def test_no_delay_before_the_first_batch():
    p = plan(service(replicas=2, version=2, state=UPDATING, delay=30.0), old(2), T0)
    assert p.create == [(1, 2)]


def test_a_replacement_without_a_passing_health_check_never_settles():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, monitor=1.0), old(2))
    sim.plan(T0)
    [new] = sim.pending()
    sim.replicas[new] = replace(sim.replicas[new], state="Running", worker="w1", healthy_since=None)
    for now in (T0 + 5, T0 + 30):
        p = sim.plan(now)
        assert p.create == [] and p.rollout is None and not p.rollback


def test_the_monitor_period_counts_from_the_first_passing_probe():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, monitor=3.0), old(2))
    sim.plan(T0)
    [new] = sim.pending()
    sim.run(new, T0 + 1.0, healthy=T0 + 10.0)  # Running at +1, first good probe at +10
    assert sim.plan(T0 + 12.9).create == []
    assert sim.plan(T0 + 13.0).create == [(2, 2)]


def test_stop_first_stops_the_old_task_with_the_new_one_created():
    p = plan(service(replicas=2, version=2, state=UPDATING, order="stop-first"), old(2), T0)
    assert p.create == [(1, 2)] and p.stop == [("old1", "updating to version 2")]


def test_start_first_stops_the_old_task_only_once_the_new_one_settled():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, order="start-first", monitor=2.0), old(2))
    p = sim.plan(T0)
    assert p.create == [(1, 2)] and p.stop == []
    assert sim.versions()[1] == [1, 2]
    [new] = sim.pending()
    assert sim.plan(T0 + 0.5).stop == []
    sim.run(new, T0 + 1.0)
    p = sim.plan(T0 + 2.0)
    assert p.stop == [] and p.create == []  # Running, not settled: both live
    p = sim.plan(T0 + 3.0)
    assert p.stop == [("old1", "replaced")]
    assert p.create == [(2, 2)]  # and the next slot starts, first too
    assert sim.versions() == {1: [2], 2: [1, 2]}


def test_start_first_keeps_the_old_task_when_the_new_one_fails():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, order="start-first", monitor=1.0,
                      failure_action="pause"), old(2))
    sim.plan(T0)
    [new] = sim.pending()
    sim.fail(new)
    p = sim.plan(T0 + 1.0)
    assert p.rollout.state == PAUSED and p.stop == []
    assert sim.versions()[1] == [1, 2]  # old1 still serves


# ---- failures ---------------------------------------------------------------------------------------------

def _one_failed(svc: Service, n: int = 3, how: str = "failed") -> Sim:
    sim = Sim(svc, old(n))
    sim.plan(T0)
    [new] = sim.pending()
    if how == "failed":
        sim.fail(new)
    elif how == "restarted":
        sim.run(new, T0 + 1)
        sim.replicas[new] = replace(sim.replicas[new], restart_count=1)
    elif how == "for good":
        sim.fail(new, for_good=True)
    return sim


@pytest.mark.parametrize("how", ["failed", "restarted", "for good"])
def test_a_failed_replacement_triggers_a_rollback(how):
    sim = _one_failed(service(replicas=3, version=2, state=UPDATING, monitor=1.0), how=how)
    p = sim.plan(T0 + 2.0)
    assert p.rollback and p.create == [] and p.stop == []
    assert p.rollout.failed == [1]
    assert p.events == ["slot 1: the replacement failed", "update failed on 1 of 3 slots: rolling back"]


def test_the_rollback_rolls_the_changed_slots_back_and_completes():
    sim = _one_failed(service(replicas=3, version=2, state=UPDATING, monitor=1.0))
    sim.plan(T0 + 2.0)  # rollback
    assert (sim.svc.version, sim.svc.spec, sim.svc.previous_version) == (1, V1, 2)
    assert sim.svc.rollout.state == ROLLING_BACK and sim.svc.rollout.failed == []
    p = sim.plan(T0 + 2.1)
    assert p.create == [(1, 1)] and len(p.stop) == 1  # only slot 1 was changed
    assert sim.replicas[p.stop[0][0]].version == 2
    sim.run(sim.pending()[0], T0 + 2.5)
    assert sim.plan(T0 + 3.0).rollout is None
    p = sim.plan(T0 + 3.6)
    assert p.rollout.state == ROLLED_BACK and p.rollout.message == "rolled back" and p.events == ["rolled back"]
    assert sim.versions() == {1: [1], 2: [1], 3: [1]}
    assert [r.task_id for r in sim.live()][1:] == ["old2", "old3"]  # untouched slots keep their tasks


def test_a_failure_without_a_previous_spec_pauses_instead_of_rolling_back():
    svc = service(replicas=2, version=2, state=UPDATING, monitor=1.0)
    svc.previous_spec = None
    p = _one_failed(svc, 2).plan(T0 + 2.0)
    assert not p.rollback and p.rollout.state == PAUSED


def test_failure_action_pause_stops_the_update_where_it_is():
    sim = _one_failed(service(replicas=3, version=2, state=UPDATING, monitor=1.0, failure_action="pause"))
    p = sim.plan(T0 + 2.0)
    assert not p.rollback and p.create == []
    assert p.rollout.state == PAUSED and p.rollout.message == "paused: 1 of 3 replacements failed"
    assert p.events[-1] == "paused: 1 of 3 replacements failed"
    for now in (T0 + 3, T0 + 100):  # paused: the other slots stay at version 1
        p = sim.plan(now)
        assert p.create == [] and p.stop == [] and p.rollout is None
    assert sorted(r.task_id for r in sim.live() if r.slot > 1) == ["old2", "old3"]


def test_failure_action_continue_goes_on_and_completes_with_the_failures_said():
    sim = _one_failed(service(replicas=3, version=2, state=UPDATING, monitor=1.0, failure_action="continue"))
    p = sim.plan(T0 + 2.0)
    assert not p.rollback and p.rollout.state == UPDATING and p.rollout.failed == [1]
    assert p.create == [(2, 2)]  # the next batch, in the same pass
    now = T0 + 2.0
    while sim.svc.rollout.state == UPDATING and now < T0 + 60:
        for task_id in sim.pending():
            sim.run(task_id, now)
        now += 0.5
        sim.plan(now)
    assert sim.svc.rollout.state == COMPLETED
    assert sim.svc.rollout.message == "update completed; 1 slots failed"


def test_max_failure_ratio_tolerates_failures_up_to_it_then_acts():
    svc = service(replicas=4, version=2, state=UPDATING, monitor=1.0, max_failure_ratio=0.25)
    sim = _one_failed(svc, 4)
    p = sim.plan(T0 + 2.0)  # 1 of 4 = 0.25: tolerated
    assert not p.rollback and p.rollout.failed == [1] and p.create == [(2, 2)]
    sim.fail(sim.pending()[0])
    p = sim.plan(T0 + 3.0)  # 2 of 4 > 0.25
    assert p.rollback and p.rollout.failed == [1, 2]
    assert p.events[-1] == "update failed on 2 of 4 slots: rolling back"


def test_a_failure_is_counted_once():
    sim = _one_failed(service(replicas=4, version=2, state=UPDATING, monitor=1.0, failure_action="continue"), 4)
    sim.plan(T0 + 2.0)
    p = sim.plan(T0 + 2.5)
    assert p.events == [] and sim.svc.rollout.failed == [1]


def test_a_replacement_stuck_pending_past_monitor_and_place_timeout_fails():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, monitor=5.0), old(2))
    sim.plan(T0)  # slot 1's replacement is created at T0 and finds no room
    assert not sim.plan(T0 + 5.0 + PLACE_TIMEOUT).rollback
    p = sim.plan(T0 + 5.0 + PLACE_TIMEOUT + 0.5)
    assert p.rollback and p.rollout.failed == [1]


def test_a_failed_rollback_pauses():
    sim = _one_failed(service(replicas=3, version=2, state=UPDATING, monitor=1.0))
    sim.plan(T0 + 2.0)  # rolling back
    sim.plan(T0 + 2.1)
    [back] = sim.pending()
    sim.fail(back)
    p = sim.plan(T0 + 3.0)
    assert not p.rollback
    assert p.rollout.state == ROLLBACK_PAUSED and p.rollout.message == "paused: 1 of 3 replacements failed"
    assert sim.plan(T0 + 10).create == []


def test_a_rollback_with_failure_action_continue_still_pauses():
    sim = _one_failed(service(replicas=2, version=2, state=ROLLING_BACK, failure_action="continue", monitor=1.0), 2)
    assert sim.plan(T0 + 2).rollout.state == ROLLBACK_PAUSED


def test_completion_messages_and_states():
    done = [rep(f"n{s}", s, version=2, created=T0 + 1, healthy=T0 + 2) for s in (1, 2)]
    p = plan(service(replicas=2, version=2, state=UPDATING, monitor=1.0), done, T0 + 10)
    assert (p.rollout.state, p.rollout.message, p.events) == (COMPLETED, "update completed", ["update completed"])
    p = plan(service(replicas=2, version=2, state=ROLLING_BACK, monitor=1.0), done, T0 + 10)
    assert (p.rollout.state, p.rollout.message) == (ROLLED_BACK, "rolled back")
    svc = service(replicas=2, version=2, state=UPDATING, monitor=1.0, failure_action="continue")
    svc.rollout.failed = [2]
    p = plan(svc, done, T0 + 10)
    assert (p.rollout.state, p.rollout.message) == (COMPLETED, "update completed; 1 slots failed")
    for state in (COMPLETED, PAUSED, ROLLED_BACK, ROLLBACK_PAUSED, ""):  # not active: no rollout change
        assert plan(service(replicas=2, version=2, state=state), done, T0 + 10).rollout is None


def test_scaling_up_during_an_update_fills_new_slots_at_the_new_version():
    sim = Sim(service(replicas=4, version=2, state=UPDATING, monitor=1.0), old(2))
    p = sim.plan(T0)
    assert sorted(p.create) == [(1, 2), (3, 2), (4, 2)]


def test_a_rollout_resumes_from_its_record_and_the_tasks():
    """After a manager restart, the planner sees the same record and tasks: it goes on where it was."""
    svc = service(replicas=3, version=2, state=UPDATING, monitor=1.0)
    svc.rollout.batches, svc.rollout.updated_at = 1, T0
    replicas = [rep("old1", 1, state="Completed", desired="stopped", finished=True),
                rep("new1", 1, version=2, created=T0, healthy=T0 + 1), *old(3)[1:]]
    p = plan(svc, replicas, T0 + 5)
    assert p.create == [(2, 2)] and ids(p.stop) == ["old2"] and p.rollout.batches == 2


def test_a_rollout_resumes_after_a_crash_between_stop_and_create():
    """Stop-first: the old task was stopped but the new one never written: the slot is refilled,
    and that refill is the batch in flight (parallelism 1: slot 2 waits)."""
    svc = service(replicas=2, version=2, state=UPDATING, monitor=1.0)
    svc.rollout.batches = 1
    replicas = [rep("old1", 1, state="Completed", desired="stopped", finished=True), *old(2)[1:]]
    p = plan(svc, replicas, T0 + 1)
    assert p.create == [(1, 2)] and p.stop == []


def test_a_settled_replacement_lost_with_its_worker_is_not_an_update_failure():
    """Issue 11: "the update survives ... a worker loss mid-update". Slot 1's replacement settled
    long ago; its worker is then lost, so the task is restarted elsewhere (restart_count 1) while
    the update is still rolling: that is not the new spec failing (Swarm only counts a failure
    within a replacement's monitor period) and must not roll the whole update back."""
    svc = service(replicas=3, version=2, state=UPDATING, monitor=1.0)
    svc.rollout.batches, svc.rollout.updated_at = 2, T0 + 5
    svc.rollout.done, svc.rollout.settled_at = [1], T0 + 4  # the planner recorded it when it settled
    replicas = [rep("new1", 1, version=2, created=T0, state="Failed", restarts=1, worker="w1"),  # w1 lost
                rep("new2", 2, version=2, created=T0 + 5, healthy=T0 + 6, worker="w2"),
                rep("old3", 3)]
    p = plan(svc, replicas, T0 + 30)
    assert not p.rollback
    assert p.rollout is None or (not p.rollout.failed and p.rollout.state == UPDATING)


# ---- drain ----------------------------------------------------------------------------------------------

def test_drain_gives_a_slot_its_replacement_first():
    replicas = [rep("a", 1, worker="w1"), rep("b", 2, worker="w2")]
    p = plan(service(replicas=2, monitor=1.0), replicas, T0, frozenset({"w1"}))
    assert p.create == [(1, 1)] and p.stop == []  # the task on w1 keeps running meanwhile


def test_drain_never_stops_a_replica_the_planner_just_made():
    """While its replacement is placed, Running and monitored, the drained worker's task (Running
    for long: settled) stays, and so does the replacement; once it settles, the old one stops."""
    sim = Sim(service(replicas=2, monitor=2.0), [rep("a", 1, worker="w1"), rep("b", 2, worker="w2")])
    drained = frozenset({"w1"})
    assert sim.plan(T0, drained).create == [(1, 1)]
    [new] = sim.pending()
    p = sim.plan(T0 + 0.5, drained)
    assert p.stop == [] and p.create == []
    sim.run(new, T0 + 1.0, worker="w2")
    p = sim.plan(T0 + 2.0, drained)
    assert p.stop == [] and p.create == []  # Running, not settled: the old one still serves
    p = sim.plan(T0 + 3.0, drained)
    assert p.stop == [("a", "replaced")] and p.create == []
    assert [r.task_id for r in sim.live()] == [new, "b"]
    assert sim.plan(T0 + 4.0, drained).create == []  # on w2: nothing more to move


def test_drain_stops_the_old_task_only_once_its_replacement_settled():
    """The old task has not settled itself (it started just before the drain): its replacement
    must still settle before it stops (docs/architecture.md, "Drain")."""
    sim = Sim(service(replicas=1, monitor=5.0), [rep("a", 1, worker="w1", healthy=T0)])
    drained = frozenset({"w1"})
    assert sim.plan(T0 + 1, drained).create == [(1, 1)]
    [new] = sim.pending()
    sim.run(new, T0 + 2, worker="w2")
    assert sim.plan(T0 + 3, drained).stop == []  # the replacement is Running, healthy for 1 s of 5
    assert sim.plan(T0 + 7, drained).stop == [("a", "replaced")]


def test_drain_of_an_unsettled_task_moves_it_once_the_replacement_runs():
    """What the planner does today with a task that has not settled (see the test above): the
    drain completes, the old task stops once its replacement is Running."""
    sim = Sim(service(replicas=1, monitor=5.0), [rep("a", 1, worker="w1", healthy=T0)])
    drained = frozenset({"w1"})
    sim.plan(T0 + 1, drained)
    [new] = sim.pending()
    assert sim.plan(T0 + 1.5, drained).stop == []  # Pending: the old one serves
    sim.run(new, T0 + 2, worker="w2")
    sim.plan(T0 + 8, drained)
    assert [r.task_id for r in sim.live()] == [new]
    assert sim.plan(T0 + 9, drained).create == []


def test_drain_leaves_tasks_not_yet_running_and_other_workers_alone():
    replicas = [rep("a", 1, state="Pending", worker="", healthy=None), rep("b", 2, state="Scheduled", worker="w1"),
                rep("c", 3, worker="w2")]
    p = plan(service(replicas=3), replicas, T0, frozenset({"w1"}))
    assert p.create == [] and p.stop == []


def test_drain_during_an_update_replaces_on_the_new_version():
    svc = service(replicas=2, version=2, state=UPDATING, monitor=1.0, parallelism=1)
    replicas = [rep("n1", 1, version=2, created=T0, healthy=T0 + 1, worker="w1"), rep("old2", 2, worker="w2")]
    p = plan(svc, replicas, T0 + 5, frozenset({"w1"}))
    assert (1, 2) in p.create and (2, 2) in p.create


def test_a_settled_replacement_is_recorded_as_done():
    sim = Sim(service(replicas=2, version=2, state=UPDATING, monitor=1.0), old(2))
    sim.plan(T0)
    [first] = sim.pending()
    sim.run(first, T0 + 0.5)
    p = sim.plan(T0 + 2.0)
    assert p.rollout.done == [1] and p.rollout.settled_at == T0 + 2.0


def test_a_replacement_moved_by_a_lost_worker_is_not_an_update_failure():
    """Issue 11: the update survives a worker loss mid-update, also with the default rollback."""
    svc = service(replicas=2, version=2, state=UPDATING, monitor=5.0)
    moved = replace(rep("new1", 1, version=2, created=T0, state="Failed", healthy=None), lost_count=1)
    p = plan(svc, [moved, rep("old2", 2)], T0 + 2)
    assert not p.rollback and (p.rollout is None or not p.rollout.failed)
    restarted = replace(rep("new1", 1, version=2, created=T0, healthy=T0 + 3, restarts=1), lost_count=1)
    p = plan(svc, [restarted, rep("old2", 2)], T0 + 9)
    assert not p.rollback and p.rollout.done == [1]
    crashed = replace(rep("new1", 1, version=2, created=T0, healthy=None, state="Failed", restarts=1), lost_count=1)
    assert not plan(svc, [crashed, rep("old2", 2)], T0 + 9).rollback  # its one restart was the loss
    crashed_again = replace(crashed, restart_count=2, state="Running")
    assert plan(svc, [crashed_again, rep("old2", 2)], T0 + 9).rollback  # a second one is its own



# ---- fixed host ports (docs/architecture.md, "Ports") -----------------------------------------
def pinned(svc: Service) -> Service:
    svc.spec = {**svc.spec, "ports": ["8080:80"]}
    return svc


def test_a_start_first_update_of_a_service_pinning_a_host_port_goes_stop_first():
    p = plan(pinned(service(replicas=2, version=2, state=UPDATING, order="start-first")), old(2), T0)
    assert p.create == [(1, 2)] and p.stop == [("old1", "updating to version 2")]


def test_an_update_that_drops_the_pinned_port_is_still_stop_first():
    svc = service(replicas=2, version=2, state=UPDATING, order="start-first")
    svc.previous_spec = {**V1, "ports": ["8080:80"]}
    assert plan(svc, old(2), T0).stop == [("old1", "updating to version 2")]


def test_drain_of_a_replica_pinning_a_host_port_stops_it_with_its_replacement_made():
    p = plan(pinned(service(replicas=1)), [rep("old1", 1, worker="w1")], T0, drained=frozenset({"w1"}))
    assert p.create == [(1, 1)] and p.stop == [("old1", "its worker is draining")]
