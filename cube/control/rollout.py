"""What a service needs next, decided from its tasks alone (pure: the clock is a parameter).

Each slot 1..N holds one live task. `plan` looks at a service and its replicas and says which
tasks to create and which to stop, and how its rollout moves on: Swarm's rolling update (at most
`parallelism` replacements in flight; after one settles, the next starts `delay` later; each is
watched for `monitor` seconds, and on failures beyond `max_failure_ratio` the update rolls back,
pauses or continues; a replacement that settled is done for this rollout, whatever happens to it
later), stop-first or start-first (always stop-first when the template pins a host port), and
node drain (a slot on a draining worker gets its replacement first, then the old task stops;
with a fixed host port the old task stops first).
The ServiceController (cube/manager/services.py) applies the plan; docs/architecture.md,
"Services", tells the story.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from cube.model.service import (ACTIVE, COMPLETED, PAUSED, ROLLBACK_PAUSED, ROLLED_BACK, ROLLING_BACK,
                                UPDATING, Rollout, Service)

PLACE_TIMEOUT = 60.0  # a replacement not Running after monitor + this has failed (it found no room)
HEALTH_TIMEOUT = 60.0  # a replacement Running but not healthy after monitor + this has failed
SLOT_BACKOFF = 10.0  # a slot whose task failed for good gets a new one after this (Swarm's restart delay)


@dataclass(frozen=True)
class Replica:
    """One task of a service, as the planner needs it."""

    task_id: str
    slot: int
    version: int
    state: str  # Pending, Scheduled, Running, Completed, Failed
    desired: str  # running, stopped
    finished: bool  # done for good (no restart will come)
    restart_count: int = 0
    created_at: float = 0.0
    healthy_since: float | None = None  # Running and, with a health check, probed fine since
    worker: str = ""
    finished_at: float = 0.0  # when it ended (or last changed), for the slot's backoff
    lost_count: int = 0  # restarts caused by its worker being lost (not the spec's fault)

    @property
    def live(self) -> bool:
        return self.desired == "running" and not self.finished


@dataclass
class Plan:
    create: list[tuple[int, int]] = field(default_factory=list)  # (slot, version)
    stop: list[tuple[str, str]] = field(default_factory=list)  # (task id, reason)
    rollout: Rollout | None = None  # the new rollout record, when it changed
    rollback: bool = False  # start rolling back to the previous spec now
    events: list[str] = field(default_factory=list)  # what happened, for the service's event log


def settled(r: Replica, monitor: float, now: float) -> bool:
    """Running, and healthy for the whole monitor period (since its latest start)."""
    return r.state == "Running" and r.healthy_since is not None and now - r.healthy_since >= monitor


def failed(r: Replica, monitor: float, now: float) -> bool:
    """A replacement that did not make it: ended, restarted, found no room in time, or never
    became healthy (a check that cannot pass, or cannot be probed) in time."""
    if r.finished and r.desired == "running":
        return True
    own_restarts = r.restart_count - r.lost_count  # a lost worker is not the new spec failing
    if own_restarts > 0 or (r.state == "Failed" and r.lost_count == 0):
        return True
    if r.state in ("Pending", "Scheduled"):
        return now - r.created_at > monitor + PLACE_TIMEOUT
    return r.state == "Running" and r.healthy_since is None and now - r.created_at > monitor + PLACE_TIMEOUT + HEALTH_TIMEOUT


def plan(svc: Service, replicas: list[Replica], now: float, drained: frozenset[str] = frozenset()) -> Plan:
    out = Plan()
    by_slot: dict[int, list[Replica]] = {}
    for r in replicas:
        by_slot.setdefault(r.slot, []).append(r)
    for slot_tasks in by_slot.values():
        slot_tasks.sort(key=lambda r: r.created_at)
    target, rollout, policy = svc.version, svc.rollout, svc.update
    active = rollout.state in ACTIVE
    # A fixed host port cannot be held by the old task and its replacement at once on one address:
    # replacements go stop-first, for updates and drains alike.
    pins = svc.pins_host_ports()
    stop_first = policy.order == "stop-first" or pins

    def ours(r: Replica) -> bool:
        """A replacement this rollout made and still watches (one that settled is done: what
        happens to it later, its worker lost, a restart, is not the new spec failing)."""
        return active and r.version == target and r.created_at >= rollout.started_at and r.slot not in rollout.done

    # ---- scale down: slots above N go ----------------------------------------------------------
    for slot, tasks in by_slot.items():
        if slot > svc.replicas:
            out.stop += [(r.task_id, f"scaled down to {svc.replicas}") for r in tasks if r.live]

    # ---- each wanted slot ------------------------------------------------------------------------
    outdated: list[int] = []
    inflight: list[int] = []
    newly_failed: list[int] = []
    newly_done: list[int] = []
    for slot in range(1, svc.replicas + 1):
        tasks = by_slot.get(slot, [])
        live = [r for r in tasks if r.live]
        ended = [r for r in tasks if not r.live]
        backoff_over = not ended or now - max(r.finished_at for r in ended) >= SLOT_BACKOFF
        if not live:
            last = tasks[-1] if tasks else None
            if last is not None and last.desired == "running" and ours(last):
                if slot not in rollout.failed:  # this rollout's replacement failed for good
                    newly_failed.append(slot)
            elif last is None or last.desired != "running" or (active and last.version != target):
                # never filled, stopped by hand (or by a stop-first replacement whose new task was
                # never written), or failed for good on the old spec during a rollout: fill it
                out.create.append((slot, target))
                if active and last is not None and slot not in rollout.done:
                    inflight.append(slot)  # a replacement (a new slot is not one)
            elif backoff_over:  # its task failed for good: a new one, after a backoff
                out.create.append((slot, target))
            continue
        newest = live[-1]
        if ours(newest) and failed(newest, policy.monitor, now):
            if slot not in rollout.failed:
                newly_failed.append(slot)
            continue
        good = [r for r in live if r.version == target and settled(r, policy.monitor, now)]
        if good and any(ours(r) for r in good):
            newly_done.append(slot)
        if good:
            kept = [r for r in good if r.worker not in drained]
            if kept:  # a settled replacement (start-first, or for a drained worker): the others go
                keep = kept[-1]
                out.stop += [(r.task_id, "replaced") for r in live if r is not keep]
                continue
            # settled, but on a draining worker: its replacement elsewhere first, then it stops
            keep = good[-1]
            coming = [r for r in live if r is not keep and r.version == target and r.worker not in drained]
            out.stop += [(r.task_id, "replaced") for r in live if r is not keep and r not in coming]
            if not coming and backoff_over:
                out.create.append((slot, target))
                if pins:  # the two cannot both hold the port on one address: it stops now
                    out.stop.append((keep.task_id, "its worker is draining"))
            continue
        if newest.version != target:
            outdated.append(slot)
            continue
        if ours(newest):
            inflight.append(slot)
        elif len(live) > 1 and not active and not any(r.worker in drained for r in live):
            # two live tasks in a slot and no reason for it (a create written twice): the newest stays
            out.stop += [(r.task_id, "a slot holds one task") for r in live[:-1]]
        elif newest.worker in drained and len(live) == 1 and newest.state == "Running" and backoff_over:
            out.create.append((slot, target))  # drain: its replacement first; it stops once that settled
            if pins:  # unless the two cannot both hold the port: then it stops now
                out.stop.append((newest.task_id, "its worker is draining"))

    # ---- the rollout -------------------------------------------------------------------------------
    if not active:
        return out
    rolling_back = rollout.state == ROLLING_BACK
    if newly_done:
        rollout = replace(rollout, done=sorted(set(rollout.done) | set(newly_done)), settled_at=now)
        out.rollout = rollout
    if newly_failed:
        failures = sorted(set(rollout.failed) | set(newly_failed))
        rollout = replace(rollout, failed=failures)
        out.rollout = rollout
        out.events += [f"slot {s}: the replacement failed" for s in newly_failed]
        if len(failures) / max(1, svc.replicas) > policy.max_failure_ratio:
            action = "pause" if rolling_back else policy.failure_action
            if action == "rollback" and svc.previous_spec is not None:
                out.rollback = True
                out.events.append(f"update failed on {len(failures)} of {svc.replicas} slots: rolling back")
                return out
            if action != "continue":
                out.rollout = replace(rollout, state=ROLLBACK_PAUSED if rolling_back else PAUSED,
                                      message=f"paused: {len(failures)} of {svc.replicas} replacements failed")
                out.events.append(out.rollout.message)
                return out
    if not outdated and not inflight:
        message = "rolled back" if rolling_back else "update completed"
        if rollout.failed:
            message += f"; {len(rollout.failed)} slots failed"
        out.rollout = replace(rollout, state=ROLLED_BACK if rolling_back else COMPLETED, message=message)
        out.events.append(message)
        return out
    room = len(outdated) if policy.parallelism == 0 else policy.parallelism - len(inflight)
    if not outdated or room <= 0:
        return out
    if policy.delay and rollout.done and now - rollout.settled_at < policy.delay:
        return out  # after a replacement settled, the next one waits `delay`
    for slot in outdated[:room]:
        old = [r for r in by_slot[slot] if r.live]
        out.create.append((slot, target))
        if stop_first:
            out.stop += [(r.task_id, f"updating to version {target}") for r in old]
        out.events.append(f"slot {slot}: replacing version {old[-1].version} with {target}")
    out.rollout = replace(rollout, updated_at=now, batches=rollout.batches + 1)
    return out


def start_update(svc: Service, now: float) -> Rollout:
    return Rollout(state=UPDATING, from_version=svc.previous_version, to_version=svc.version,
                   started_at=now, updated_at=now, message="updating")


def start_rollback(svc: Service, now: float) -> Rollout:
    return Rollout(state=ROLLING_BACK, from_version=svc.previous_version, to_version=svc.version,
                   started_at=now, updated_at=now, message="rolling back")


__all__ = ["Plan", "Replica", "plan", "settled", "failed", "start_update", "start_rollback",
           "UPDATING", "PAUSED", "COMPLETED", "ROLLING_BACK", "ROLLBACK_PAUSED", "ROLLED_BACK"]
