"""The invariants every chaos script must leave intact (docs/chaos.md, "Invariants").

The runner takes a Snapshot of the cluster from outside (the manager's api, the Store and
Scheduler endpoints, Docker) together with what it knows from playing the script (which starts
were acknowledged, refused or unanswered, which stops may have been applied, which services it
created with which replicas and version acknowledged (service tasks are the manager's, judged by
what their service asks of them: service-slots), how many failures
the script declared or caused with `container` steps, and when it disrupted which worker: its
disruption windows). Each check is a small pure function of that Snapshot returning (problems,
summary); no problems means it holds.

Most of them are "eventually" properties: after faults, the cluster needs time to converge, so
`settle` re-takes the snapshot and re-runs the checks until every check holds in two consecutive
rounds at least a second apart, or a bound expires, and reports the last result. Each snapshot is
bracketed by two `task.ls` calls: if the manager's tasks changed while Docker, the Store and the
Scheduler were being read, the snapshot is not a consistent look and is taken again.

One invariant is about history rather than the final state: `RunWatcher` follows Docker's event
stream for the whole run and records every moment a task had two running containers.
"""
from __future__ import annotations

import fnmatch
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from cube.model.ports import container_key, fixed_host_ports
from cube.manager.listing import redact
from cube.model.service import ACTIVE as ROLLOUT_ACTIVE
from cube.model.service import ROLLBACK_PAUSED, ROLLED_BACK, ROLLING_BACK
from cube.runtime.base import LABEL_ATTEMPT, LABEL_TASK, LABEL_WORKER
from cube.wire.client import all_pages
from cube.wire.errors import CubeError

LIVE_STATES = ("Scheduled", "Running")
DONE_STATES = ("Completed", "Failed")
#: Docker statuses of a container that is (or may again be) alive: what `assert containers` counts.
LIVE_CONTAINER_STATUSES = ("created", "running", "paused", "restarting")

ACKED, REFUSED, UNANSWERED = "acked", "refused", "unanswered"
CPU_TOLERANCE = 1e-6
#: Seconds a disruption window stays open past the grace period after the disruption ends: the
#: time the manager may take to notice the worker is back (its hello, a reconcile) or lost.
NOTICE_MARGIN = 3.0
#: Messages that keep a worker alive in the manager's eyes, or that end its containers when they
#: go wrong: (sender, type, routed to) as a fault rule matches them ("W" stands for the worker).
#: Its hello, heartbeats and statuses, and the manager's `ok` replies to them. A late hello is
#: only answered late (a hello goes out when the worker (re)connects, for another reason that is
#: itself a disruption), so a `delay` of hellos alone does not count; `duplicate` never does.
LIVENESS = (("W", "worker.heartbeat", ""), ("W", "worker.hello", ""), ("W", "task.status", ""),
            ("manager", "ok", "W"))
DISRUPTING_ACTIONS = ("drop", "delay", "reorder", "corrupt")


class Target(Protocol):
    """What a snapshot needs of a cluster (cube.harness.Cluster provides it)."""

    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             endpoint: str = "api") -> dict[str, Any]: ...
    def containers(self, all_: bool = True) -> list[Any]: ...


@dataclass
class Expect:
    """What the runner knows about one task id it asked the manager to start."""

    start: str = ACKED  # acked | refused (every try got an error reply) | unanswered (a try got none)
    desired: str = "running"  # the last desired state the manager acknowledged
    doubt: set[str] = field(default_factory=set)  # desired states an unanswered stop may have set
    allowance: int = 0  # failures declared (restarts, allow) or caused by `container` steps

    def acceptable(self) -> set[str]:
        return {self.desired} | self.doubt


#: Rollout states of a service rolling back (its version is the one before the acknowledged one).
ROLLBACK_STATES = (ROLLING_BACK, ROLLBACK_PAUSED, ROLLED_BACK)


@dataclass
class ServiceExpect:
    """What the runner knows about one service it asked the manager to create (docs/chaos.md,
    "Services"): how its create went, the replicas and spec version the manager acknowledged
    last, what unanswered requests may still have set, whether it was removed, and the failures
    the script declared for its tasks."""

    start: str = ACKED  # the create: acked | refused (error replies only) | unanswered
    replicas: int = 1  # acknowledged last (a create, scale, update or rollback reply)
    version: int = 1
    previous_version: int = 0
    replicas_doubt: set[int] = field(default_factory=set)  # scales that got no answer
    version_doubt: set[int] = field(default_factory=set)  # versions an unanswered update/rollback may set
    removed: str = ""  # "" | acked (service.rm acknowledged) | unanswered (an rm got no answer)
    allowance: dict[int, int] = field(default_factory=dict)  # version (0: any) -> failures each task may have

    def must_exist(self) -> bool:
        return self.start == ACKED and not self.removed

    def replicas_ok(self) -> set[int]:
        return {self.replicas} | self.replicas_doubt

    def versions_ok(self) -> set[int]:
        return {self.version} | self.version_doubt

    def allowed(self, version: Any) -> int:
        """Failures each task of this service (of `version`) may have by the script's declaration."""
        return self.allowance.get(0, 0) + (self.allowance.get(int(version), 0) if version else 0)


@dataclass
class Window:
    """A disruption window: from `start` to `end` (wall-clock, time.time()) the script did something
    to `worker` that can make it look lost or end its containers (docs/chaos.md, "Disruption
    windows"). `end` is None while it lasts (a worker killed and not restarted, a count-only rule:
    until the end of the run). The window counts until `end + slack` (slack = grace + NOTICE_MARGIN)."""

    worker: str
    cause: str
    start: float
    end: float | None = None
    key: str = ""  # what ends it: "paused:<worker>", "down:<worker>", "rule:<id>", "borrowed:<n>"

    def until(self, slack: float) -> float:
        return math.inf if self.end is None else self.end + slack

    def covers(self, at: float, slack: float) -> bool:
        return self.start <= at <= self.until(slack)

    def overlaps(self, start: float, end: float, slack: float) -> bool:
        return self.start <= end and start <= self.until(slack)


def placements(events: Iterable[dict[str, Any]], now: float) -> list[tuple[str, float, float]]:
    """The times a task spent placed on a worker, from its task.inspect events: (worker, from, to).

    A placement begins with a Scheduled or Running event naming a worker and lasts until the next
    event that is not Scheduled/Running on that worker, or a Scheduled one after a Running one (a
    new attempt); the last one, if the task is still there, lasts until `now`."""
    out: list[tuple[str, float, float]] = []
    cur: list[Any] | None = None  # [worker, since, last state]
    for ev in sorted(events, key=lambda e: e.get("seq") or 0):
        state, worker, at = ev.get("state"), ev.get("worker") or "", float(ev.get("time") or 0.0)
        there = state in LIVE_STATES and bool(worker)
        if cur is not None and (not there or worker != cur[0] or (state == "Scheduled" and cur[2] == "Running")):
            out.append((cur[0], cur[1], at))
            cur = None
        if there:
            if cur is None:
                cur = [worker, at, state]
            else:
                cur[2] = state
    if cur is not None:
        out.append((cur[0], cur[1], now))
    return out


def disrupted_placements(events: Iterable[dict[str, Any]], windows: Iterable[Window], slack: float,
                         now: float) -> list[str]:
    """The placements of a task that overlap a disruption window of their worker, described: each
    may end in one failure the script caused (restart accounting)."""
    windows = list(windows)
    hit = []
    for worker, since, to in placements(events, now):
        causes = [w.cause for w in windows if w.worker == worker and w.overlaps(since, to, slack)]
        if causes:
            hit.append(f"on {worker} during {causes[0]}")
    return hit


def rule_disrupts(rule: Any, worker: str, named: bool = True) -> bool:
    """Whether a fault rule (cube.chaos.rules.Rule) can make `worker` look lost or end its
    containers: it names the worker (`named`: its explicit `from` or `to` matches it), its action
    can lose or hold a message, and it matches one of the worker's LIVENESS messages."""
    if not named or rule.action not in DISRUPTING_ACTIONS:
        return False
    for sender, msg_type, to in LIVENESS:
        if rule.action == "delay" and msg_type == "worker.hello":
            continue  # a late hello is answered late, nothing more
        sender, to = (worker if sender == "W" else sender), (worker if to == "W" else to)
        if rule.matches(sender, msg_type, to):
            return True
    return False


@dataclass
class Snapshot:
    """One consistent look at the cluster, shared by all checks of a round."""

    tasks: dict[str, dict[str, Any]]  # task.ls by id
    containers: list[Any] = field(default_factory=list)  # the cluster's Docker containers, any state
    expect: dict[str, Expect] = field(default_factory=dict)  # every task id the runner tried to start
    workers: list[str] = field(default_factory=list)  # full names of workers that must be alive and ready
    stored: dict[str, dict[str, Any]] | None = None  # the Store's tasks namespace (None: not read)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node.ls rows by name
    sched: dict[str, dict[str, Any]] = field(default_factory=dict)  # sched.nodes rows by name
    pings: dict[str, str] = field(default_factory=dict)  # actor -> "" when it answered, else why not
    inspect_errors: dict[str, str] = field(default_factory=dict)  # task id -> task.inspect failure
    windows: list[Window] = field(default_factory=list)  # the script's disruption windows so far
    slack: float = 0.0  # how long a window counts after it ends: grace + NOTICE_MARGIN
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task.inspect events by id
    at: float = field(default_factory=time.time)  # wall clock of the look (open placements end here)
    taken: float | None = None  # time.monotonic() when the Scheduler's rows were read
    since_previous: float | None = None  # seconds since the previous round's `taken` (set by settle)
    double_runs: list[str] = field(default_factory=list)  # recorded by the RunWatcher
    watched: set[str] | None = None  # ids of the containers the RunWatcher saw start and not end
    excused: int = 0  # overlaps the RunWatcher excused (old container on a worker in a window)
    errors: list[str] = field(default_factory=list)  # the snapshot itself could not be taken whole
    services: dict[str, dict[str, Any]] | None = None  # service.ls rows by name (None: not read)
    service_ps: dict[str, set[str]] = field(default_factory=dict)  # service -> task ids service.ps lists
    stored_services: dict[str, dict[str, Any]] | None = None  # the Store's services namespace
    service_expect: dict[str, ServiceExpect] = field(default_factory=dict)  # services the script asked for
    allowance: dict[str, int] = field(default_factory=dict)  # task id -> failures caused by container steps
    asked: set[str] = field(default_factory=set)  # task ids a start was sent for (a reply may be in flight)
    unnamed_starts: int = 0  # task.starts sent without an id that got no answer

    def containers_of(self, task_id: str) -> list[Any]:
        return [c for c in self.containers if c.labels.get(LABEL_TASK) == task_id]

    def judged(self) -> dict[str, Expect]:
        """Tasks judged like acknowledged ones: acknowledged, or unanswered but present."""
        return {tid: e for tid, e in self.expect.items()
                if e.start == ACKED or (e.start == UNANSWERED and tid in self.tasks)}

    def disrupted(self, task_id: str) -> list[str]:
        """The task's placements that overlap a disruption window of their worker."""
        return disrupted_placements(self.events.get(task_id) or [], self.windows, self.slack, self.at)

    def service_tasks(self) -> dict[str, dict[str, Any]]:
        """Tasks the manager created for a service (the script never started them itself)."""
        return {tid: t for tid, t in self.tasks.items() if t.get("service") and tid not in self.expect}

    def accounted(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every task whose failures the script must have caused (restart accounting), with the
        allowance declared for it or caused by `container` steps: the judged tasks, and the tasks
        of services (the script's `allow` for their service, and `container` steps that hit them)."""
        out = {tid: (self.tasks[tid], e.allowance) for tid, e in self.judged().items() if tid in self.tasks}
        for tid, t in self.service_tasks().items():
            e = self.service_expect.get(t["service"])
            out[tid] = (t, self.allowance.get(tid, 0) + (e.allowed(t.get("version")) if e else 0))
        return out


def may_restart(task: dict[str, Any]) -> bool:
    """Whether the restart policy lets an ended task (desired running) be placed again."""
    r = task.get("restart") or {}
    return (task.get("restart_count", 0) < r.get("max_restarts", 0) and r.get("name") != "no"
            and (r.get("name") == "always" or task.get("exit_code") != 0))


def settled(task: dict[str, Any]) -> bool:
    """True when the manager has nothing left to do for the task's desired state."""
    state = task["state"]
    if task["desired"] == "stopped":
        return state in DONE_STATES
    if state == "Running":
        return True
    if state in DONE_STATES:
        return not may_restart(task)  # finished for good: exit 0, or the restart policy gave up
    return False


def live(task: dict[str, Any]) -> bool:
    """A task that holds its service slot: desired running and not finished for good (Completed,
    or Failed with no restart to come)."""
    if task["desired"] != "running":
        return False
    if task["state"] == "Completed":
        return False
    return not (task["state"] == "Failed" and not may_restart(task))


def _n(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _short(task_id: str) -> str:
    return task_id[:12]


def _label(c: Any, key: str) -> str:
    return (c.labels or {}).get(key, "")


def _show(c: Any) -> str:
    return f"{c.short_id} ({c.status}, attempt {_label(c, LABEL_ATTEMPT) or '?'} on {_label(c, LABEL_WORKER) or '?'})"


def all_tasks(target: Target, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every task the manager knows, finished ones included, through every page of task.ls."""
    return all_pages(lambda t, b: target.call(t, b, timeout=timeout), "task.ls", {"all": True, "limit": 5000}, "tasks")


def port_holders(s: Snapshot) -> dict[tuple[str, int, str], str]:
    """(worker address, host port, protocol) -> the Running task (desired running) publishing it."""
    held: dict[tuple[str, int, str], str] = {}
    for tid, t in s.tasks.items():
        if _runs(t):
            address = (s.nodes.get(t.get("worker") or "") or {}).get("address") or t.get("worker") or "?"
            for port, number in (t.get("host_ports") or {}).items():
                held.setdefault((address, int(number), port.partition("/")[2] or "tcp"), tid)
    return held


def waits_for_port(s: Snapshot, t: dict[str, Any], held: dict[tuple[str, int, str], str]) -> str:
    """Which Running tasks a task waiting for a placement (desired running, Pending, or Failed
    with a restart to come) legitimately waits for: on the address of every ready worker, one of
    its fixed host ports is published by a Running task (docs/architecture.md, "Ports": it fits
    nowhere until that task ends). '' when it does not, e.g. when the port is held by a stray
    container, or some worker's address has all its ports free."""
    if t["desired"] != "running" or not (t["state"] == "Pending" or (t["state"] == "Failed" and may_restart(t))):
        return ""
    fixed = [(int(p.partition("/")[0]), p.partition("/")[2] or "tcp") for p in fixed_host_ports(t.get("ports") or [])]
    addresses = {n.get("address") or name for name, n in s.nodes.items() if n.get("state") == "ready"}
    if not fixed or not addresses:
        return ""
    by = set()
    for address in addresses:
        holders = [held[(address, number, proto)] for number, proto in fixed if (address, number, proto) in held]
        if not holders:
            return ""
        by.add(holders[0])
    return ", ".join(_short(h) for h in sorted(by))


# ---- the checks ---------------------------------------------------------------------------------

def desired_state(s: Snapshot) -> tuple[list[str], str]:
    """Each judged task has a desired state the runner may expect, and has reached it, or waits
    for a fixed host port a Running task holds on every worker's address (waits_for_port)."""
    problems = []
    judged = s.judged()
    held = port_holders(s)
    waiting = []
    for task_id, e in judged.items():
        t = s.tasks.get(task_id)
        if t is None:
            continue  # reported by nothing-lost
        ok = sorted(e.acceptable())
        if t["desired"] not in ok:
            problems.append(f"{_short(task_id)}: desired {t['desired']!r} but the manager acknowledged "
                            f"{' or '.join(repr(d) for d in ok)}")
        elif not settled(t):  # judged for the desired state it actually has
            if waits_for_port(s, t, held):
                waiting.append(_short(task_id))
                continue
            problems.append(f"{_short(task_id)} ({t['name']}): {t['state']}, desired {t['desired']} ({t.get('reason')})")
    # A service's tasks: their desired state is the manager's to choose (service-slots judges
    # that choice); each must have reached it.
    mine = s.service_tasks()
    for task_id, t in sorted(mine.items(), key=lambda kv: kv[1]["name"]):
        if not settled(t):
            if waits_for_port(s, t, held):  # service-slots still counts its slot as not Running
                waiting.append(_short(task_id))
                continue
            problems.append(f"{_short(task_id)} ({t['name']}, service {t['service']} slot {t.get('slot')}): "
                            f"{t['state']}, desired {t['desired']} ({t.get('reason')})")
    return problems, (f"{len(judged)} tasks at a desired state the manager acknowledged"
                      + (f"; {len(mine)} service tasks at theirs" if mine else "")
                      + (f"; {len(waiting)} Pending for a host port a Running task holds ({', '.join(waiting)})"
                         if waiting else ""))


#: How many events task.inspect returns at most (the newest): a full list may start mid-history.
INSPECT_EVENTS = 200


def failed_entries(events: Iterable[dict[str, Any]]) -> int:
    """How many times a task's events show it entering Failed (the manager fails a task only
    while it is desired running: each entry is a failure). Counted from the events because a
    failure can leave no restart behind: a task that failed and was stopped (a rollout's
    replacement that failed, a task stopped by the script) before its restart was placed."""
    ordered = sorted(events, key=lambda e: e.get("seq") or 0)
    n, previous = 0, None if len(ordered) < INSPECT_EVENTS else "?"  # a full list: its first event may not be an entry
    for ev in ordered:
        state = ev.get("state")
        if state == "Failed" and previous not in ("Failed", "?"):
            n += 1
        previous = state
    return n


def failures(task: dict[str, Any], events: Iterable[dict[str, Any]] | None = None) -> int:
    """Failures a task went through: its restarts, plus an end that was not asked for; or, if
    more, the times its events show it entering Failed (plus a Completed end while desired
    running), `events` given."""
    ended = task["state"] in DONE_STATES and task["desired"] == "running"
    counted = int(task.get("restart_count") or 0) + (1 if ended else 0)
    if events is None:
        return counted
    completed = task["state"] == "Completed" and task["desired"] == "running"
    return max(counted, failed_entries(events) + (1 if completed else 0))


def restarts(s: Snapshot) -> tuple[list[str], str]:
    """No task failed, or was placed, more often than the script caused or declared (restart accounting)."""
    problems = []
    n = 0
    for task_id, (t, declared) in s.accounted().items():
        n += 1
        disrupted = s.disrupted(task_id)
        allowance = declared + len(disrupted)
        f, attempt = failures(t, s.events.get(task_id)), int(t.get("attempt") or 0)
        caused = str(allowance) + (f" ({len(disrupted)} by disruptions: {'; '.join(disrupted[:3])})"
                                   if disrupted else "")
        if f > allowance:
            entries = failed_entries(s.events.get(task_id) or [])
            problems.append(f"{_short(task_id)} ({t['name']}): {f} failures (restart_count "
                            f"{t.get('restart_count')}, {t['state']}, desired {t['desired']}"
                            + (f", Failed {entries} times in its events" if entries > failures(t) else "")
                            + f") but the script caused {caused} ({t.get('reason')})")
        if attempt - 1 > allowance:
            problems.append(f"{_short(task_id)} ({t['name']}): placed {attempt} times but the script caused "
                            f"{caused} failures")
    return problems, f"{n} tasks (services' included) failed and were placed no more often than the script caused"


def nothing_lost(s: Snapshot) -> tuple[list[str], str]:
    """Acknowledged tasks are in task.ls, task.inspect and the Store; refused ones are nowhere."""
    problems = [f"{_short(tid)}: acknowledged but missing from task.ls"
                for tid, e in s.expect.items() if e.start == ACKED and tid not in s.tasks]
    judged = s.judged()
    if s.stored is not None:
        problems += [f"{_short(tid)}: {judged[tid].start} but not in the Store" for tid in judged
                     if tid not in s.stored]
    problems += [f"{_short(tid)}: task.inspect failed: {why}" for tid, why in s.inspect_errors.items()]
    refused = [tid for tid, e in s.expect.items() if e.start == REFUSED]
    for tid in refused:
        where = [w for w, there in (("task.ls", tid in s.tasks), ("the Store", s.stored is not None and tid in s.stored))
                 if there]
        if where:
            problems.append(f"{_short(tid)}: refused but persisted (in {' and '.join(where)})")
    # Every other task was asked for: by the script, or by a service (the script's, or one the
    # manager lists; service-slots judges a listed service the script never created).
    owners = set(s.service_expect) | set(s.services or ())
    strangers = []
    for tid, t in sorted(s.tasks.items()):
        if tid in s.expect or tid in s.asked:
            continue
        if not t.get("service"):
            strangers.append(f"{_short(tid)} ({t['name']}): in task.ls, but the script never started it "
                             "and no service owns it")
        elif s.services is not None and t["service"] not in owners:
            problems.append(f"{_short(tid)} ({t['name']}): a task of service {t['service']!r}, which no one "
                            "created and the manager does not list")
    if len(strangers) > s.unnamed_starts:  # a start sent without an id and unanswered may have made one
        problems += strangers
    # Services: the acknowledged ones (not removed) in service.ls and the Store's services; the
    # refused and the removed ones in neither.
    n_services = 0
    for name, e in sorted(s.service_expect.items()):
        listed = s.services is not None and name in s.services
        stored = s.stored_services is not None and name in s.stored_services
        if e.must_exist():
            n_services += 1
            if s.services is not None and not listed:
                problems.append(f"service {name}: acknowledged but missing from service.ls")
            if s.stored_services is not None and not stored:
                problems.append(f"service {name}: acknowledged but not in the Store")
        elif e.start == REFUSED or e.removed == ACKED:
            where = [w for w, there in (("service.ls", listed), ("the Store", stored)) if there]
            if where:
                what = "removed but still there" if e.removed == ACKED else "refused but persisted"
                problems.append(f"service {name}: {what} (in {' and '.join(where)})")
    return problems, (f"{len(judged)} acknowledged tasks in task.ls, task.inspect and the Store; "
                      f"{len(refused)} refused ones nowhere; no task nobody asked for"
                      + (f"; {_n(n_services, 'service')} in service.ls and the Store" if s.service_expect else ""))


_MISSING = object()


def store_matches(s: Snapshot) -> tuple[list[str], str]:
    """The Store's tasks are exactly the manager's, field by field (env values are hidden from
    task.ls, docs/security.md: the Store's are compared the same way)."""
    if s.stored is None:
        return ["the Store's tasks could not be read"], ""
    problems = []
    for tid, v in s.stored.items():
        v = redact(v)
        t = s.tasks.get(tid)
        if t is None:
            problems.append(f"{_short(tid)}: in the Store ({v.get('state')}) but not in task.ls")
            continue
        differ = sorted(k for k in set(v) | set(t) if v.get(k, _MISSING) != t.get(k, _MISSING))
        if differ:
            shown = ", ".join(f"{k} (store {v.get(k)!r}, task.ls {t.get(k)!r})" for k in differ[:4])
            problems.append(f"{_short(tid)}: the Store and task.ls differ in {', '.join(differ)}: {shown}")
    problems += [f"{_short(tid)}: in task.ls ({t['state']}) but not in the Store"
                 for tid, t in s.tasks.items() if tid not in s.stored]
    n_services = 0
    if s.services is not None and s.stored_services is not None:
        for name in sorted(set(s.services) | set(s.stored_services)):
            view, rec = s.services.get(name), s.stored_services.get(name)
            if view is None or rec is None:
                problems.append(f"service {name}: in {'the Store' if view is None else 'service.ls'} only")
                continue
            n_services += 1
            differ = _service_differences(view, rec)
            if differ:
                shown = ", ".join(f"{k} (store {_brief(rec, k)}, service.ls {_brief(view, k)})" for k in differ[:3])
                problems.append(f"service {name}: the Store and service.ls differ in {', '.join(differ)}: {shown}")
    return problems, (f"{len(s.stored)} tasks identical in the Store and task.ls"
                      + (f"; {_n(n_services, 'service')} identical in the Store and service.ls" if n_services else ""))


def _service_differences(view: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """The fields in which a service's Store record and its service.ls row differ (the row adds
    `running`, the record keeps `events`; both specs are compared with env values hidden)."""
    rec = {k: v for k, v in rec.items() if k != "events"}
    view = {k: v for k, v in view.items() if k != "running"}
    for key in ("spec", "previous_spec"):
        if isinstance(rec.get(key), dict):
            rec[key] = redact(rec[key])
    return sorted(k for k in set(rec) | set(view) if rec.get(k, _MISSING) != view.get(k, _MISSING))


def _brief(d: dict[str, Any], key: str) -> str:
    v = d.get(key, _MISSING)
    if v is _MISSING:
        return "missing"
    if key == "rollout" and isinstance(v, dict):
        return repr({k: v.get(k) for k in ("state", "to_version", "done", "failed")})
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _runs(t: dict[str, Any]) -> bool:
    return t["state"] == "Running" and t["desired"] == "running"


def single_container(s: Snapshot) -> tuple[list[str], str]:
    """A Running task has exactly one container in Docker (any state): its own, running."""
    problems = []
    n = 0
    for tid, t in s.tasks.items():
        if not _runs(t):
            continue
        n += 1
        cs = s.containers_of(tid)
        mine = [c for c in cs if c.id == t.get("container_id")]
        if not mine:
            problems.append(f"{_short(tid)}: Running on {t.get('worker')} but its container "
                            f"{(t.get('container_id') or '-')[:12]} is not in Docker")
        else:
            c = mine[0]
            if c.status != "running":
                problems.append(f"{_short(tid)}: Running but its container {c.short_id} is {c.status}")
            if _label(c, LABEL_ATTEMPT) != str(t.get("attempt")):
                problems.append(f"{_short(tid)}: container {c.short_id} is labelled attempt "
                                f"{_label(c, LABEL_ATTEMPT) or '-'}, the task is on attempt {t.get('attempt')}")
            if _label(c, LABEL_WORKER) != t.get("worker"):
                problems.append(f"{_short(tid)}: container {c.short_id} is labelled worker "
                                f"{_label(c, LABEL_WORKER) or '-'}, the task is on {t.get('worker')}")
        others = [c for c in cs if c.id != t.get("container_id")]
        if others:
            problems.append(f"{_short(tid)}: {len(others)} more containers besides its own: "
                            + ", ".join(_show(c) for c in others))
    return problems, f"{n} Running tasks with exactly one container, their own"


def no_leftovers(s: Snapshot) -> tuple[list[str], str]:
    """No container (any state) for a task that must have none, nor for a task nobody knows."""
    problems = []
    for c in s.containers:
        tid = _label(c, LABEL_TASK)
        t = s.tasks.get(tid)
        if t is None:
            problems.append(f"container {_show(c)} for task {_short(tid)} the manager does not know")
            continue
        if _runs(t):
            continue  # single-container judges those
        state, desired = t["state"], t["desired"]
        if state == "Scheduled" and desired == "running":
            # Being started: only a container of the current attempt on the chosen worker.
            if _label(c, LABEL_ATTEMPT) != str(t.get("attempt")) or _label(c, LABEL_WORKER) != t.get("worker"):
                problems.append(f"container {_show(c)} left for task {_short(tid)} (Scheduled as attempt "
                                f"{t.get('attempt')} on {t.get('worker')})")
        elif state == "Pending" or settled(t):
            problems.append(f"container {_show(c)} left for task {_short(tid)} ({state}, desired {desired})")
        elif c.status == "running" and desired == "running":  # Failed, waiting for its restart
            problems.append(f"container {_show(c)} still running for task {_short(tid)} ({state})")
        # else: being stopped (desired stopped, still live): desired-state reports it if it stays
    return problems, "no container left for a task that must have none, or for an unknown task"


def _bindings(c: Any) -> dict[str, list[dict[str, str]]]:
    ports = getattr(c, "ports", None)
    if ports is None:
        ports = ((getattr(c, "attrs", None) or {}).get("NetworkSettings") or {}).get("Ports")
    return {k: list(v or []) for k, v in (ports or {}).items()}


def host_ports(s: Snapshot) -> tuple[list[str], str]:
    """host_ports of a Running task are its container's real bindings; no host port used twice."""
    problems = []
    used: dict[tuple[str, int, str], str] = {}
    n = 0
    for tid, t in s.tasks.items():
        if not _runs(t) or not (t.get("ports") or t.get("host_ports")):
            continue
        n += 1
        have = {k: int(v) for k, v in (t.get("host_ports") or {}).items()}
        mine = [c for c in s.containers_of(tid) if c.id == t.get("container_id")]
        exposed = {container_key(p): p for p in t.get("ports") or []}
        for port, entry in exposed.items():  # a fixed host port is the one published
            fixed = fixed_host_ports([entry])
            if fixed and port in have and have[port] != int(fixed[0].partition("/")[0]):
                problems.append(f"{_short(tid)}: asked for {entry} but host_ports[{port}] = {have[port]}")
        if mine:
            real = _bindings(mine[0])
            for port in exposed:
                published = {int(b["HostPort"]) for b in real.get(port, []) if str(b.get("HostPort", "")).isdigit()}
                if port not in have:
                    problems.append(f"{_short(tid)}: port {port} missing from host_ports "
                                    f"(Docker publishes it on {sorted(published) or 'nothing'})")
                elif have[port] not in published:
                    problems.append(f"{_short(tid)}: host_ports[{port}] = {have[port]} but Docker publishes it on "
                                    f"{sorted(published) or 'nothing'}")
            for port in sorted(set(have) - set(exposed)):
                problems.append(f"{_short(tid)}: host_ports has {port}, which the task does not expose")
        # else: single-container reports the missing container
        address = (s.nodes.get(t.get("worker") or "") or {}).get("address") or t.get("worker") or "?"
        for port, number in have.items():
            key = (address, number, port.partition("/")[2] or "tcp")
            if key in used:
                problems.append(f"host port {number}/{key[2]} on {address} used by both {_short(used[key])} "
                                f"and {_short(tid)}")
            else:
                used[key] = tid
    return problems, f"{n} Running tasks with ports bound as the manager says, {len(used)} host ports each used once"


def worker_slots(s: Snapshot) -> tuple[list[str], str]:
    """A live worker holds slots (task_ids, reserved) for exactly its Scheduled/Running tasks, by a
    metrics sample that arrived after the previous round's look (two clean rounds never read the
    same old sample: a sample stays "alive" at the Scheduler for 5 s)."""
    problems = []
    n = 0
    for name, node in sorted(s.nodes.items()):
        row = s.sched.get(name) or node.get("metrics")
        if node.get("state") != "ready" or not row or row.get("state") != "alive":
            continue  # not live: actors-answer says so if it should be
        n += 1
        age = row.get("age")
        if s.since_previous is not None and (not isinstance(age, (int, float)) or age >= s.since_previous):
            problems.append(f"worker {name}: no fresh sample yet (the latest is {age}s old, the previous "
                            f"round looked {s.since_previous:.2f}s ago)")
            continue
        mine = {tid: t for tid, t in s.tasks.items()
                if t.get("worker") == name and t["state"] in LIVE_STATES and t["desired"] == "running"}
        if "task_ids" not in row or "reserved" not in row:
            problems.append(f"worker {name}: its metrics row has no task_ids / reserved")
            continue
        slots = set(row.get("task_ids") or [])
        for tid in sorted(slots - set(mine)):
            t = s.tasks.get(tid)
            what = f"{t['state']}, desired {t['desired']}, on {t.get('worker') or '-'}" if t else "unknown to the manager"
            problems.append(f"worker {name}: keeps a slot for {_short(tid)} ({what})")
        for tid in sorted(set(mine) - slots):
            problems.append(f"worker {name}: no slot for {_short(tid)} ({mine[tid]['state']} there)")
        reserved = row.get("reserved") or {}
        cpu = sum(float(t.get("cpu") or 0) for t in mine.values())
        memory = sum(int(t.get("memory") or 0) for t in mine.values())
        have_cpu = float(reserved.get("cpu") or 0)
        if not math.isclose(have_cpu, cpu, abs_tol=CPU_TOLERANCE):
            problems.append(f"worker {name}: reserves {have_cpu:g} cpu, its tasks ask for {cpu:g}")
        if int(reserved.get("memory") or 0) != memory:
            problems.append(f"worker {name}: reserves {reserved.get('memory')} bytes, its tasks ask for {memory}")
    return problems, f"{n} live workers hold exactly the slots and reservations of their tasks"


def no_double_run(s: Snapshot) -> tuple[list[str], str]:
    """No task ever had two running containers at once (recorded by the RunWatcher for the whole
    run), and the watcher did see every container that runs now (or it could have missed one)."""
    problems = list(s.double_runs)
    if s.watched is not None:
        problems += [f"container {_show(c)} of {_short(_label(c, LABEL_TASK))} runs but the Docker watcher "
                     "did not see it start" for c in s.containers if c.status == "running" and c.id not in s.watched]
    return problems, (f"no task ran two containers at once ({s.excused} overlaps with a container on a "
                      f"worker in a disruption window excused)")


def actors_answer(s: Snapshot) -> tuple[list[str], str]:
    """Every actor answers; every worker the script did not take down is ready with live metrics."""
    problems = [f"{what} does not answer: {why}" for what, why in sorted(s.pings.items()) if why]
    for name in s.workers:
        n = s.nodes.get(name)
        # "ready" only: a worker the manager remembers from before a restart but that has not
        # said hello again is not ready (docs/chaos.md, actors-answer).
        if n is None or n.get("state") != "ready":
            problems.append(f"worker {name} is {n.get('state') if n else 'unknown'} in node.ls")
        elif ((s.sched.get(name) or n.get("metrics") or {}).get("state")) != "alive":
            problems.append(f"worker {name} has no live metrics at the scheduler")
    return problems, f"manager, store, scheduler answer; {len(s.workers)} workers ready"


def _slot_of(t: dict[str, Any]) -> int:
    try:
        return int(t.get("slot") or 0)
    except (TypeError, ValueError):
        return 0


def _shown_task(t: dict[str, Any]) -> str:
    return (f"{_short(t['id'])} v{t.get('version')} {t['state']}"
            + (f" on {t.get('worker')}" if t.get("worker") else "") + f", desired {t['desired']}")


def service_slots(s: Snapshot) -> tuple[list[str], str]:
    """Every service the script created and every service the manager lists: the replicas and
    version the script acknowledged (a rollback, asked for or automatic, may go back to the
    version before), at most one live task per slot, no live task above `replicas`, and, unless a
    rollout is active, exactly `replicas` slots Running at the service's version."""
    if s.services is None:
        return ["service.ls could not be read"], ""
    problems: list[str] = []
    by_service: dict[str, list[dict[str, Any]]] = {}
    for t in s.tasks.values():
        if t.get("service"):
            by_service.setdefault(t["service"], []).append(t)
    drained = {name for name, n in s.nodes.items() if n.get("availability") == "drain"}
    names = sorted(set(s.services) | {n for n, e in s.service_expect.items() if e.must_exist()})
    converged = slots_running = 0
    for name in names:
        row, e = s.services.get(name), s.service_expect.get(name)
        if row is None:
            problems.append(f"service {name}: acknowledged but not in service.ls: its slots cannot be checked")
            continue
        replicas, version = int(row.get("replicas") or 0), int(row.get("version") or 0)
        rollout = str((row.get("rollout") or {}).get("state") or "")
        order = str((row.get("update") or {}).get("order") or "stop-first")
        if any(fixed_host_ports(_port_entries(row.get(k))) for k in ("spec", "previous_spec")):
            order = "stop-first"  # a pinned host port: replacements are stop-first whatever the policy says
        if e is None:
            problems.append(f"service {name}: listed by the manager, but the script never asked for it")
        elif e.start != REFUSED and e.removed != ACKED:  # those: nothing-lost says they should not exist
            if replicas not in e.replicas_ok():
                problems.append(f"service {name}: {replicas} replicas, but the manager acknowledged "
                                f"{' or '.join(str(r) for r in sorted(e.replicas_ok()))}")
            back = rollout in ROLLBACK_STATES and int(row.get("previous_version") or 0) in e.versions_ok()
            if version not in e.versions_ok() and not back:
                problems.append(f"service {name}: version {version} (rollout {rollout or 'none'}), but the manager "
                                f"acknowledged version {' or '.join(str(v) for v in sorted(e.versions_ok()))}")
        tasks = sorted(by_service.get(name, []), key=lambda t: (_slot_of(t), t.get("created_at") or 0))
        listed = s.service_ps.get(name)
        if listed is not None and listed != {t["id"] for t in tasks}:
            extra, missing = sorted(listed - {t["id"] for t in tasks}), sorted({t["id"] for t in tasks} - listed)
            problems.append(f"service {name}: service.ps and task.ls disagree: "
                            + "; ".join(f"{what} {', '.join(_short(i) for i in ids[:4])}"
                                        for what, ids in (("only service.ps lists", extra),
                                                          ("service.ps misses", missing)) if ids))
        live_by_slot: dict[int, list[dict[str, Any]]] = {}
        for t in tasks:
            if live(t):
                live_by_slot.setdefault(_slot_of(t), []).append(t)
        for slot, ts in sorted(live_by_slot.items()):
            if not 1 <= slot <= replicas:
                problems.append(f"service {name}: slot {slot} is above its {replicas} replicas but has "
                                f"{len(ts)} live task(s): {'; '.join(_shown_task(t) for t in ts)}")
            elif len(ts) > 1:
                # two, while a start-first rollout starts the new one or a drained worker's task
                # waits for its replacement elsewhere; never more
                excused = len(ts) == 2 and ((rollout in ROLLOUT_ACTIVE and order == "start-first")
                                            or any(t.get("worker") in drained for t in ts))
                if not excused:
                    problems.append(f"service {name}: slot {slot} has {len(ts)} live tasks: "
                                    + "; ".join(_shown_task(t) for t in ts))
        if rollout in ROLLOUT_ACTIVE:
            continue  # slots are being replaced: converged or not, that is for later
        running = {_slot_of(t) for t in tasks if t["state"] == "Running" and t["desired"] == "running"
                   and int(t.get("version") or 0) == version}
        missing = [k for k in range(1, replicas + 1) if k not in running]
        slots_running += replicas - len(missing)
        if not missing:
            converged += 1
            continue
        shown = []
        for k in missing[:4]:
            in_slot = [t for t in tasks if _slot_of(t) == k]
            last = in_slot[-1] if in_slot else None
            shown.append(f"slot {k}: " + (f"{_shown_task(last)} ({last.get('reason') or '-'})" if last else "no task"))
        problems.append(f"service {name} (rollout {rollout or 'none'}): {replicas - len(missing)} of {replicas} "
                        f"slots Running at version {version}; " + "; ".join(shown)
                        + (f"; ... {len(missing) - 4} more" if len(missing) > 4 else ""))
    return problems, (f"{_n(len(names), 'service')}: at most one live task per slot, none above replicas; "
                      f"{converged} converged ({slots_running} slots Running at their version)")


def _port_entries(spec: Any) -> list[str]:
    """A service template's `ports` as strings ("8081:80", "80/udp"; numbers as given)."""
    ports = spec.get("ports") if isinstance(spec, dict) else None
    return [str(p) for p in ports] if isinstance(ports, list) else []


CHECKS: dict[str, Callable[[Snapshot], tuple[list[str], str]]] = {
    "desired-state": desired_state, "restarts": restarts, "nothing-lost": nothing_lost,
    "store-matches": store_matches, "single-container": single_container, "no-leftovers": no_leftovers,
    "host-ports": host_ports, "worker-slots": worker_slots, "service-slots": service_slots,
    "no-double-run": no_double_run, "actors-answer": actors_answer,
}
#: Checks about the past: once they fail with what was recorded, waiting cannot make them hold.
FINAL = ("no-double-run",)


def evaluate(s: Snapshot, names: Iterable[str] | None = None) -> dict[str, tuple[list[str], str]]:
    results = {}
    for name in names or list(CHECKS):
        try:
            problems, summary = CHECKS[name](s)
        except Exception as e:  # a check that cannot run is a failed check, with the reason
            problems, summary = [f"check failed to run: {type(e).__name__}: {e}"], ""
        if s.errors and name != "actors-answer":
            problems = list(s.errors) + problems
        results[name] = (problems, summary)
    return results


# ---- taking a snapshot ----------------------------------------------------------------------------

def _marks(tasks: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {tid: (t.get("updated_at"), t.get("state")) for tid, t in tasks.items()}


def _store_tasks(target: Target, ns: str = "tasks") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    after = ""
    while True:
        reply = target.call("store.list", {"ns": ns, "after": after}, timeout=5.0, endpoint="store")
        out.update((k, v) for k, v in reply["items"])
        if not reply.get("more") or not reply["items"]:
            return out
        after = reply["items"][-1][0]


def _services(target: Target, s: Snapshot) -> None:
    """service.ls, each service's service.ps, and the Store's services namespace, into `s`."""
    try:
        rows = all_pages(lambda t, b: target.call(t, b, timeout=5.0), "service.ls", {"limit": 1000}, "services")
        s.services = {r["name"]: r for r in rows}
        s.service_ps = {name: {t["id"] for t in target.call("service.ps", {"name": name}, timeout=5.0)["tasks"]}
                        for name in s.services}
    except CubeError as e:
        s.services = None
        s.errors.append(f"service.ls / service.ps failed: {e}")
    try:
        s.stored_services = _store_tasks(target, "services")
    except CubeError as e:
        s.errors.append(f"store.list (services) failed: {e}")


def snapshot(target: Target, expect: dict[str, Expect], workers: list[str], windows: Iterable[Window] = (),
             slack: float = 0.0, watcher: "RunWatcher | None" = None, tries: int = 3,
             service_expect: dict[str, ServiceExpect] | None = None,
             allowance: dict[str, int] | None = None) -> Snapshot:
    """task.ls, Docker, the Store, services (service.ls, service.ps, the Store's), the Scheduler's
    and the manager's nodes, task.ls again; retried while the two task.ls differ (the cluster
    moved during the look). Then pings, and task.inspect of every judged task, and of every
    service task that failed or was placed again (its events tell where and when it was placed)."""
    windows = list(windows)
    for attempt in range(tries):
        s = Snapshot({}, expect=expect, workers=list(workers), windows=windows, slack=slack,
                     service_expect=dict(service_expect or {}), allowance=dict(allowance or {}))
        try:
            first = {t["id"]: t for t in all_tasks(target)}
        except CubeError as e:
            s.errors.append(f"task.ls failed: {e}")
            break
        s.tasks = first
        try:
            s.containers = target.containers()
        except Exception as e:  # noqa: BLE001 - Docker's errors (APIError, requests'): not a look
            s.errors.append(f"listing Docker's containers failed: {type(e).__name__}: {e}")
        if watcher is not None:  # after the listing: what runs in it, the watcher should have seen start
            s.double_runs, s.watched, s.excused = watcher.recorded(), watcher.running_ids(), watcher.excused
        try:
            s.stored = _store_tasks(target)
        except CubeError as e:
            s.errors.append(f"store.list failed: {e}")
        _services(target, s)
        try:
            s.taken = time.monotonic()  # the rows' `age` is measured when the Scheduler answers this
            s.sched = {n["name"]: n for n in target.call("sched.nodes", timeout=3.0, endpoint="scheduler")["nodes"]}
            s.pings["scheduler"] = ""
        except CubeError as e:
            s.pings["scheduler"] = f"sched.nodes: {e}"
        try:
            s.nodes = {n["name"]: n for n in target.call("node.ls", timeout=3.0)["nodes"]}
        except CubeError as e:
            s.errors.append(f"node.ls failed: {e}")
        try:
            second = {t["id"]: t for t in all_tasks(target)}
        except CubeError as e:
            s.errors.append(f"task.ls failed: {e}")
            break
        if _marks(first) == _marks(second):
            break
        if attempt == tries - 1:
            moved = sum(1 for tid in set(first) | set(second)
                        if _marks(first).get(tid) != _marks(second).get(tid))
            s.errors.append(f"task.ls changed while the snapshot was taken ({moved} tasks moved, {tries} tries): "
                            "no consistent look")
        time.sleep(0.2)
    for what, endpoint, msg_type, body in (("manager", "api", "manager.ping", {}),
                                           ("store", "store", "store.count", {"ns": "tasks"}),
                                           ("scheduler", "scheduler", "sched.nodes", {})):
        if what in s.pings:
            continue  # the scheduler answered (or not) inside the bracket already
        try:
            target.call(msg_type, body, timeout=2.0, endpoint=endpoint)
            s.pings[what] = ""
        except CubeError as e:
            s.pings[what] = f"{msg_type}: {e}"
    # A service task that is not Failed, never restarted and was placed once needs no excuse: its
    # events are not read.
    inspect = [tid for tid in s.judged() if tid in s.tasks]
    inspect += [tid for tid, t in s.service_tasks().items()
                if t["state"] == "Failed" or failures(t) or int(t.get("attempt") or 0) > 1]
    for tid in inspect:
        if tid in s.tasks:
            try:
                s.events[tid] = list(target.call("task.inspect", {"id": tid}, timeout=3.0).get("events") or [])
            except CubeError as e:
                s.inspect_errors[tid] = str(e)
    s.at = time.time()
    return s


def settle(collect: Callable[[], Snapshot], bound: float, names: list[str] | None = None,
           gap: float = 1.0) -> tuple[dict[str, tuple[list[str], str]], float]:
    """Re-check until all checks hold in two consecutive rounds at least `gap` s apart, or `bound`
    seconds pass (a clean round always gets its confirming round, even past the bound); returns
    the last results and the time it took."""
    t0 = time.monotonic()
    clean_at: float | None = None
    previous: float | None = None
    while True:
        snap = collect()
        if previous is not None and snap.taken is not None:
            snap.since_previous = snap.taken - previous  # worker-slots wants a sample newer than that
        previous = snap.taken if snap.taken is not None else previous
        results = evaluate(snap, names)
        now = time.monotonic()
        failing = [n for n, (problems, _) in results.items() if problems]
        if not failing:
            if clean_at is not None and now - clean_at >= gap:
                return results, now - t0
            if clean_at is None:
                clean_at = now
            time.sleep(max(0.0, gap - (time.monotonic() - clean_at)))
            continue
        clean_at = None
        recorded_only = all(n in FINAL and set(results[n][0]) <= set(snap.double_runs) for n in failing)
        if now - t0 >= bound or recorded_only:
            return results, now - t0
        time.sleep(0.5)


# ---- the Docker watcher -------------------------------------------------------------------------------

_STARTS = ("start", "unpause", "restart")
_ENDS = ("die", "pause", "destroy", "stop")


@dataclass
class _Seen:
    container: str
    task_id: str
    attempt: str
    worker: str
    order: int


class RunWatcher:
    """Follows Docker's container events for one cluster (containers whose cube.worker label
    starts with its token) and records every moment a task had two running containers.

    An overlap is excused only when the new container started while the older container's worker
    was in one of the script's disruption windows (`disrupted(worker, at)`: paused, killed, cut
    off by a fault rule, until grace + NOTICE_MARGIN after it ended: a partition legitimately
    overlaps the next attempt) and the two containers are of different attempts; two containers
    of the same attempt never are. `feed` is the pure part (tests call it directly);
    `start`/`stop` run it on a thread.
    """

    def __init__(self, token: str, disrupted: Callable[[str, float], bool]):
        self.prefix = token + "-"
        self.disrupted = disrupted
        self.running: dict[str, dict[str, _Seen]] = {}  # task id -> container id -> seen
        self.violations: list[str] = []
        self.excused = 0
        self.events = 0
        self._order = 0
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def feed(self, action: str, container_id: str, labels: dict[str, str], at: float | None = None) -> None:
        """One Docker event; `at` is its time (wall clock; default now)."""
        at = time.time() if at is None else at
        worker = labels.get(LABEL_WORKER) or ""
        task_id = labels.get(LABEL_TASK) or ""
        if not task_id or not worker.startswith(self.prefix):
            return
        with self._lock:
            self.events += 1
            mine = self.running.setdefault(task_id, {})
            if action in _ENDS:
                mine.pop(container_id, None)
                return
            if action not in _STARTS or container_id in mine:
                return
            self._order += 1
            new = _Seen(container_id, task_id, labels.get(LABEL_ATTEMPT) or "?", worker, self._order)
            for old in sorted(mine.values(), key=lambda x: x.order):
                what = (f"{task_id[:12]}: container {new.container[:12]} (attempt {new.attempt} on {new.worker}) "
                        f"started while {old.container[:12]} (attempt {old.attempt} on {old.worker}) was running")
                if old.attempt == new.attempt:
                    self.violations.append(what + ": two containers of the same attempt")
                elif self.disrupted(old.worker, at):
                    self.excused += 1
                else:
                    self.violations.append(what + f"; {old.worker} was not in a disruption window then")
            mine[container_id] = new

    def seed(self, containers: Iterable[Any]) -> None:
        for c in containers:
            if c.status == "running":
                self.feed("start", c.id, c.labels or {})

    def start(self, list_containers: Callable[[], list[Any]]) -> None:
        import docker  # the pure part (feed) must not need Docker

        self._client = docker.from_env(timeout=30)
        # Subscribe first, then list: a container started in between is seen twice (harmless),
        # never missed.
        self._stream = self._client.events(decode=True, filters={"type": "container", "label": LABEL_TASK})
        self.seed(list_containers())
        self._thread = threading.Thread(target=self._follow, name="chaos-docker-watcher", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                actor = event.get("Actor") or {}
                at = event.get("timeNano") / 1e9 if event.get("timeNano") else event.get("time")
                self.feed(event.get("Action") or event.get("status") or "", actor.get("ID") or event.get("id") or "",
                          actor.get("Attributes") or {}, float(at) if at else None)
        except Exception as e:  # noqa: BLE001 - the stream ends with an error when closed
            if not self._stopping:
                with self._lock:
                    self.violations.append(f"the Docker event watcher failed ({type(e).__name__}: {e}): "
                                           "runs after that were not watched")
            return
        if not self._stopping:
            with self._lock:
                self.violations.append("the Docker event stream ended early: runs after that were not watched")

    def recorded(self) -> list[str]:
        with self._lock:
            return list(self.violations)

    def running_ids(self) -> set[str]:
        with self._lock:
            return {cid for mine in self.running.values() for cid in mine}

    def stop(self) -> None:
        self._stopping = True
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass
        if self._thread is not None:
            self._thread.join(5)
        if self._client is not None:
            self._client.close()


def rule_targets(sender: str | None, to: str | None, workers: Iterable[str]) -> set[str]:
    """Full worker names a fault rule's explicit `from` / `to` patterns match (as the injector
    matches them: shell-style, on full names): the workers it names."""
    return {w for w in workers
            if (sender is not None and fnmatch.fnmatchcase(w, sender)) or (to is not None and fnmatch.fnmatchcase(w, to))}
