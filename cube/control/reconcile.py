"""Compare what a worker says it runs with what the Manager wants there (pure logic).

A worker's hello lists its containers (found by the cube.task_id label, so a restarted worker
reports containers it did not start itself). Containers of tasks that were stopped, moved to
another worker or superseded by a newer attempt are stale and must be stopped; containers that
match are adopted; tasks the Manager placed there that the worker does not have are either
re-sent (never started) or failed (their container vanished).

A hello is a snapshot taken at one moment of the worker's report clock, and it may arrive late
(after statuses stamped later). A task whose last applied report is newer than the snapshot is
left out of the plan entirely: the snapshot cannot undo newer facts (docs/protocol.md, "Ordering
worker reports").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, Task


@dataclass
class Plan:
    stop: list[tuple[str, int, str]] = field(default_factory=list)  # (task_id, attempt, reason)
    adopt: list[tuple[Task, dict[str, Any]]] = field(default_factory=list)  # running, as wanted
    ended: list[tuple[Task, dict[str, Any]]] = field(default_factory=list)  # exited while we were apart
    resend: list[Task] = field(default_factory=list)  # placed here, never started
    vanished: list[Task] = field(default_factory=list)  # ran here, container gone
    gone: list[Task] = field(default_factory=list)  # being stopped here, and no container is left
    newer: list[str] = field(default_factory=list)  # ids we know better than the snapshot: left as they are


def newer_than(task: Task, clock: list[int] | None) -> bool:
    """True when the manager applied a report of this task stamped after `clock`."""
    return bool(clock and task.report_clock and task.report_clock > clock)


def plan(worker: str, reported: list[dict[str, Any]], tasks: dict[str, Task],
         clock: list[int] | None = None, placed: Iterable[Task] | None = None) -> Plan:
    """`placed`: the tasks the Manager has Scheduled or Running on `worker`, if it keeps them
    indexed (otherwise every task is looked at)."""
    out = Plan()
    seen: set[str] = set()
    for rep in reported:
        task_id = str(rep.get("task_id", ""))
        attempt = int(rep.get("attempt", -1)) if isinstance(rep.get("attempt"), int) else -1
        task = tasks.get(task_id)
        live = rep.get("state") in ("running", "created", "restarting", "paused")
        if (task is not None and task.worker == worker and task.attempt == attempt and newer_than(task, clock)
                and task.desired == DESIRED_RUNNING and task.state in (State.SCHEDULED, State.RUNNING)):
            seen.add(task_id)  # running, by a report newer than this snapshot: the snapshot is stale
            out.newer.append(task_id)
            continue
        if task is None:
            out.stop.append((task_id, attempt, "unknown task"))
        elif task.worker != worker or task.attempt != attempt:
            out.stop.append((task_id, attempt, f"task now runs as attempt {task.attempt} on {task.worker or 'no worker'}"))
        elif task.desired != DESIRED_RUNNING or task.state in (State.COMPLETED, State.FAILED):
            out.stop.append((task_id, attempt, "task was stopped or has ended"))
            seen.add(task_id)
        elif live:
            out.adopt.append((task, rep))
            seen.add(task_id)
        else:
            out.ended.append((task, rep))
            seen.add(task_id)
    for task in (tasks.values() if placed is None else placed):
        if task.worker != worker or task.id in seen or task.state not in (State.SCHEDULED, State.RUNNING):
            continue
        if newer_than(task, clock):
            out.newer.append(task.id)  # its last report is newer than the snapshot
            continue
        if task.desired != DESIRED_RUNNING:
            out.gone.append(task)
        elif task.state == State.SCHEDULED:
            out.resend.append(task)
        elif task.state == State.RUNNING:
            out.vanished.append(task)
    return out
