"""What happens to a task after it is placed: reports from workers, stops, ends and restarts.

Every decision is made inside a change applied to the task as it is when its write's turn comes
(TaskBook.commit), never on a copy read earlier: two reports of one task cannot race. What
follows a change (a stop to send, a placement pass, a probe reset) runs once it is durable.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cube.control import policy, reconcile
from cube.manager.delivery import Commands
from cube.manager.health import HealthMonitor
from cube.manager.placement import Placement
from cube.manager.registry import WorkerRegistry
from cube.manager.taskbook import QUIET, Done, Skip, TaskBook
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, DESIRED_STOPPED, MAX_OUTPUT, Task
from cube.wire.errors import INTERNAL, CubeError
from cube.wire.loop import Loop

log = logging.getLogger(__name__)

LIVE = (State.SCHEDULED, State.RUNNING)
RECONCILE_TRIES = 30
MAX_PORT_CONFLICTS = 16  # workers a task remembers as having taken its fixed host port
RECONCILE_RETRY = 1.0  # seconds before a snapshot is reconciled again after a refused change


def report_clock(value: Any) -> list[int] | None:
    """A worker's report clock [boot, n] from a message, or None if absent or malformed."""
    if isinstance(value, list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    return None


def host_ports(value: Any) -> dict[str, int]:
    """The published ports a worker reports, {"8080/tcp": 32768}; anything else is dropped."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items()
            if isinstance(k, str) and len(k) <= 32 and type(v) is int and 0 < v < 65536}


def stop_now(state: State, clock: list[int] | None = None) -> Callable[[Task], None]:
    def change(t: Task) -> None:
        t.desired = DESIRED_STOPPED
        t.transition(state)
        t.finished_at = time.time()
        t.report_clock = clock or t.report_clock
    return change


class TaskLife:
    def __init__(self, loop: Loop, book: TaskBook, registry: WorkerRegistry, commands: Commands,
                 placement: Placement, health: HealthMonitor):
        self.loop = loop
        self.book = book
        self.registry = registry
        self.commands = commands
        self.placement = placement
        self.health = health
        # reports being written -> the replies waiting for that outcome (re-sent copies join them)
        self._reporting: dict[tuple[Any, ...], list[Callable[[dict[str, Any], CubeError | None], None]]] = {}

    # ---- a client's stop ---------------------------------------------------------------------------
    def stop(self, task_id: str, done: Done, reason: str = "stop requested") -> None:
        """Desired stopped; the container (if any) is stopped and removed."""
        then: list[Callable[[Task], None]] = []

        def change(t: Task) -> None:
            then.clear()
            if t.desired == DESIRED_STOPPED:
                raise Skip
            if t.state == State.PENDING:
                stop_now(State.COMPLETED)(t)
                t.reason = "stopped before it was placed"
            elif t.state in LIVE and t.worker and self.registry.is_ready(t.worker):
                t.desired = DESIRED_STOPPED
                t.reason = reason
                then.append(lambda n: self.commands.stop(n.worker, n.id, n.attempt, reason))
            elif t.state in LIVE:
                stop_now(State.COMPLETED)(t)
                t.reason = f"stopped; worker {t.worker or '-'} is lost"
            else:  # Completed, or Failed (perhaps waiting to restart): just never restart it
                t.desired = DESIRED_STOPPED
                t.reason = "stopped; will not be restarted"

        def written(task: Task | None, error: CubeError | None) -> None:
            if error is None and task is not None:
                for fn in then:
                    fn(task)
            done(task, error)
        self.book.commit(task_id, change, "", done=written)

    def restart(self, task_id: str, done: Done, reason: str = "restart requested") -> None:
        """An operator's restart: the current attempt (if any) is stopped and the task starts
        over, Pending, desired running, its restart count reset (docs/architecture.md)."""
        then: list[Callable[[Task], None]] = []

        def change(t: Task) -> None:
            then.clear()
            if t.state == State.PENDING and t.desired == DESIRED_RUNNING:
                raise Skip  # already waiting to be placed
            if t.state in LIVE and t.worker and self.registry.is_ready(t.worker):
                worker, attempt = t.worker, t.attempt
                then.append(lambda n: self.commands.stop(worker, n.id, attempt, reason))
            t.transition(State.PENDING, reason)
            t.desired = DESIRED_RUNNING
            t.worker, t.container_id, t.host_ports = "", "", {}
            t.exit_code, t.error = None, ""
            t.restart_count, t.not_before, t.finished_at = 0, 0.0, 0.0

        def written(task: Task | None, error: CubeError | None) -> None:
            if error is None and task is not None:
                for fn in then:
                    fn(task)
                self.placement.schedule()
            done(task, error)
        self.book.commit(task_id, change, "", done=written)

    # ---- reports from workers ------------------------------------------------------------------------
    def status(self, worker: str, b: dict[str, Any], done: Callable[[dict[str, Any], CubeError | None], None]) -> None:
        """A worker's task.status; `done` gets the reply body once the outcome is durable."""
        state = b["state"]
        task = self.book.get(b["task_id"])
        if task is not None and b["attempt"] > task.attempt:
            # An attempt never placed: forged or corrupt. A stop for it would stop the attempts
            # below it on that worker, the current one included.
            done({"ignored": f"attempt {b['attempt']} was never placed (the task is at {task.attempt})"}, None)
            return
        if task is None or task.worker != worker or task.attempt != b["attempt"]:
            if state != "stopped":  # a container or a slot we do not want there: clear it
                self.commands.stop(worker, b["task_id"], b["attempt"], "stale container")
            done({"ignored": "stale"}, None)
            return
        clock = report_clock(b.get("clock"))
        if clock and task.report_clock and clock <= task.report_clock:
            done({"ignored": "older than a report already applied"}, None)  # a late or reordered copy
            return
        if task.state not in LIVE:
            if state != "stopped":  # over, but the worker still holds this attempt: let it go,
                self.commands.stop(worker, task.id, task.attempt, "task has ended")  # or its slot stays
            done({}, None)
            return

        if state not in ("running", "exited", "removed", "failed", "stopped"):
            done({}, None)
            return
        # A copy re-sent while the first is still being written (a worker retrying a slow
        # manager) waits for the first's outcome instead of queueing a write of its own.
        key = (worker, task.id, b["attempt"], state, tuple(clock or ()), b.get("container_id"))
        waiting = self._reporting.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        self._reporting[key] = [done]

        def reply(_: Task | None, error: CubeError | None) -> None:
            for each in self._reporting.pop(key, ()):
                self.loop.safely(each, {}, error)  # one failing answer must not cost the others theirs
        try:
            if state == "running":
                self.running(task.id, task.attempt, b, clock, reply)
            elif state in ("exited", "removed"):
                cause = (f"exited with code {b.get('exit_code')}" if state == "exited"
                         else "container removed behind Cube's back")
                if b.get("error"):
                    cause += f" ({b['error']})"
                self.ended(task.id, task.attempt, b.get("exit_code") if state == "exited" else None, cause,
                           b.get("error", ""), clock, reply, output=b.get("output", ""))
            elif state == "failed":
                self.ended(task.id, task.attempt, None, f"could not start: {b.get('error') or 'unknown error'}",
                           b.get("error", ""), clock, reply, port_conflict=bool(b.get("port_conflict")))
            elif state == "stopped":
                def stopped(t: Task) -> None:
                    if not (t.desired == DESIRED_STOPPED and t.state in LIVE and t.attempt == b["attempt"]):
                        raise Skip
                    stop_now(State.COMPLETED, clock)(t)
                self.book.commit(task.id, stopped, "stopped", done=reply)
        except Exception as e:  # nothing may wait for ever on a report that was never written
            log.exception("manager: report of %s from %s failed", task.id[:8], worker)
            reply(None, CubeError(INTERNAL, f"the report could not be handled: {e}"))

    def running(self, task_id: str, attempt: int, report: dict[str, Any], clock: list[int] | None,
                done: Done | None = None) -> None:
        """The attempt's container runs: Running (or, if the task must not run, a stop)."""
        must_stop: list[bool] = []

        def change(t: Task) -> object:
            must_stop.clear()
            if t.attempt != attempt:
                raise Skip
            if t.state not in LIVE or t.desired == DESIRED_STOPPED:
                must_stop.append(True)
                raise Skip
            if t.state == State.RUNNING and t.container_id == report.get("container_id"):
                ports = host_ports(report.get("host_ports"))
                if not ports or ports == t.host_ports:
                    raise Skip
                # Adopted from a hello that listed the container before its ports were known:
                # the worker's own report of the start brings them.
                t.host_ports = ports
                t.report_clock = clock or t.report_clock
                return QUIET  # the same start: no second Running event
            t.transition(State.RUNNING)
            t.report_clock = clock or t.report_clock
            t.container_id = report.get("container_id") or t.container_id
            t.host_ports = host_ports(report.get("host_ports"))
            t.started_at = report.get("time") or time.time()
            t.error = ""
            t.port_conflicts = {}
            t.reason = f"running on {t.worker}"

        def written(task: Task | None, error: CubeError | None) -> None:
            if error is None and task is not None:
                if must_stop:
                    self.commands.stop(task.worker, task.id, attempt, "stop requested")
                elif task.state == State.RUNNING and task.attempt == attempt:
                    self.health.started(task.id)
            if done:
                done(task, error)
        self.book.commit(task_id, change, "", done=written)

    def ended(self, task_id: str, attempt: int, exit_code: int | None, cause: str, error: str = "",
              clock: list[int] | None = None, done: Done | None = None, worker_lost: bool = False,
              output: str = "", port_conflict: bool = False) -> None:
        """A container ended (exit, removal, failed start, lost worker, failed health check).
        `worker_lost`: not the task's fault (a rolling update does not count it as a failure).
        `port_conflict`: a fixed host port was taken on its worker; its next attempt goes elsewhere.
        `output`: the last lines it printed (a failure), kept for `task inspect`."""
        outcome: list[policy.Outcome] = []
        old_worker: list[str] = []

        def change(t: Task) -> None:
            outcome.clear()
            old_worker.clear()
            if t.attempt != attempt or t.state not in LIVE:
                raise Skip
            o = policy.on_end(t, exit_code, cause)
            outcome.append(o)
            old_worker.append(t.worker)
            t.transition(o.state)
            t.report_clock = clock or t.report_clock
            t.exit_code = exit_code
            t.error = error
            if output:
                t.output, t.output_attempt = output[-MAX_OUTPUT:], attempt
            t.finished_at = time.time()
            if worker_lost:
                t.lost_count += 1
            if port_conflict and t.worker:
                t.port_conflicts[t.worker] = time.time()
                while len(t.port_conflicts) > MAX_PORT_CONFLICTS:
                    del t.port_conflicts[min(t.port_conflicts, key=t.port_conflicts.__getitem__)]
            if o.restart:
                t.not_before = time.time() + o.delay
            t.reason = o.reason

        def written(task: Task | None, err: CubeError | None) -> None:
            if err is None and outcome and task is not None:
                self.health.forget(task_id)
                if old_worker[0] and self.registry.is_ready(old_worker[0]):
                    self.commands.stop(old_worker[0], task_id, attempt, "task ended")  # remove the dead container
                if outcome[0].restart:
                    self.placement.schedule(outcome[0].delay)
            if done:
                done(task, err)
        self.book.commit(task_id, change, "", done=written)

    # ---- a worker's hello -------------------------------------------------------------------------------
    def reconcile(self, worker: str, reported: list[dict[str, Any]], clock: list[int] | None,
                  tries: int = RECONCILE_TRIES) -> None:
        """Act on a hello's snapshot. A change the Store did not take is retried by reconciling the
        same snapshot again (safe: the report clock keeps it from undoing anything newer)."""
        if not self.registry.is_ready(worker):
            return
        plan = reconcile.plan(worker, reported, self.book.tasks, clock, placed=self.book.on_worker(worker))
        for task_id in plan.newer:
            log.info("manager: reconcile %s: hello snapshot older than what is known of %s; left as it is",
                     worker, task_id)
        failed = [False]

        def noted(_: Task | None, error: CubeError | None) -> None:
            if error is not None and not failed[0] and tries > 1:
                failed[0] = True
                log.warning("manager: reconcile %s: %s; trying again", worker, error)
                self.loop.call_later(RECONCILE_RETRY, lambda: self.reconcile(worker, reported, clock, tries - 1))
        for task_id, attempt, reason in plan.stop:
            log.info("manager: reconcile %s: stopping %s attempt %s (%s)", worker, task_id[:8], attempt, reason)
            self.commands.stop(worker, task_id, attempt, reason)
            task = self.book.get(task_id)
            if task and task.worker == worker and task.desired == DESIRED_STOPPED and task.state in LIVE:
                self.book.commit(task_id, self._finish_stop(worker, attempt, clock), "stopped", done=noted)
        for task, rep in plan.adopt:
            self.running(task.id, task.attempt, rep, clock, done=noted)
        for task, rep in plan.ended:
            if rep.get("state") == "removed":  # a slot whose container is gone
                self.ended(task.id, task.attempt, None, f"container vanished from {worker}", clock=clock, done=noted)
            else:
                self.ended(task.id, task.attempt, rep.get("exit_code"),
                           f"exited with code {rep.get('exit_code')} while apart", clock=clock, done=noted)
        for task in plan.resend:
            self.commands.run(task)
        for task in plan.gone:
            self.book.commit(task.id, self._finish_stop(worker, task.attempt, clock),
                             f"stopped; no container left on {worker}", done=noted)
        for task in plan.vanished:
            self.ended(task.id, task.attempt, None, f"container vanished from {worker}", clock=clock, done=noted)

    @staticmethod
    def _finish_stop(worker: str, attempt: int, clock: list[int] | None) -> Callable[[Task], None]:
        def change(t: Task) -> None:
            if not (t.worker == worker and t.attempt == attempt and t.desired == DESIRED_STOPPED and t.state in LIVE):
                raise Skip
            stop_now(State.COMPLETED, clock)(t)
        return change

    # ---- a lost worker ------------------------------------------------------------------------------------
    def worker_lost(self, name: str, done: Callable[[bool], None]) -> None:
        """End (and so move) every task of a lost worker; `done(True)` once all are durable."""
        tasks = self.book.on_worker(name)
        if not tasks:
            done(True)
            return
        left = [len(tasks)]
        ok = [True]

        def one(_: Task | None, error: CubeError | None) -> None:
            if error is not None:
                ok[0] = False
            left[0] -= 1
            if left[0] == 0:
                done(ok[0])
        for task in tasks:
            if task.desired == DESIRED_STOPPED:
                self.book.commit(task.id, self._finish_stop(name, task.attempt, None),
                                 f"stopped; worker {name} lost", done=one)
            else:
                self.ended(task.id, task.attempt, None, f"worker {name} lost", done=one, worker_lost=True)

    # ---- a write that got no answer was applied after all -------------------------------------------------
    def adopted(self, previous: Task | None, task: Task) -> None:
        """A write that got no answer was applied after all: do what its caller left undone."""
        if (previous is not None and previous.state in LIVE and previous.worker
                and (task.state not in LIVE or (task.worker, task.attempt) != (previous.worker, previous.attempt))):
            # the attempt that was live has ended (e.g. a failed health check): remove its container
            self.commands.stop(previous.worker, task.id, previous.attempt, "task ended")
            self.health.forget(task.id)
        if task.desired == DESIRED_STOPPED and task.state in LIVE and task.worker:
            self.commands.stop(task.worker, task.id, task.attempt, "stop requested")
        elif task.state == State.SCHEDULED and task.worker:
            self.commands.run(task)
        elif task.state == State.RUNNING:
            self.health.started(task.id)
        self.placement.schedule()
