"""The Manager actor: owns the desired state of every task and drives the cluster toward it.

It reacts to messages (clients, workers) and to a few timers (worker liveness, placement of
waiting tasks, health probes); nothing waits on a fixed 10-15 s loop as in the book. Every change
of a task is persisted through the Store before it is acknowledged or acted on.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from cube import __version__
from cube.config import ManagerConfig
from cube.control import policy, reconcile
from cube.control.health import probe
from cube.control.taskbook import TaskBook, TaskEvent
from cube.control.workers import LOST, WorkerRegistry
from cube.messages import node as node_msg
from cube.messages import sched as sched_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.model.state import State
from cube.model.task import DESIRED_RUNNING, DESIRED_STOPPED, Task, TaskSpecError, task_from_spec
from cube.store import Store
import zmq

from cube.wire import sockets
from cube.wire.actor import Actor
from cube.wire.client import Client
from cube.wire.envelope import REPLY_ERROR, Envelope
from cube.wire.errors import BAD_REQUEST, NOT_FOUND, UNAVAILABLE, CubeError

log = logging.getLogger(__name__)

NODES = "nodes"
LIVE = (State.SCHEDULED, State.RUNNING)


class Manager(Actor):
    def __init__(self, config: ManagerConfig, store: Store, scheduler: Client | None = None,
                 name: str = "manager"):
        super().__init__(name)
        self.config = config
        self.started = time.time()
        ctx = self.loop.ctx
        self.api = sockets.router(ctx, config.bind(config.api_port))
        self.workers_sock = sockets.router(ctx, config.bind(config.worker_port))
        self.workers_sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker takes its name back
        self.events = sockets.publisher(ctx, bind=config.bind(config.events_port))
        self.scheduler = scheduler or Client(config.scheduler_endpoint, name=name, timeout=1.0, ctx=ctx)
        self.scheduler_notes = sockets.dealer(ctx, config.scheduler_endpoint)  # fire-and-forget releases
        self.book = TaskBook(store, self._publish, on_adopt=self._on_adopted)
        self.registry = WorkerRegistry(config.grace)
        self._health_failures: dict[str, int] = {}  # task id -> consecutive failed probes
        self._last_probe: dict[str, float] = {}  # task id -> monotonic time of the last probe
        self._probing: set[str] = set()
        self._place_timer = None
        self._last_check = time.monotonic()
        self._unmoved: set[str] = set()  # lost workers whose tasks are not all handled yet (Store down)
        self.serve(self.api, accept=task_msg.API | node_msg.API)
        self.serve(self.workers_sock, accept=worker_msg.FROM_WORKER)
        self.serve(self.scheduler_notes, accept=set())

    # ---- start-up ---------------------------------------------------------------------------
    def start(self) -> None:
        """Reload state, then arm the timers. Retries until the Store answers."""
        while True:
            try:
                count = self.book.load()
                for _, data in self.book.store.list(NODES):
                    self.registry.remember(data)
                break
            except CubeError as e:
                log.warning("manager: waiting for the store: %s", e)
                time.sleep(0.5)
        log.info("manager: loaded %d tasks, %d known workers", count, len(self.registry.workers))
        self.loop.call_every(min(1.0, self.config.grace / 4), self._check_workers)
        self.loop.call_every(1.0, self._place_waiting)
        self.loop.call_every(0.5, self._health_tick)
        self.loop.call_every(1.0, self.book.resolve_doubt)  # a write that got no answer
        self._schedule_placement()

    def run(self) -> None:
        self.start()
        self.loop.run()

    # ---- client API -------------------------------------------------------------------------
    def on_manager_ping(self, m: Envelope) -> dict[str, Any]:
        return {"name": self.name, "version": __version__, "uptime": time.time() - self.started,
                "tasks": len(self.book), "workers": len(self.registry.ready())}

    def on_task_start(self, m: Envelope) -> dict[str, Any]:
        try:
            task = task_from_spec(m.body["task"])
        except TaskSpecError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        existing = self.book.get(task.id)
        if existing:  # a replayed or retried start (same id): nothing changes
            return {"task": existing.to_dict(), "existing": True}
        task = self.book.add(task, "submitted")
        self._schedule_placement()
        return {"task": task.to_dict()}

    def on_task_stop(self, m: Envelope) -> dict[str, Any]:
        task = self.book.find(m.body["id"])
        if task.desired == DESIRED_STOPPED:
            return {"task": task.to_dict()}
        if task.state == State.PENDING:
            task = self.book.commit(task, _stop_now(State.COMPLETED), "stopped before it was placed")
        elif task.state in LIVE and task.worker:
            task = self.book.commit(task, _desire_stopped, "stop requested")
            if self.registry.is_ready(task.worker):
                self._send_stop(task.worker, task.id, task.attempt, "stop requested")
            else:
                task = self.book.commit(task, _stop_now(State.COMPLETED), f"stopped; worker {task.worker} is lost")
        else:  # Completed, or Failed (perhaps waiting to restart): just never restart it
            task = self.book.commit(task, _desire_stopped, "stopped; will not be restarted", event=False)
        return {"task": task.to_dict()}

    def on_task_ls(self, m: Envelope) -> dict[str, Any]:
        return {"tasks": [t.to_dict() for t in self.book.where(lambda t: True)]}

    def on_task_inspect(self, m: Envelope) -> dict[str, Any]:
        task = self.book.find(m.body["id"])
        return {"task": task.to_dict(), "events": self.book.events(task.id)}

    def on_task_logs(self, m: Envelope) -> None:
        task = self.book.find(m.body["id"])
        if not task.worker or not task.container_id:
            raise CubeError(NOT_FOUND, f"task {task.id[:12]} has no container (state {task.state.value})")
        if not self.registry.is_ready(task.worker):
            raise CubeError(UNAVAILABLE, f"worker {task.worker} is not connected")

        def relay(reply: Envelope | None) -> None:
            if reply is None:
                m.respond(error=CubeError(UNAVAILABLE, f"worker {task.worker} did not answer"))
            elif reply.type == REPLY_ERROR:
                m.respond(error=CubeError(reply.body.get("code", "error"), reply.body.get("message", "")))
            else:
                m.respond({"logs": reply.body.get("logs", "")})
        env = Envelope(worker_msg.LOGS, {"task_id": task.id, "tail": m.body.get("tail") or 100},
                       route=self.registry.get(task.worker).route)
        self.request(self.workers_sock, env, relay, timeout=5.0)
        return None

    def on_node_ls(self, m: Envelope) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        try:
            metrics = {n["name"]: n for n in self.scheduler.call(sched_msg.NODES, {})["nodes"]}
        except CubeError as e:
            log.warning("manager: no node metrics from the scheduler: %s", e)
        nodes = []
        for rec in sorted(self.registry.workers.values(), key=lambda r: r.name):
            row = rec.to_dict()
            row["tasks"] = len(self.book.on_worker(rec.name))
            row["metrics"] = metrics.get(rec.name)
            nodes.append(row)
        return {"nodes": nodes}

    # ---- workers ----------------------------------------------------------------------------
    def on_worker_hello(self, m: Envelope) -> dict[str, Any]:
        b = m.body
        name = b["name"]
        if m.route and m.route[0] != name.encode():
            raise CubeError(BAD_REQUEST, f"worker identity {m.route[0]!r} does not match name {name!r}")
        # Pending commands are kept: each is the current intent for one attempt (a newer one
        # replaces it by key), and a late hello must not cancel a stop sent after its snapshot.
        rec = self.registry.hello(name, b["address"], float(b["cpus"]), b["memory"], b["disk"], b.get("pid", 0))
        self.book.store.put(NODES, name, rec.to_dict())
        log.info("manager: worker %s at %s says hello with %d containers", name, rec.address, len(b["tasks"]))
        clock = report_clock(b.get("clock"))
        self.loop.call_later(0, lambda: self._reconcile(name, b["tasks"], clock))
        return {"metrics": self.config.metrics_advertised, "heartbeat": self.config.heartbeat_interval,
                "grace": self.config.grace}

    def _known_worker(self, m: Envelope) -> str:
        """The worker behind a message: its connection's identity, never what the body claims."""
        worker = m.route[0].decode(errors="replace") if m.route else ""
        if self.registry.seen(worker) is None:
            raise CubeError(NOT_FOUND, "unknown worker: say hello")
        return worker

    def on_worker_heartbeat(self, m: Envelope) -> dict[str, Any]:
        self._known_worker(m)
        return {}

    def on_task_status(self, m: Envelope) -> dict[str, Any]:
        b = m.body
        worker = self._known_worker(m)
        state = b["state"]
        task = self.book.get(b["task_id"])
        if task is not None and b["attempt"] > task.attempt:
            # An attempt never placed: forged or corrupt. A stop for it would stop the attempts
            # below it on that worker, the current one included.
            return {"ignored": f"attempt {b['attempt']} was never placed (the task is at {task.attempt})"}
        if task is None or task.worker != worker or task.attempt != b["attempt"]:
            if state != "stopped":  # a container or a slot we do not want there: clear it
                self._send_stop(worker, b["task_id"], b["attempt"], "stale container")
            return {"ignored": "stale"}
        clock = report_clock(b.get("clock"))
        if clock and task.report_clock and clock <= task.report_clock:
            return {"ignored": "older than a report already applied"}  # a late or reordered copy
        if task.state not in LIVE:
            if state != "stopped":  # over, but the worker still holds this attempt: let it go,
                self._send_stop(worker, task.id, task.attempt, "task has ended")  # or its slot stays
            return {}
        if state == "running":
            self._on_running(task, b, clock)
        elif state in ("exited", "removed"):
            cause = (f"exited with code {b.get('exit_code')}" if state == "exited"
                     else "container removed behind Cube's back")
            if b.get("error"):
                cause += f" ({b['error']})"
            self._on_ended(task, b.get("exit_code") if state == "exited" else None, cause, b.get("error", ""), clock)
        elif state == "failed":
            self._on_ended(task, None, f"could not start: {b.get('error') or 'unknown error'}", b.get("error", ""),
                           clock)
        elif state == "stopped":
            if task.desired == DESIRED_STOPPED and task.state in LIVE:
                self.book.commit(task, _stop_now(State.COMPLETED, clock), "stopped")
        return {}

    def _on_running(self, task: Task, report: dict[str, Any], clock: list[int] | None = None) -> None:
        if task.state not in LIVE or task.desired == DESIRED_STOPPED:  # it must not run: stop it
            self._send_stop(task.worker, task.id, task.attempt, "stop requested")
            return
        if task.state == State.RUNNING and task.container_id == report.get("container_id"):
            return

        def running(t: Task) -> None:
            t.transition(State.RUNNING)
            t.report_clock = clock or t.report_clock
            t.container_id = report.get("container_id") or t.container_id
            t.host_ports = {k: int(v) for k, v in (report.get("host_ports") or {}).items()}
            t.started_at = report.get("time") or time.time()
            t.error = ""
        self.book.commit(task, running, f"running on {task.worker}")
        self._health_failures.pop(task.id, None)
        self._last_probe[task.id] = time.monotonic()  # first probe one interval after the start

    def _on_ended(self, task: Task, exit_code: int | None, cause: str, error: str = "",
                  clock: list[int] | None = None) -> None:
        """A container ended (exit, removal, failed start, lost worker, failed health check)."""
        if task.state not in LIVE:
            return
        outcome = policy.on_end(task, exit_code, cause)

        def ended(t: Task) -> None:
            t.transition(outcome.state)
            t.report_clock = clock or t.report_clock
            t.exit_code = exit_code
            t.error = error
            t.finished_at = time.time()
            if outcome.restart:
                t.not_before = time.time() + outcome.delay
        old_worker, attempt = task.worker, task.attempt
        self.book.commit(task, ended, outcome.reason)
        self._health_failures.pop(task.id, None)
        self._last_probe.pop(task.id, None)
        if old_worker and self.registry.is_ready(old_worker):
            self._send_stop(old_worker, task.id, attempt, "task ended")  # remove the dead container
        if outcome.restart:
            self.loop.call_later(outcome.delay, self._schedule_placement)

    def _reconcile(self, worker: str, reported: list[dict[str, Any]], clock: list[int] | None = None) -> None:
        if not self.registry.is_ready(worker):
            return
        plan = reconcile.plan(worker, reported, self.book.tasks, clock)
        for task_id, attempt, reason in plan.stop:
            log.info("manager: reconcile %s: stopping %s attempt %s (%s)", worker, task_id[:8], attempt, reason)
            self._send_stop(worker, task_id, attempt, reason)
            task = self.book.get(task_id)
            if task and task.worker == worker and task.desired == DESIRED_STOPPED and task.state in LIVE:
                self.book.commit(task, _stop_now(State.COMPLETED, clock), "stopped")
        for task, rep in plan.adopt:
            self._on_running(task, rep, clock)
        for task, rep in plan.ended:
            if rep.get("state") == "removed":  # a slot whose container is gone
                self._on_ended(task, None, f"container vanished from {worker}", clock=clock)
            else:
                self._on_ended(task, rep.get("exit_code"), f"exited with code {rep.get('exit_code')} while apart",
                               clock=clock)
        for task in plan.resend:
            self._send_run(task)
        for task in plan.gone:
            self.book.commit(task, _stop_now(State.COMPLETED, clock), f"stopped; no container left on {worker}")
        for task in plan.vanished:
            self._on_ended(task, None, f"container vanished from {worker}", clock=clock)

    def _check_workers(self) -> None:
        now = time.monotonic()
        stalled, self._last_check = now - self._last_check, now
        if stalled > max(1.5, self.config.grace / 2):
            # This loop was not listening (e.g. blocked on a frozen Store): the workers' silence
            # proves nothing, and declaring them lost would restart healthy tasks elsewhere.
            log.warning("manager: loop stalled %.1fs; not judging worker liveness this round", stalled)
            self.registry.touch_all()
            return
        for rec in self.registry.expire():
            log.warning("manager: worker %s lost (silent for more than %gs)", rec.name, self.config.grace)
            self._cancel_commands(rec.name)
            self._safe_put_node(rec.to_dict())
            self._unmoved.add(rec.name)
        for name in sorted(self._unmoved):  # retried every tick until the Store takes the changes
            if not self.registry.is_ready(name):  # (back already: its hello reconciles instead)
                try:
                    for task in self.book.on_worker(name):
                        if task.desired == DESIRED_STOPPED:
                            self.book.commit(task, _stop_now(State.COMPLETED), f"stopped; worker {name} lost")
                        else:
                            self._on_ended(task, None, f"worker {name} lost")
                except CubeError as e:
                    log.warning("manager: tasks of lost worker %s not moved yet: %s", name, e)
                    continue
                self._schedule_placement()
            self._unmoved.discard(name)

    def _safe_put_node(self, data: dict[str, Any]) -> None:
        try:
            self.book.store.put(NODES, data["name"], data)
        except CubeError as e:
            log.warning("manager: could not record node %s: %s", data["name"], e)

    def _on_adopted(self, previous: Task | None, task: Task) -> None:
        """A change whose write got no answer was applied after all: do what was left undone."""
        if task.desired == DESIRED_STOPPED and task.state in LIVE and task.worker:
            self._send_stop(task.worker, task.id, task.attempt, "stop requested")
        elif task.state == State.SCHEDULED and task.worker:
            self._send_run(task)
        self._schedule_placement()

    # ---- placement --------------------------------------------------------------------------
    def _schedule_placement(self) -> None:
        """Coalesce many triggers (new task, task ended, worker joined) into one placement pass."""
        if self._place_timer is None:
            self._place_timer = self.loop.call_later(0, self._place_waiting)

    def _waiting(self, now: float) -> list[Task]:
        def wants_placement(t: Task) -> bool:
            if t.desired != DESIRED_RUNNING:
                return False
            if t.state == State.PENDING:
                return True
            return (t.state == State.FAILED and t.not_before > 0 and t.not_before <= now
                    and t.restart.allows(t.exit_code, t.restart_count))
        return self.book.where(wants_placement)

    def _place_waiting(self) -> None:
        self._place_timer = None
        refused: list[tuple[float, int, int, str]] = []  # demands that found no node in this pass
        for task in self._waiting(time.time()):
            known = next((r for c, m, d, r in refused
                          if task.cpu >= c and task.memory >= m and task.disk >= d), None)
            if known is not None:  # a smaller task just found no room: this one cannot either
                if known != task.reason:
                    self.book.commit(task, None, known, event=False)
                continue
            try:
                reply = self.scheduler.call(sched_msg.PLACE, {
                    "task_id": task.id, "cpu": float(task.cpu), "memory": int(task.memory),
                    "disk": int(task.disk), "exclude": self.registry.lost(),
                    "only": [n for n in self.registry.ready() if self.registry.is_ready(n)]})
            except CubeError as e:
                if e.code == UNAVAILABLE:
                    log.warning("manager: scheduler unavailable, %s waits: %s", task.id[:8], e)
                    return
                reply = {"node": None, "reason": f"scheduler refused: {e.message}"}
            node = reply.get("node")
            if not node or not self.registry.is_ready(node):
                reason = reply.get("reason") or f"scheduler chose {node}, which is not connected"
                if not node:
                    refused.append((task.cpu, task.memory, task.disk, reason))
                if reason != task.reason:
                    self.book.commit(task, None, reason, event=False)
                continue
            self._assign(task, node)

    def _assign(self, task: Task, node: str) -> None:
        restart = task.state == State.FAILED

        def scheduled(t: Task) -> None:
            t.transition(State.SCHEDULED)
            t.worker = node
            t.attempt += 1
            t.container_id = ""
            t.host_ports = {}
            t.exit_code = None
            t.not_before = 0.0
            t.report_clock = []  # a new attempt: no report of it applied yet
            if restart:
                t.restart_count += 1
        why = f"restart {task.restart_count + 1} on {node}" if restart else f"placed on {node}"
        task = self.book.commit(task, scheduled, why)
        self._send_run(task)

    # ---- commands to workers ------------------------------------------------------------------
    def _send_run(self, task: Task) -> None:
        self._command(task.worker, task.id, worker_msg.RUN, {"task": task.to_dict(), "attempt": task.attempt})

    def _send_stop(self, worker: str, task_id: str, attempt: int, reason: str) -> None:
        self._command(worker, task_id, worker_msg.STOP, {"task_id": task_id, "attempt": attempt, "reason": reason})

    def _command(self, worker: str, task_id: str, msg_type: str, body: dict[str, Any]) -> None:
        """Send a command, re-sent until the worker acknowledges; a newer one for the task replaces it."""
        rec = self.registry.get(worker)
        if rec is None or rec.state == LOST:
            return

        def acked(reply: Envelope | None) -> None:
            if reply is not None and reply.type == REPLY_ERROR:
                log.warning("manager: %s refused %s for %s: %s", worker, msg_type, task_id[:8],
                            reply.body.get("message"))
        # Keyed by attempt: a stop for an old attempt never cancels the run of the new one.
        key = ("cmd", worker, task_id, body.get("attempt"))
        self.request(self.workers_sock, Envelope(msg_type, body, route=rec.route), acked,
                     retry_every=self.config.command_retry, key=key)

    def _cancel_commands(self, worker: str) -> None:
        self.cancel_where(lambda key: key[0] == "cmd" and key[1] == worker)

    # ---- health checks --------------------------------------------------------------------------
    def _health_tick(self) -> None:
        now = time.monotonic()
        for task in self.book.where(lambda t: t.state == State.RUNNING and t.health is not None):
            if task.id in self._probing or task.desired != DESIRED_RUNNING:
                continue
            if now - self._last_probe.get(task.id, 0.0) < task.health.interval:
                continue
            target = self._health_target(task)
            if target is None:
                continue
            self._last_probe[task.id] = now
            self._probing.add(task.id)
            host, port = target
            self.loop.run_blocking(probe, host, port, task.health.path, task.health.timeout,
                                   done=lambda res, err, t=task: self._health_result(t.id, t.attempt, res, err))

    def _health_target(self, task: Task) -> tuple[str, int] | None:
        rec = self.registry.get(task.worker)
        port_key = task.health.port or (task.ports[0] if task.ports else "")
        host_port = task.host_ports.get(port_key)
        if rec is None or not host_port:
            return None
        return rec.address, int(host_port)

    def _health_result(self, task_id: str, attempt: int, result: Any, error: BaseException | None) -> None:
        self._probing.discard(task_id)
        task = self.book.get(task_id)
        if task is None or task.attempt != attempt or task.state != State.RUNNING:
            return
        if error is None and result.ok:
            self._health_failures.pop(task_id, None)
            return
        failures = self._health_failures.get(task_id, 0) + 1
        self._health_failures[task_id] = failures
        detail = result.detail if result else str(error)
        log.info("manager: health check %d/%d of %s failed: %s", failures, task.health.threshold, task.id[:8], detail)
        if failures >= task.health.threshold:
            self._on_ended(task, None, f"health check failed {failures} times ({detail})")

    # ---- events -----------------------------------------------------------------------------------
    def _publish(self, event: TaskEvent, task: Task) -> None:
        body = event.to_dict()
        body["task"] = task.to_dict()
        self.send(self.events, Envelope(task_msg.EVENT, body))
        if task.state in (State.COMPLETED, State.FAILED):  # its capacity is free again, now
            self.request(self.scheduler_notes, Envelope(sched_msg.RELEASE, {"task_id": task.id}), timeout=2.0)


def _desire_stopped(t: Task) -> None:
    t.desired = DESIRED_STOPPED


def _stop_now(state: State, clock: list[int] | None = None):
    def change(t: Task) -> None:
        t.desired = DESIRED_STOPPED
        t.transition(state)
        t.finished_at = time.time()
        t.report_clock = clock or t.report_clock
    return change


def report_clock(value: Any) -> list[int] | None:
    """A worker's report clock [boot, n] from a message, or None if absent or malformed."""
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        return value
    return None


def run_manager(config: ManagerConfig) -> None:
    """Process entry point."""
    from cube.store.remote import RemoteStore
    config = config.resolved()
    Manager(config, RemoteStore(config.store_endpoint)).run()
