"""The Worker actor: runs the Manager's tasks as containers and reports what happens to them.

For each task it keeps a slot with the desired state (running or stopped, for one attempt) and
converges the containers toward it, one operation per task at a time, off the event loop.
Commands are idempotent: a repeated `worker.run` for the same attempt changes nothing. Docker's
event stream (not a poll) tells it when a container dies or is removed behind its back.
Stopping the worker leaves its containers running: a restarted worker adopts them by label.
"""
from __future__ import annotations

import logging
import os
import socket as pysocket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from cube.actors.metrics import ANY_ADDRESS, Capacity, MetricsSampler
from cube.chaos import hook
from cube.messages import node as node_msg
from cube.messages import worker as msg
from cube.model.runspec import RunSpec, RunSpecError
from cube.model.task import MAX_OUTPUT, Task
from cube.runtime import logstore
from cube.model import ports as port_spec
from cube.runtime.base import (LABEL_WORKER, ContainerInfo, ContainerSpec, PortConflict, Runtime, RuntimeEvent,
                               RuntimeFailure)
from cube.runtime.logstore import LogStore
from cube.store import Store, StoreError
from cube.wire import sockets
from cube.wire.actor import Actor, handles
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, IN_DOUBT, INTERNAL, NOT_FOUND, NOT_LEADER, UNAVAILABLE, CubeError
from cube.security.membership import Membership
from cube.wire.link import ManagerLink, advised_seconds
from cube.wire.loop import Loop

log = logging.getLogger(__name__)

SLOTS = "slots"
META = "meta"
RETRY_ERRORS = frozenset({NOT_FOUND, UNAVAILABLE, IN_DOUBT, INTERNAL, NOT_LEADER})  # not answers: send again
MAX_TOMBSTONES = 10_000
LOG_PRUNE_INTERVAL = 60.0  # seconds between applications of the retained logs' age bound
FAILURE_LINES = 10  # lines of a failed attempt's output reported for `task inspect`
FINE_EXITS = (0, 137, 143)  # a clean exit, or the end of a stop: no reason to look for
RUNNING, STOPPED = "running", "stopped"


@dataclass
class WorkerConfig:
    manager: str = "127.0.0.1:5556"
    name: str = field(default_factory=pysocket.gethostname)
    address: str = "127.0.0.1"  # where this node's published ports are reachable
    data_dir: str = ""
    heartbeat: float = 1.0  # overridden by the manager's hello reply
    metrics_interval: float = 1.0
    stop_timeout: float = 5.0
    liveness: int = 3  # missed heartbeat replies before the manager is presumed gone
    resync_interval: float = 10.0  # how often Docker is listed to catch what its event stream missed
    log_retain: int = logstore.PER_ATTEMPT  # bytes of each attempt's output kept after its container; 0: none
    log_retain_total: int = logstore.TOTAL  # bytes of retained output in all (the oldest go first)
    log_retain_files: int = logstore.FILES  # files of retained output at most (the oldest go first)
    join: str = ""  # join token (docs/security.md); needed once, until the manager knows our key
    insecure: bool = False  # no CURVE: loopback tests only

    @property
    def manager_endpoint(self) -> str:
        """tcp://HOST:PORT, or several comma-separated (managers of one cluster: docs/ha.md)."""
        return ",".join(m if "://" in m else f"tcp://{m}" for m in (p.strip() for p in self.manager.split(",")) if m)


@dataclass
class Slot:
    """One task as this worker knows it: what is wanted, and what was last seen."""

    spec: RunSpec
    attempt: int
    desired: str
    container_id: str = ""
    host_ports: dict[str, int] = field(default_factory=dict)
    started: bool = False  # this attempt's container was started here (never start it twice)
    oom: bool = False  # Docker said the container ran out of memory
    busy: bool = False  # a converge is running
    dirty: bool = False  # another converge is needed once this one ends

    @property
    def task_id(self) -> str:
        return self.spec.task_id


class Worker(Actor):
    def __init__(self, config: WorkerConfig, runtime: Runtime, store: Store, capacity: Capacity,
                 loop: Loop | None = None):
        super().__init__(config.name, loop)  # a shared loop lets a benchmark host many workers
        self.config = config
        self.runtime = runtime
        self.store = store
        self.capacity = capacity
        self.slots: dict[str, Slot] = {k: _load_slot(k, v) for k, v in store.list(SLOTS)}
        # Output of removed containers (docs/architecture.md, "Logs"); none without a data dir.
        self.logstore = LogStore(os.path.join(config.data_dir, "logs"), config.log_retain, config.log_retain_total,
                                 max_files=config.log_retain_files) \
            if config.data_dir else LogStore("", 0)
        self.sampler = MetricsSampler(config.name, config.address, capacity, config.data_dir,
                                      bind_ip=getattr(runtime, "bind_address", ANY_ADDRESS))
        self.metrics_sock: zmq.Socket | None = None
        self.metrics_endpoint = ""
        self.stopped: dict[str, int] = {}  # task id -> last attempt stopped here (tombstones)
        # The newest leader's term seen (docs/ha.md): older ones are not obeyed, even after a restart.
        self.term = int(self.store.get(META, "term") or 0)
        # A logical clock stamped on every hello and status (docs/protocol.md, "Ordering worker
        # reports"): (boot, n), so the manager can tell a stale snapshot from a newer fact, also
        # across a restart of this worker (a later boot orders after every earlier report).
        self._boot = self._next_boot()
        self._ticks = 0
        self._stop_events = threading.Event()
        self._resyncing = False
        # Raises MembershipError (a clear line for the operator) when it has never joined.
        self.membership = None if config.insecure else Membership(config.data_dir, config.join)
        self.fatal = ""  # why this worker gave up (a refused join): its process exits non-zero
        self.link = ManagerLink(self, config.manager_endpoint, config.name, msg.TO_WORKER,
                                make_hello=self._hello_body, on_registered=self._registered,
                                heartbeat=config.heartbeat, liveness=config.liveness,
                                membership=self.membership, address=config.address, on_fatal=self._give_up,
                                on_pace=self._paced)
        self.metrics_interval = config.metrics_interval  # slower if the manager asks (_paced)
        self._metrics_timer: Any = None

    # ---- link to the manager (cube/wire/link.py) -------------------------------------------
    @property
    def registered(self) -> bool:
        return self.link.registered

    @property
    def manager_sock(self) -> zmq.Socket:
        return self.link.sock

    def on_start(self) -> None:
        threading.Thread(target=self._watch_runtime, name="runtime-events", daemon=True).start()
        self._metrics_timer = self.loop.call_every(self.metrics_interval, self._publish_metrics)
        self.loop.call_every(self.config.resync_interval, self._resync)
        self.loop.call_every(LOG_PRUNE_INTERVAL, lambda: self.loop.run_blocking(self.logstore.prune))
        for task_id, slot in list(self.slots.items()):
            if slot.desired == STOPPED:  # a stop cut short by our own restart: finish it
                self._converge(task_id)
        self.link.start()

    def on_stop(self) -> None:
        self._stop_events.set()

    def _next_boot(self) -> int:
        """Greater than every earlier boot of this worker: the last one + 1 (kept in the local
        store, so a clock stepped back cannot reorder), or the time if that is greater (a wiped
        data directory)."""
        boot = max(int(self.store.get(META, "boot") or 0) + 1, time.time_ns())
        self.store.put(META, "boot", boot)
        return boot

    def tick(self) -> list[int]:
        """The next value of this worker's report clock."""
        self._ticks += 1
        return [self._boot, self._ticks]

    def _hello_body(self, send: Callable[[dict[str, Any] | None], None]) -> None:
        """What this worker has, for a hello: its containers (listed off the loop) and its slots."""
        # Stamped before the listing starts: every report stamped earlier is reflected in it;
        # a report stamped later may not be, so the manager trusts those over this snapshot.
        clock = self.tick()
        started = {(s.task_id, s.attempt): s.container_id for s in self.slots.values()
                   if s.desired == RUNNING and s.started}

        def listed(containers: list[ContainerInfo] | None, error: BaseException | None) -> None:
            if error is not None:  # an empty list would tell the manager every container vanished
                log.error("worker %s: cannot list containers: %s", self.name, error)
                send(None)
                return
            report = [_report(c) for c in containers or []]
            seen = {(c.task_id, c.attempt) for c in containers or []}
            # Slots whose container was started before the snapshot and is gone: reported, so the
            # manager ends the task or, for an attempt it no longer wants, releases the slot.
            report += [{"task_id": task_id, "attempt": attempt, "container_id": cid, "state": "removed"}
                       for (task_id, attempt), cid in started.items() if (task_id, attempt) not in seen]
            send({"name": self.name, "address": self.config.address, "cpus": self.capacity.cpus,
                  "memory": self.capacity.memory, "disk": self.capacity.disk, "tasks": report,
                  "pid": os.getpid(), "clock": clock})
        self.loop.run_blocking(self.runtime.list, self.config.name, done=listed, urgent=True)

    def _give_up(self, why: str) -> None:
        log.error("worker %s: %s", self.name, why)
        self.fatal = why
        self.stop()

    def _registered(self, reply: dict[str, Any]) -> None:
        self._obeys(reply.get("term"))
        retention = reply.get("retention")
        if isinstance(retention, (int, float)) and retention > 0:  # the manager forgets ended tasks then
            self.logstore.max_age = float(retention)
        self._use_metrics_endpoint(reply.get("metrics", ""))
        self._publish_metrics()
        # Again once a new metrics connection is surely up (a PUB drops what it sends while it
        # connects): a new leader's Scheduler can place on us a second earlier (docs/ha.md).
        self.loop.call_later(0.2, self._publish_metrics)

    def _paced(self, reply: dict[str, Any]) -> None:
        """Samples come as often as configured, or more seldom if the manager asks (a large
        cluster: docs/architecture.md, "Pace")."""
        interval = max(self.config.metrics_interval, advised_seconds(reply, "metrics_interval"))
        if interval != self.metrics_interval:
            # The next sample comes within the interval the last one announced (the Scheduler
            # judges staleness by it), then at the new pace.
            first = min(interval, self.metrics_interval)
            self.metrics_interval = interval
            if self._metrics_timer is not None:
                self._metrics_timer.cancel()
                self._metrics_timer = self.loop.call_every(interval, self._publish_metrics, first=first)

    def _use_metrics_endpoint(self, endpoint: str) -> None:
        if not endpoint or endpoint == self.metrics_endpoint:
            return
        if self.metrics_sock is not None:
            self.metrics_sock.close(linger=0)
        # Metrics go to the Scheduler, which holds the manager's key: the same pin, our own key.
        curve = self.membership.curve() if self.membership is not None else None
        self.metrics_sock = sockets.publisher(self.loop.ctx, connect=endpoint, curve=curve)
        self.metrics_endpoint = endpoint

    # ---- commands -----------------------------------------------------------------------------
    def _obeys(self, term: Any) -> bool:
        """Fencing (docs/ha.md): a command of a manager leader older than the newest one we have
        heard from (a deposed leader that was paused, say) is not obeyed."""
        if isinstance(term, bool) or not isinstance(term, int) or term <= 0:
            if self.term:  # no term, from a worker that follows leaders: not a leader's command
                log.warning("worker %s: ignored a command without a leader's term (newest term %d)", self.name, self.term)
                return False
            return True  # a single manager: no terms
        if term < self.term:
            log.warning("worker %s: ignored a command of an old leader (term %d < %d)", self.name, term, self.term)
            return False
        if term > self.term:
            self.term = term
            self.store.put(META, "term", term)  # a restarted worker still knows whom not to obey
        return True

    @handles(msg.RUN)
    def on_run(self, m: Envelope) -> dict[str, Any]:
        if not self._obeys(m.body.get("term")):
            return {"ignored": "older term"}
        attempt = m.body["attempt"]
        try:
            spec = RunSpec.from_dict(m.body["spec"])
        except RunSpecError as e:
            raise CubeError(BAD_REQUEST, f"worker.run: {e}") from None
        task_id = spec.task_id
        _storable(task_id)
        slot = self.slots.get(task_id)
        if slot and slot.attempt > attempt:
            return {"ignored": "older attempt"}
        if self.stopped.get(task_id, -1) >= attempt:  # a late or repeated run of a stopped attempt
            return {"ignored": "attempt already stopped"}
        if slot and slot.desired == STOPPED and slot.attempt >= attempt:
            # A late copy of the run of an attempt being stopped: a stop is final for its
            # attempt, or the slot would run (and reserve capacity) for a task that has ended.
            log.info("worker %s: ignored a run of attempt %d of %s: it is being stopped", self.name, attempt, task_id)
            return {"ignored": "attempt is being stopped"}
        if slot is None:
            slot = self.slots[task_id] = Slot(spec, attempt, RUNNING)
        elif slot.attempt != attempt or slot.desired != RUNNING:
            if slot.attempt != attempt:  # a new attempt replaces the old one in the same slot
                slot.started, slot.container_id, slot.host_ports, slot.oom = False, "", {}, False
            slot.spec, slot.attempt, slot.desired = spec, attempt, RUNNING
        # A repeat of the same command converges again: idempotent, and it re-reports the
        # current state in case the last report was lost.
        self._save(task_id)
        self._converge(task_id)
        return {}

    @handles(msg.STOP)
    def on_stop_command(self, m: Envelope) -> dict[str, Any]:
        if not self._obeys(m.body.get("term")):
            return {"ignored": "older term"}
        task_id, attempt = m.body["task_id"], m.body.get("attempt")
        _storable(task_id)
        slot = self.slots.get(task_id)
        if slot is None:  # a container we hold but no longer remember (or never knew)
            slot = self.slots[task_id] = Slot(RunSpec(task_id, "", ""), attempt or 0, STOPPED)
        elif attempt is None or attempt >= slot.attempt:
            if attempt is not None:
                slot.attempt = attempt
            slot.desired = STOPPED
        # else: an older attempt; converging removes its container without touching the current
        # one. Either way converge (again): a repeated stop finishes a stop that was cut short.
        self._save(task_id)
        self._converge(task_id)
        return {}

    @handles(msg.LOGS)
    def on_logs(self, m: Envelope) -> None:
        """One page of an attempt's output (docs/protocol.md, "Logs"): from its container while
        there is one, else from the copy kept when it was removed."""
        task_id = m.body["task_id"]
        slot = self.slots.get(task_id)
        attempt = m.body.get("attempt") or (slot.attempt if slot else 0)
        try:
            cursor = logstore.parse_cursor(m.body.get("cursor") or "")
        except ValueError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        tail = m.body.get("tail")
        current = slot is not None and slot.attempt == attempt
        hint = slot.container_id if current else ""
        starting = current and slot.desired == RUNNING and not slot.started  # no output yet, but soon

        def done(reply: dict[str, Any] | None, error: BaseException | None) -> None:
            if error is not None:
                m.respond(error=error if isinstance(error, CubeError) else CubeError(INTERNAL, str(error)))
            else:
                m.respond(reply)
        self.loop.run_blocking(self._read_logs, task_id, attempt, hint, tail, cursor, starting, done=done)

    def _read_logs(self, task_id: str, attempt: int, container_id: str, tail: int | None,
                   cursor: tuple[int, int] | None, starting: bool) -> dict[str, Any]:
        """Runs in the pool. The container first: the retained copy is written just before it
        is removed, so when Docker no longer has it the copy is complete."""
        if not container_id:
            container_id = next((c.container_id for c in self.runtime.list(self.name)
                                 if c.task_id == task_id and c.attempt == attempt), "")
        failure: RuntimeFailure | None = None
        if container_id:
            try:
                return self._logs_reply(lambda t, s: self.runtime.output(container_id, t, s), tail, cursor, "container")
            except RuntimeFailure as e:  # removed meanwhile: its copy is kept by now
                failure = e
        records = self.logstore.records(task_id, attempt)
        if records is not None:
            return self._logs_reply(lambda t, s: logstore.select(records, t, s), tail, cursor, "retained")
        if starting:
            return {"logs": "", "cursor": logstore.format_cursor(*(cursor or (0, 0))), "more": False, "source": "none"}
        why = f" ({failure})" if failure else ""
        kept = "retention is off (--log-retain 0)" if not self.logstore.enabled else \
            "it printed nothing, or it was pruned by the age, size or count bound, or never captured"
        raise CubeError(NOT_FOUND, f"no output of attempt {attempt} of task {task_id} on worker {self.name}: "
                                   f"no container, and no retained copy ({kept}){why}")

    @staticmethod
    def _logs_reply(source: Callable[[int | None, int], Any], tail: int | None,
                    cursor: tuple[int, int] | None, where: str) -> dict[str, Any]:
        text, after, more = logstore.read(source, tail, cursor)
        return {"logs": text.decode("utf-8", errors="replace"), "cursor": after, "more": more, "source": where}

    # ---- converging containers to the desired state -----------------------------------------
    def _converge(self, task_id: str) -> None:
        slot = self.slots.get(task_id)
        if slot is None:
            return
        if slot.busy:
            slot.dirty = True
            return
        slot.busy, slot.dirty = True, False
        want = (slot.desired, slot.attempt, slot.spec, slot.started)
        self.loop.run_blocking(self._converge_blocking, task_id, *want,
                               done=lambda result, error: self._converged(task_id, want[1], result, error))

    def _converge_blocking(self, task_id: str, desired: str, attempt: int,
                           spec: RunSpec, started: bool) -> dict[str, Any]:
        """Runs in the pool: make Docker match (desired, attempt) for one task."""
        mine = [c for c in self.runtime.list(self.name) if c.task_id == task_id]
        current = None
        for c in mine:
            if desired == RUNNING and c.attempt == attempt and current is None:
                current = c
            else:
                self.runtime.stop(c.container_id, self.config.stop_timeout, before_remove=self._keeper(c))
        if desired == STOPPED:
            return {"state": "stopped"}
        if current is not None:
            return self._explained(_report(current))
        if started:  # it ran and is gone: the manager decides whether to restart, not us
            return {"state": "removed"}
        try:
            info = self.runtime.run(self._spec(spec, attempt))
        except PortConflict as e:  # the manager places it elsewhere (docs/architecture.md, "Ports")
            return {"state": "failed", "error": str(e), "port_conflict": True}
        except RuntimeFailure as e:
            return {"state": "failed", "error": str(e)}
        return self._explained(_report(info))

    def _explained(self, report: dict[str, Any]) -> dict[str, Any]:
        """Runs in the pool: a container that failed already (a bad command exits at once) gets
        its last lines in the report, as the die event's report does."""
        if report["state"] == "exited" and report.get("exit_code") not in FINE_EXITS:
            try:
                report.update(_failure(self.runtime.logs(report["container_id"], FAILURE_LINES)))
            except RuntimeFailure:
                pass
        return report

    def _converged(self, task_id: str, attempt: int, result: dict[str, Any] | None,
                   error: BaseException | None) -> None:
        slot = self.slots.get(task_id)
        if slot is None:
            return
        slot.busy = False
        if error is not None:
            log.error("worker %s: converging %s failed: %s", self.name, task_id[:8], error)
            result = {"state": "failed", "error": f"{type(error).__name__}: {error}"}
        if slot.attempt == attempt and result.get("container_id"):
            slot.started = True  # recorded before any re-converge, so it never starts it twice
            slot.container_id = result["container_id"]
            slot.host_ports = result.get("host_ports") or {}
            self._save(task_id)
        if slot.dirty or slot.attempt != attempt:
            self._converge(task_id)
            if slot.attempt != attempt:
                return
        if slot.desired == STOPPED and result["state"] == "stopped":
            slot.container_id = ""
            self._forget(task_id)
        self._status(task_id, attempt, result)

    def _keeper(self, c: ContainerInfo) -> Callable[[], None] | None:
        """What runs between stopping a container and removing it: its output's tail is kept."""
        if not self.logstore.enabled:
            return None

        def keep() -> None:
            try:
                records = self.runtime.output(c.container_id, self.logstore.tail_lines)
                size = self.logstore.save(c.task_id, c.attempt, records)
                log.debug("worker %s: kept %d bytes of output of %s attempt %d", self.name, size,
                          c.task_id[:8], c.attempt)
            except Exception as e:  # the container goes anyway: a lost copy must not keep it
                log.warning("worker %s: could not keep the output of %s attempt %d: %s", self.name,
                            c.task_id[:8], c.attempt, e)
        return keep

    def _spec(self, spec: RunSpec, attempt: int) -> ContainerSpec:
        return ContainerSpec(task_id=spec.task_id, attempt=attempt, name=spec.name, image=spec.image,
                             command=spec.command, env=spec.env, cpu=spec.cpu, memory=spec.memory,
                             ports=spec.ports, labels={LABEL_WORKER: self.name}, pids_limit=spec.pids_limit)

    # ---- Docker's event stream ------------------------------------------------------------------
    def _watch_runtime(self) -> None:
        """Thread: forward container events to the loop until the worker stops."""
        while not self._stop_events.is_set():
            try:
                for ev in self.runtime.events(self._stop_events):
                    self.loop.call_soon_threadsafe(lambda ev=ev: self._on_runtime_event(ev))
            except Exception as e:
                log.error("worker %s: container event stream failed: %s; reopening", self.name, e)
                time.sleep(1.0)

    def _on_runtime_event(self, ev: RuntimeEvent) -> None:
        slot = self.slots.get(ev.task_id)
        if slot is None or slot.desired != RUNNING or slot.attempt != ev.attempt:
            return  # our own doing (stop, replace) or not ours to report
        if ev.kind == "start":
            # The start of our own run(), whose converge reports it: looking again would list
            # and report the task a second time for every container started.
            return
        if slot.busy:  # mid-start: look again once the start is done, so nothing is missed
            slot.dirty = True
            return
        if ev.kind == "oom":  # the 'die' with the real exit code follows; remember why
            slot.oom = True
            return
        if ev.kind == "die":
            code = ev.exit_code if ev.exit_code is not None else -1
            report = {"state": "exited", "container_id": ev.container_id, "exit_code": code,
                      "error": "out of memory" if slot.oom else ""}
            if code in FINE_EXITS or report["error"]:
                self._status(ev.task_id, ev.attempt, report)
                return
            # a failure: the last line of output usually says why (e.g. "exec foo failed")

            def with_reason(logs: str | None, error: BaseException | None) -> None:
                report.update(_failure(logs or ""))
                self._status(ev.task_id, ev.attempt, report)
            self.loop.run_blocking(self.runtime.logs, ev.container_id, FAILURE_LINES, done=with_reason)
        elif ev.kind == "destroy":
            self._status(ev.task_id, ev.attempt, {"state": "removed", "container_id": ev.container_id})

    def _resync(self) -> None:
        """A safety net under the event stream: list the containers now and then, and look again
        at every task that should run but whose container does not (an event that was missed)."""
        if self._resyncing:
            return
        self._resyncing = True
        self.loop.run_blocking(self.runtime.list, self.config.name, done=self._resynced, urgent=True)

    def _resynced(self, containers: list[ContainerInfo] | None, error: BaseException | None) -> None:
        self._resyncing = False
        if error is not None:
            log.warning("worker %s: cannot list containers: %s", self.name, error)
            return
        running = {(c.task_id, c.attempt) for c in containers or [] if c.running}
        for task_id, slot in list(self.slots.items()):
            if slot.desired == RUNNING and slot.started and not slot.busy and (task_id, slot.attempt) not in running:
                log.info("worker %s: %s attempt %d is not running; looking again", self.name, task_id[:8], slot.attempt)
                self._converge(task_id)

    # ---- reporting to the manager ----------------------------------------------------------------
    def _status(self, task_id: str, attempt: int, result: dict[str, Any]) -> None:
        """Tell the manager, re-sent until acknowledged; a newer status for the task replaces it."""
        body = {"task_id": task_id, "attempt": attempt, "state": result["state"], "time": time.time(),
                "clock": self.tick()}
        for key in ("container_id", "host_ports", "exit_code", "error", "output", "port_conflict"):
            if result.get(key) is not None:
                body[key] = result[key]
        # Re-sent until the manager takes it, including when it answers that its own store is
        # down or that it does not know us yet (our hello is on its way): those are not answers.
        # Re-sent after 1 s, then 2 s, then every 4 s (jittered), for about 75 s: a manager slow
        # under load is not helped by a thousand workers asking again every second.
        self.request(self.manager_sock, Envelope(msg.STATUS, body), retry_every=1.0, tries=20,
                     backoff=2.0, max_every=4.0,
                     key=("status", task_id), retry_errors=RETRY_ERRORS)

    def reserved(self) -> tuple[dict[str, Any], list[str]]:
        """What this worker's wanted tasks reserve, and their ids (published with its metrics)."""
        live = [s for s in self.slots.values() if s.desired == RUNNING]
        reserved = {"cpu": float(sum(s.spec.cpu for s in live)), "memory": int(sum(s.spec.memory for s in live)),
                    "disk": int(sum(s.spec.disk for s in live)),
                    "ports": sorted({p for s in live for p in port_spec.fixed_host_ports(s.spec.ports)})}
        return reserved, sorted(s.task_id for s in live)

    def _publish_metrics(self) -> None:
        if self.metrics_sock is None:
            return
        reserved, task_ids = self.reserved()
        sample = self.sampler.sample(reserved, task_ids)
        sample["interval"] = self.metrics_interval
        self.send(self.metrics_sock, Envelope(node_msg.METRICS, sample))

    # ---- local record ----------------------------------------------------------------------------
    def _save(self, task_id: str) -> None:
        slot = self.slots[task_id]
        self.store.put(SLOTS, task_id, {"spec": slot.spec.to_dict(), "attempt": slot.attempt, "desired": slot.desired,
                                        "container_id": slot.container_id, "started": slot.started})

    def _forget(self, task_id: str) -> None:
        slot = self.slots.pop(task_id, None)
        if slot is not None:
            self.stopped[task_id] = max(slot.attempt, self.stopped.get(task_id, -1))
            while len(self.stopped) > MAX_TOMBSTONES:
                del self.stopped[next(iter(self.stopped))]
        self.store.delete(SLOTS, task_id)


def _load_slot(task_id: str, v: dict[str, Any]) -> Slot:
    """A slot from the local store; written before run specs existed, it holds the whole task."""
    spec = RunSpec.from_dict(v["spec"]) if "spec" in v else RunSpec.of(Task.from_dict(v["task"]))
    return Slot(spec, v["attempt"], v["desired"], v.get("container_id", ""), started=v.get("started", False))


def _storable(task_id: str) -> None:
    """Refuse a task id the local store cannot key (e.g. with NUL) before any slot is touched."""
    try:
        Store.check(SLOTS, task_id)
    except StoreError as e:
        raise CubeError(BAD_REQUEST, f"task id {task_id[:80]!r}: {e}") from None


def _failure(logs: str) -> dict[str, str]:
    """A failed container's last lines: the last one is the error (it usually says why, e.g.
    "exec foo failed"), the last few its output, shown by `task inspect`."""
    lines = [line for line in logs.splitlines() if line.strip()]
    return {"error": lines[-1][-300:] if lines else "", "output": _last_lines(lines, MAX_OUTPUT)}


def _last_lines(lines: list[str], limit: int) -> str:
    """The last lines that fit in `limit` characters (the end of one longer line if none fits)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > limit:
            if not kept:
                kept.append(line[-limit:])
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def _report(c: ContainerInfo) -> dict[str, Any]:
    state = "running" if c.running or c.state == "created" else "exited"
    return {"task_id": c.task_id, "attempt": c.attempt, "container_id": c.container_id, "state": state,
            "exit_code": c.exit_code if state == "exited" else None, "host_ports": c.host_ports}


def worker(manager: str = "", name: str = "", address: str = "", data_dir: str = "",
           cpus: float = 0.0, memory: str = "", disk: str = "", metrics_interval: float = 0.0,
           stop_timeout: float = 0.0, join: str = "", join_file: str = "", insecure: bool = False,
           prometheus_port: int = -1, prometheus_host: str = "",
           log_retain: Any = None, log_retain_total: Any = None, log_retain_files: int = 0,
           log_level: str = "") -> None:
    """Run a Cube worker: register with the manager and run its tasks as Docker containers.

    --manager HOST:PORT is the manager's worker endpoint (default 127.0.0.1:5556), or several
    comma-separated (managers of one cluster: the worker follows the leader, docs/ha.md);
    --address is the host on which this node's published ports are reachable;
    --cpus/--memory/--disk override the capacity offered (default: what the machine has);
    CUBE_WORKER_JOIN=TOKEN (or --join-file FILE) joins the cluster the first time (`cube join-token`
    on the manager prints the command; afterwards the worker remembers the manager's key). --join
    TOKEN works too, but other local users can read a process's arguments while it runs.
    --insecure (loopback only) turns CURVE off.
    --prometheus-port serves Prometheus metrics at /metrics (default 5560; 0: off) on
    --prometheus-host (default 127.0.0.1).
    --log-retain SIZE keeps that much of each task attempt's output after its container is
    removed (default 1m; 0: none), --log-retain-total SIZE of all of it on disk (default 256m),
    --log-retain-files N files of it at most (default 10000), in the data directory, for
    `cube task logs` (docs/architecture.md, "Logs").
    Every flag also reads CUBE_WORKER_<FLAG>, e.g. CUBE_WORKER_MANAGER, CUBE_WORKER_NAME.
    """
    from cube import config as cfg
    from cube import hardening, logs
    from cube.actors.metrics import machine_capacity
    from cube.model.units import parse_size
    from cube.runtime.docker import DockerRuntime
    from cube.store.leveldb import LevelDBStore

    def opt(value, key, default):
        return value if value not in ("", 0, 0.0, None) else cfg.env("worker_" + key, default)

    conf = WorkerConfig(manager=str(opt(manager, "manager", "127.0.0.1:5556")),
                        name=str(opt(name, "name", pysocket.gethostname())),
                        address=str(opt(address, "address", "127.0.0.1")),
                        metrics_interval=float(opt(metrics_interval, "metrics_interval", 1.0)),
                        stop_timeout=float(opt(stop_timeout, "stop_timeout", 5.0)),
                        join=str(opt(join, "join", "")), insecure=bool(opt(insecure, "insecure", False)))
    try:  # 0 is a value here (no retained logs), not "unset"
        conf.log_retain = parse_size(cfg.env("worker_log_retain", "1m") if log_retain in (None, "") else log_retain)
        conf.log_retain_total = parse_size(cfg.env("worker_log_retain_total", "256m")
                                           if log_retain_total in (None, "") else log_retain_total)
    except ValueError as e:
        print(f"cube-worker: --log-retain/--log-retain-total: {e}", file=sys.stderr)
        sys.exit(2)
    files = opt(log_retain_files, "log_retain_files", logstore.FILES)
    if isinstance(files, bool) or not str(files).isdecimal() or int(files) < 1:
        print(f"cube-worker: --log-retain-files: {files!r} is not a number of files (1 or more)", file=sys.stderr)
        sys.exit(2)
    conf.log_retain_files = int(files)
    join_file = str(opt(join_file, "join_file", ""))
    if join_file and not conf.join:
        try:
            with open(join_file) as f:
                conf.join = f.read().strip()
        except OSError as e:
            print(f"cube-worker: cannot read the join token file {join_file}: {e.strerror}", file=sys.stderr)
            sys.exit(2)
    logs.setup(f"worker:{conf.name}", str(opt(log_level, "log_level", "INFO")))
    if join:
        log.warning("worker %s: --join puts the token in the process list, readable by every local user; "
                    "prefer CUBE_WORKER_JOIN or --join-file", conf.name)
    hardening.secure_umask()  # keys, slots and logs: readable by this user only
    hardening.raise_fd_limit()
    conf.data_dir = os.path.abspath(str(opt(data_dir, "data_dir", cfg.default_data_dir(f"worker-{conf.name}"))))
    if conf.insecure and not all(cfg.is_loopback(e.split("://")[-1].rsplit(":", 1)[0])
                                 for e in conf.manager_endpoint.split(",")):
        print("cube-worker: --insecure is only allowed with a manager on a loopback address", file=sys.stderr)
        sys.exit(2)
    prom_port = prometheus_port if prometheus_port != -1 else \
        cfg.env("worker_prometheus_port", cfg.WORKER_PROMETHEUS_PORT)  # 0 turns it off
    prom_host = str(opt(prometheus_host, "prometheus_host", cfg.PROMETHEUS_HOST))
    if not isinstance(prom_port, int) or not 0 <= prom_port < 65536:
        print(f"cube-worker: --prometheus-port {prom_port}: a port (1-65535), or 0 for none", file=sys.stderr)
        sys.exit(2)
    try:
        hardening.ensure_private_dir(conf.data_dir)
        capacity = machine_capacity(conf.data_dir, float(opt(cpus, "cpus", 0.0)) or None,
                                    parse_size(opt(memory, "memory", "0")) or None,
                                    parse_size(opt(disk, "disk", "0")) or None)
        hardening.tighten(conf.data_dir)  # data written before the umask (an older Cube)
        # Published ports are bound to the address this worker advertises, not to every interface.
        runtime = DockerRuntime(bind_address=conf.address)
        store = LevelDBStore(os.path.join(conf.data_dir, "db"))
        w = Worker(conf, runtime, store, capacity)
    except Exception as e:  # a clear line for the operator, not a traceback
        print(f"cube-worker: {e}", file=sys.stderr)
        sys.exit(1)
    hook.attach(w)
    w.stop_on_signals()
    log.info("worker %s: %.1f cpus, %d MiB, %d GiB disk offered; manager %s; data %s", conf.name,
             capacity.cpus, capacity.memory >> 20, capacity.disk >> 30, conf.manager, conf.data_dir)
    from cube.observability import worker_metrics
    exported = worker_metrics.export(w, prom_host, prom_port)  # docs/architecture.md, "Metrics"
    try:
        w.run()
    finally:
        if exported is not None:
            exported.close()
        store.close()
    if w.fatal:
        print(f"cube-worker: {w.fatal}", file=sys.stderr)
    log.info("worker %s stopped; its containers keep running and will be adopted", conf.name)
    logging.shutdown()
    os._exit(2 if w.fatal else 0)  # do not wait for a Docker call (e.g. an image pull) still running in the pool


def main() -> None:
    import fire
    fire.Fire(worker, name="cube-worker")
