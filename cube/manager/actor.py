"""The Manager actor: a thin shell that wires its parts to sockets, messages and timers.

It never blocks (docs/architecture.md, "The Manager"): the Store and the Scheduler are reached by
requests on its own loop, and every reply continues the work. Its parts:

- TaskBook (taskbook.py): the tasks, persisted before anything is acknowledged, one change of a task
  at a time;
- WorkerRegistry (registry.py): who is connected and who went silent;
- Placement (placement.py): batches of decisions from the Scheduler, then assignment;
- Commands (delivery.py): run/stop commands re-sent until acknowledged;
- HealthMonitor (health.py): HTTP probes of Running tasks;
- TaskLife (lifecycle.py): what reports, stops and lost workers do to tasks.

At start-up it loads its state from the Store; meanwhile `manager.ping` answers "loading" and
every other request `unavailable`.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any

import zmq

from cube import __version__
from cube.config import ManagerConfig
from cube.control import rollout as planner
from cube.ha.leadership import Leadership
from cube.ha.security import SecuritySync
from cube.manager import listing, tasklogs
from cube.manager.delivery import Commands
from cube.manager.events import EventLog
from cube.manager.health import HealthMonitor
from cube.manager.lifecycle import TaskLife, report_clock
from cube.manager.pace import Pace
from cube.manager.placement import Placement
from cube.manager.reads import READS, FollowerReads
from cube.manager.registry import ACTIVE as ACTIVE_NODE
from cube.manager.registry import DRAIN, WorkerRegistry
from cube.manager.registry import LOST as LOST_NODE
from cube.manager.services import DELETE, SERVICES, ServiceController, rolled_back
from cube.manager.storage import AsyncStore
from cube.manager.tally import TaskTally
from cube.manager.taskbook import TaskBook, TaskEvent
from cube.messages import events as events_msg
from cube.messages import node as node_msg
from cube.messages import sched as sched_msg
from cube.messages import service as service_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.model.service import (
    Service,
    check_replicas,
    check_template,
    service_from_spec,
    update_policy,
)
from cube.model.state import State
from cube.model.task import (
    DESIRED_RUNNING,
    DESIRED_STOPPED,
    Task,
    TaskSpecError,
    same_spec,
    task_from_spec,
)
from cube.security import curve as zcurve
from cube.security.authority import Authority, JoinRefused, addresses
from cube.security.keyring import ADMIN, ROLES
from cube.security.zap import Gate, HandshakeCounter
from cube.wire import codec, sockets
from cube.wire.actor import Actor, Ignored, handles
from cube.wire.envelope import REPLY_ERROR, Envelope
from cube.wire.errors import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    NOT_JOINED,
    UNAVAILABLE,
    CubeError,
)

log = logging.getLogger(__name__)

NODES = "nodes"
MAX_TASK_BYTES = 64 << 10
WORKER_SNDHWM = 2000  # commands and replies queued per worker connection
API_SNDHWM = 100
WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WORKER_ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")  # a host name or an IP address  # replies queued per client: one that never reads cannot pin the manager's memory
ADMIN_ONLY = task_msg.ADMIN_ONLY | node_msg.ADMIN_ONLY | service_msg.ADMIN_ONLY


class Manager(Actor):
    def __init__(self, config: ManagerConfig, name: str = "manager"):
        super().__init__(name)
        self.config = config
        self.started = time.time()
        self.loading = True
        ctx = self.loop.ctx
        # Security first: the ZAP gate must answer before any CURVE socket binds, or libzmq lets
        # every key in (docs/security.md). Insecure mode exists for loopback tests only.
        config.check_security()
        self.authority = None if config.insecure else Authority(config.data_dir, addresses(config))
        self.gate = Gate(ctx, self.authority.policies()) if self.authority else None
        curve = self.authority.server if self.authority else (lambda domain: None)
        self.api = sockets.router(ctx, config.bind(config.api_port), curve=curve(zcurve.API), sndhwm=API_SNDHWM)
        self.workers_sock = sockets.router(ctx, config.bind(config.worker_port), curve=curve(zcurve.WORKERS),
                                           sndhwm=WORKER_SNDHWM)
        if self.authority is None:  # workers name their connection: a restarted one takes its name back
            self.workers_sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.events = sockets.publisher(ctx, bind=config.bind(config.events_port), curve=curve(zcurve.EVENTS))
        if self.authority:
            for label, sock in (("api", self.api), ("workers", self.workers_sock), ("events", self.events)):
                HandshakeCounter(self.loop, sock, label, self.stats)
        self.store_sock = sockets.dealer(ctx, config.store_endpoint)
        self.sched_sock = sockets.dealer(ctx, config.scheduler_endpoint)
        # Only the leader acts (docs/ha.md): it loads the cluster once elected (`_lead`).
        self.leadership = Leadership(self.loop, config, self._lead)
        self.security: SecuritySync | None = None  # with several managers: one keyring for all
        self.store = AsyncStore(self, self.store_sock)
        self.reads = FollowerReads(self.store, self.leadership.view)  # what a follower answers (docs/ha.md)
        # Insecure workers name their connection; secure ones are routed only where their key spoke.
        self.registry = WorkerRegistry(config.grace, named_routes=config.insecure)
        self.pace = Pace(config.heartbeat_interval, config.grace, config.max_reports)  # pace.py
        self._paced_for = -1  # the number of workers the pace was set for
        # Every change of a task, service or node is a numbered, stored event (events.py).
        self.eventlog = EventLog(self.store, lambda topic, body: self.send(self.events, Envelope(topic, body),
                                                                          topic=events_msg.topic_of(topic, body)),
                                 kept=config.events_kept, max_age=config.retention)
        self.book = TaskBook(self.store, self._publish, on_adopt=lambda old, new: self.life.adopted(old, new),
                             events=self.eventlog)
        self.task_order = listing.Index()  # task.ls pages walk it: creation order, then id
        self.book.watchers.append(self._index_task)
        self.tally = TaskTally()  # tasks by state, kept as they change: ping, service ls, /metrics
        self.book.watchers.append(self.tally.watch)
        self.commands = Commands(self, self.workers_sock, self.registry, config.command_retry)
        self.commands.fence = self.leadership  # commands carry its term, and stop with its lease
        self.placement = Placement(self, self.sched_sock, self.book, self.registry, self.commands)
        self.health = HealthMonitor(self.loop, self.book, self.registry,
                                    lambda t, why: self.life.ended(t.id, t.attempt, None, why))
        self.life = TaskLife(self.loop, self.book, self.registry, self.commands, self.placement, self.health)
        self.services = ServiceController(self.book, self.store, self._stop_for_service, self.health.healthy_since,
                                          self.registry.drained, self._publish_service_event, self.placement.schedule)
        self.placement.spread = self.services.spread
        self._unmoved: set[str] = set()  # lost workers whose tasks are not all handled yet
        self._removed: set[str] = set()  # workers removed by `node rm`: forgotten once their tasks moved
        self._last_check = self.loop.clock()
        self._moving: set[str] = set()
        self._naming: dict[str, str] = {}  # names of tasks being created -> their ids
        secure = self.authority is not None
        self.serve(self.api, accept=task_msg.API | node_msg.API | service_msg.API | events_msg.API,
                   authenticated=secure)
        self.serve(self.workers_sock, accept=worker_msg.FROM_WORKER, authenticated=secure)
        self.serve(self.store_sock, accept=set())
        self.serve(self.sched_sock, accept=set())

    def on_stop(self) -> None:
        self.leadership.stop()  # a leader gives its lease back: another leads at once
        if self.gate is not None:
            self.gate.stop()

    def peer_name(self, route: list[bytes]) -> str:
        name = self.registry.by_route.get(route[0]) if route else None
        return name if name is not None else super().peer_name(route)

    # ---- who may do what (docs/security.md) ---------------------------------------------------
    def admit(self, sock: zmq.Socket, env: Envelope) -> None:
        if sock is self.api or sock is self.workers_sock:  # a follower serves nothing: `not_leader`
            self.leadership.check(sock is self.workers_sock, env.type, readable=sock is self.api and env.type in READS)
        if self.authority is None:  # insecure (loopback tests): a worker is who its connection says
            if sock is self.workers_sock and env.route:
                env.principal = env.route[0].decode(errors="replace")
            else:
                env.principal = ADMIN
            return
        ring = self.authority.keyring
        if sock is self.api:
            role = ring.role_of(env.peer)
            if role is None:
                raise CubeError(FORBIDDEN, "these credentials are not (or no longer) valid")
            if role != ADMIN and env.type in ADMIN_ONLY:
                raise CubeError(FORBIDDEN, f"{role} credentials may not {env.type}")
            env.principal = role
        elif sock is self.workers_sock and env.type != worker_msg.JOIN:
            name = ring.worker_for(env.peer)
            if name is None:
                if env.peer in ring.revoked:  # it was a worker: tell it, so it stops
                    raise CubeError(NOT_JOINED, "this worker was removed from the cluster (cube node rm)")
                raise Ignored("a key that has not joined")  # a stranger learns nothing
            env.principal = name

    def may_resend(self, sock: zmq.Socket, env: Envelope) -> bool:
        """A command to a worker goes out again only while this manager leads (fencing)."""
        return sock is not self.workers_sock or self.leadership.leading()

    def handler_for(self, sock: zmq.Socket, env: Envelope, method: str) -> Any:
        """A follower answers the reads of cube/ha/reads.py from the Store; the leader from memory."""
        if sock is self.api and env.type in READS and not self.leadership.leading():
            return self.reads.handler(env.type)
        return getattr(self, method)

    # ---- start-up: load, then arm the timers -------------------------------------------------
    def on_start(self) -> None:
        if self.leadership.ha and self.authority is not None:  # the leader's joins reach the others
            self.security = SecuritySync(self.store, self.authority, self.leadership.leading)
            self.loop.call_every(0.2, self.security.tick)
        self.leadership.start()  # at once with one manager; once elected with several

    def _lead(self, term: int) -> None:
        self.store.term = term  # every write of ours is refused once another manager leads
        if self.security is not None:  # the newest keyring first: every joined worker is known
            self.security.take(then=self._load)
        else:
            self._load()

    def _load(self) -> None:
        self.book.load(self._loaded)

    def _loaded(self, count: int | None, error: CubeError | None) -> None:
        if error is not None:
            log.warning("manager: waiting for the store: %s", error)
            self.loop.call_later(0.5, self._load)
            return

        def nodes(items: Any, error: CubeError | None) -> None:
            if error is not None:
                log.warning("manager: waiting for the store (nodes): %s", error)
                self.loop.call_later(0.5, self._load)
                return
            for _, data in items:
                self.registry.remember(data)
            self.store.list_all(SERVICES, services)

        def services(items: Any, error: CubeError | None) -> None:
            if error is not None:
                log.warning("manager: waiting for the store (services): %s", error)
                self.loop.call_later(0.5, self._load)
                return
            self.services.load(items)
            self.loading = False
            log.info("manager: loaded %d tasks, %d known workers", count, len(self.registry.workers))
            self.loop.call_every(min(1.0, self.config.grace / 4), self._check_workers)
            self.loop.call_every(1.0, self.placement.schedule)
            self.loop.call_every(0.5, self.health.tick)
            self.loop.call_every(0.5, lambda: self.services.tick(force=True))
            self.loop.call_every(0.05, self.services.tick)  # soon after a change of a service's task
            self.loop.call_every(1.0, self.book.resolve_doubts)
            self.loop.call_every(min(60.0, max(1.0, self.config.retention / 10)), self._prune)
            self.loop.call_every(2.0, self.eventlog.prune)
            self.loop.call_every(events_msg.HEARTBEAT_INTERVAL, lambda: self.eventlog.heartbeat(self.started))
            self.placement.schedule()
        self.store.list_all(NODES, nodes)

    def _ready(self) -> None:
        if self.loading:
            raise CubeError(UNAVAILABLE, "the manager is loading its state; retry in a moment")

    # ---- client API -------------------------------------------------------------------------
    @handles(node_msg.PING)
    def on_ping(self, m: Envelope) -> dict[str, Any]:
        return {"name": self.name, "version": __version__, "uptime": time.time() - self.started,
                "state": "loading" if self.loading else "ready", **self.leadership.view(),
                **({"states": self.tally.states()} if m.body.get("states") else {}),
                "tasks": len(self.book), "workers": len([n for n in self.registry.ready() if self.registry.is_ready(n)]),
                "events_port": self.config.events_port}  # clients follow events there (docs/protocol.md)

    @handles(task_msg.START)
    def on_start_task(self, m: Envelope) -> None:
        self._ready()
        try:
            task = task_from_spec(m.body["task"])
        except TaskSpecError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        size = len(codec.pack(task.record()))
        if size > MAX_TASK_BYTES:  # the Store keeps every task until it is pruned: bound each one
            raise CubeError(BAD_REQUEST, f"the task is {size >> 10} KiB encoded; at most {MAX_TASK_BYTES >> 10} KiB "
                                         f"(env, command and names together)")
        known = self.book.get(task.id)
        if known is not None:  # a re-sent start: the same task, or a mistake
            m.respond(self._repeated_start(known, task))
            return
        if len(self.book) >= self.config.max_tasks:
            raise CubeError(CONFLICT, f"the cluster keeps at most {self.config.max_tasks} tasks (--max-tasks); "
                                      f"stop some, or let finished ones be pruned (--retention)")
        self._claim_name(task)

        def added(t: Task | None, existing: bool, error: CubeError | None) -> None:
            self._naming.pop(task.name, None)
            if error is not None:
                m.respond(error=error)
                return
            if existing:
                try:
                    m.respond(self._repeated_start(t, task))
                except CubeError as e:
                    m.respond(error=e)
                return
            m.respond({"task": t.record()})  # packed at once: sharing is safe
            self.placement.added(t.id)
        self.book.add(task, "submitted", added)

    def _repeated_start(self, known: Task, task: Task) -> dict[str, Any]:
        """A start for an id that exists: idempotent if it asks for the same, an error if not."""
        differ = same_spec(known, task)
        if differ:
            raise CubeError(CONFLICT, f"task {known.id} exists with a different {', '.join(differ)}; "
                                      f"use a new id, or stop it and start a new task")
        if known.desired == DESIRED_STOPPED:
            raise CubeError(CONFLICT, f"task {known.id} was stopped; `cube task restart {known.id[:12]}` "
                                      f"starts it again")
        return {"task": known.to_dict(), "existing": True}

    def _claim_name(self, task: Task, restart: bool = False) -> None:
        """Names are unique among live tasks, so a name always means one task."""
        taken = self._naming.get(task.name)
        if taken is None:
            taken = next((t.id for t in self.book.named(task.name)
                          if t.id != task.id and t.desired == DESIRED_RUNNING and not listing.finished(t)), None)
        if taken is not None and taken != task.id:
            raise CubeError(CONFLICT, f"a live task is already named {task.name!r} ({taken[:12]}); "
                                      f"choose another name, or stop that task first")
        if not restart:
            self._naming[task.name] = task.id

    @handles(task_msg.STOP)
    def on_stop_task(self, m: Envelope) -> None:
        self._ready()
        task = self.book.find(m.body["id"])
        self.life.stop(task.id, lambda t, error: m.respond(error=error) if error else m.respond({"task": t.to_dict()}))

    @handles(task_msg.RESTART)
    def on_restart_task(self, m: Envelope) -> None:
        self._ready()
        task = self.book.find(m.body["id"])
        if task.desired == DESIRED_STOPPED or listing.finished(task):
            self._claim_name(task, restart=True)  # live again: its name must still be free
        self.life.restart(task.id, lambda t, error: m.respond(error=error) if error else
                          m.respond({"task": (t or self.book.get(task.id) or task).to_dict()}))

    @handles(task_msg.LIST)
    def on_list_tasks(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        tasks, token = listing.page_indexed(self.task_order, lambda key: self.book.get(key[1]),
                                            listing.task_filter(m.body), listing.public_view, m.body)
        return {"tasks": tasks, "continue": token}

    def _index_task(self, task_id: str, task: Task | None) -> None:
        if task is None:
            self.task_order.remove(task_id)
        else:
            self.task_order.put(task_id, (task.created_at, task_id))

    @handles(task_msg.INSPECT)
    def on_inspect(self, m: Envelope) -> None:
        self._ready()
        task = self.book.find(m.body["id"])
        shown = Task.to_dict if m.principal == ADMIN else listing.public_view  # env values: admins only
        self.book.events(task.id, lambda events, error: m.respond(error=error) if error else
                         m.respond({"task": shown(self.book.get(task.id) or task),
                                    "events": events}))

    @handles(task_msg.LOGS)
    def on_logs(self, m: Envelope) -> None:
        """A page of one attempt's output, from the worker that ran it (tasklogs.py)."""
        self._ready()
        task = self.book.find(m.body["id"])
        waiting = tasklogs.not_started(task, m.body)
        if waiting is not None:
            m.respond(waiting)
            return
        ask = tasklogs.plan(task, m.body, self.registry.is_ready)
        env = Envelope(worker_msg.LOGS, ask.body, route=self.registry.get(ask.worker).route)
        self.request(self.workers_sock, env,
                     lambda reply: _relay(m, ask.settle(reply), f"worker {ask.worker}", ask.answer), timeout=5.0)

    # ---- services (docs/architecture.md, "Services") ------------------------------------------------
    def _change_service(self, m: Envelope, name: str, fn: Any, message: Any) -> None:
        """Apply `fn` to the service when its turn comes (cube/manager/services.py, `change`);
        answer with the result once it is durable. `message(svc)` is its event, if any."""
        def done(svc: Service | None, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            said = message(svc) if callable(message) else message
            if said:
                self.services.event(name, said)
            m.respond({"service": self._service_view(svc)} if svc is not None else {"name": name})
            self.services.tick(force=True)
        self.services.change(name, fn, done)

    def _service_view(self, svc: Service) -> dict[str, Any]:
        view = {**svc.to_dict(), "running": self.tally.running(svc)}
        view["spec"] = listing.redact(view["spec"])
        if view.get("previous_spec"):
            view["previous_spec"] = listing.redact(view["previous_spec"])
        return view

    @staticmethod
    def _existing(name: str, svc: Service | None) -> Service:
        if svc is None:
            raise CubeError(NOT_FOUND, f"no service named {name!r}")
        return svc

    @handles(service_msg.CREATE)
    def on_service_create(self, m: Envelope) -> None:
        self._ready()
        try:
            wanted = service_from_spec(m.body)
        except TaskSpecError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        existing: list[bool] = []

        def create(current: Service | None) -> Service | None:
            if current is not None:
                if current.spec == wanted.spec and current.replicas == wanted.replicas and current.update == wanted.update:
                    existing.append(True)
                    return None  # the same create again: nothing to do
                raise CubeError(CONFLICT, f"service {wanted.name} exists with another spec; use `cube service "
                                          f"update` or `cube service scale`")
            if len(self.book) + wanted.replicas > self.config.max_tasks:
                raise CubeError(CONFLICT, f"the cluster keeps at most {self.config.max_tasks} tasks (--max-tasks)")
            self.services.events[wanted.name] = []  # a new service, even under an old name
            return wanted

        def done(svc: Service | None, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            if existing:
                m.respond({"service": self._service_view(svc), "existing": True})
                return
            self.services.event(svc.name, f"created with {svc.replicas} replicas")
            m.respond({"service": self._service_view(svc)})
            self.services.tick(force=True)
        self.services.change(wanted.name, create, done)

    @handles(service_msg.LIST)
    def on_service_list(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        rows, token = listing.page(self.services.services.values(), lambda s: [s.name], self._service_view, m.body)
        return {"services": rows, "continue": token}

    @handles(service_msg.INSPECT)
    def on_service_inspect(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        svc = self._existing(m.body["name"], self.services.services.get(m.body["name"]))
        return {"service": self._service_view(svc), "events": self.services.events.get(svc.name, [])}

    @handles(service_msg.PS)
    def on_service_ps(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        svc = self._existing(m.body["name"], self.services.services.get(m.body["name"]))
        return {"service": self._service_view(svc),
                "tasks": [listing.public_view(t) for t in self.services.replicas(svc.name)][-2000:]}

    @handles(service_msg.SCALE)
    def on_service_scale(self, m: Envelope) -> None:
        self._ready()
        name = m.body["name"]
        try:
            replicas = check_replicas(m.body["replicas"])
        except TaskSpecError as e:
            raise CubeError(BAD_REQUEST, str(e)) from None
        before: list[int] = []

        def scale(current: Service | None) -> Service:
            svc = self._existing(name, current)
            if replicas > svc.replicas and len(self.book) + replicas - svc.replicas > self.config.max_tasks:
                raise CubeError(CONFLICT, f"the cluster keeps at most {self.config.max_tasks} tasks (--max-tasks)")
            before.append(svc.replicas)
            svc.replicas, svc.updated_at = replicas, time.time()
            return svc
        self._change_service(m, name, scale, lambda svc: f"scaled from {before[0]} to {replicas}")

    @handles(service_msg.UPDATE)
    def on_service_update(self, m: Envelope) -> None:
        """A new spec (the old one with the given task fields changed) rolled out slot by slot."""
        self._ready()
        name, body = m.body["name"], m.body
        said: list[str] = []

        def update(current: Service | None) -> Service | None:
            svc = self._existing(name, current)
            try:
                spec = check_template({**svc.spec, **(body.get("task") or {})})
                policy = update_policy(body.get("update"), svc.update)
            except TaskSpecError as e:
                raise CubeError(BAD_REQUEST, str(e)) from None
            if spec == svc.spec and not body.get("force"):
                if policy == svc.update:
                    return None
                svc.update = policy
                said.append("update policy changed")
                return svc
            now = time.time()
            svc.update = policy
            svc.previous_spec, svc.previous_version = svc.spec, svc.version
            svc.spec, svc.version = spec, max(svc.version, svc.previous_version) + 1
            svc.rollout, svc.updated_at = planner.start_update(svc, now), now
            said.append(f"update to version {svc.version} started")
            return svc

        def done(svc: Service | None, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            if not said:
                m.respond({"service": self._service_view(svc), "unchanged": True})
                return
            self.services.event(name, said[0])
            m.respond({"service": self._service_view(svc)})
            self.services.tick(force=True)
        self.services.change(name, update, done)

    @handles(service_msg.ROLLBACK)
    def on_service_rollback(self, m: Envelope) -> None:
        self._ready()
        name = m.body["name"]

        def back(current: Service | None) -> Service:
            svc = self._existing(name, current)
            if svc.previous_spec is None:
                raise CubeError(CONFLICT, f"service {name} has no previous spec to roll back to")
            return rolled_back(svc, time.time())
        self._change_service(m, name, back, "rollback requested")

    @handles(service_msg.REMOVE)
    def on_service_remove(self, m: Envelope) -> None:
        """The record goes first; its tasks are stopped by the controller (and again until they are)."""
        self._ready()
        name = m.body["name"]
        live = [t.id for t in self.services.replicas(name) if t.desired == DESIRED_RUNNING]

        def remove(current: Service | None) -> Any:
            self._existing(name, current)
            return DELETE

        def done(_: Service | None, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            self.services.event(name, "removed")
            self.services.tick(force=True)  # its tasks are orphans now: stopped
            m.respond({"name": name, "stopped": len(live)})
        self.services.change(name, remove, done)

    def _stop_for_service(self, task_id: str, reason: str) -> None:
        def done(t: Task | None, error: CubeError | None) -> None:
            self.services.stopped(task_id)
            if error is not None:
                log.warning("manager: could not stop %s for its service: %s", task_id[:8], error)
        self.life.stop(task_id, done, reason=reason)

    def _publish_service_event(self, name: str, message: str) -> None:
        self.eventlog.record({"type": "service", "service": name, "message": message}, service_msg.EVENT)

    # ---- node availability -----------------------------------------------------------------------------
    @handles(node_msg.DRAIN)
    def on_drain(self, m: Envelope) -> None:
        """No new work for it (answered once that is durable); its service slots get replacements
        elsewhere first (its tasks there stop once those settled), its other tasks restart elsewhere."""
        self._ready()
        rec = self._node(m.body["name"])
        rec.availability = DRAIN
        self.registry.changed()
        others = [n for n in self.registry.schedulable() if n != rec.name]

        def saved(_: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            moved = 0
            for t in self.book.on_worker(rec.name):
                if not t.service and t.desired == DESIRED_RUNNING:
                    self.life.restart(t.id, lambda *_: None, reason=f"worker {rec.name} drained")
                    moved += 1
            self.services.tick(force=True)
            log.info("manager: worker %s drained; %d tasks move", rec.name, moved)
            reply: dict[str, Any] = {"node": rec.view()}
            if not others:
                reply["warning"] = "no other worker can take new work: its tasks wait Pending until one can"
            m.respond(reply)
        self._save_node(rec.to_dict(), "drained", "cube node drain", done=saved)

    @handles(node_msg.ACTIVATE)
    def on_activate(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        rec = self._node(m.body["name"])
        rec.availability = ACTIVE_NODE
        self.registry.changed()
        self._save_node(rec.to_dict(), "activated", "cube node activate")
        self.placement.schedule()
        return {"node": rec.view()}

    def _node(self, name: str) -> Any:
        rec = self.registry.get(name)
        if rec is None:
            raise CubeError(NOT_FOUND, f"no worker named {name!r}")
        return rec

    # ---- administration (docs/security.md) ------------------------------------------------------
    def _secure(self) -> Authority:
        if self.authority is None:
            raise CubeError(BAD_REQUEST, "this manager runs without security (--insecure): no tokens or credentials")
        return self.authority

    @handles(node_msg.JOIN_TOKEN)
    def on_join_token(self, m: Envelope) -> dict[str, Any]:
        authority = self._secure()
        if m.body.get("rotate"):
            authority.rotate_token()
            log.info("manager: join token rotated (workers that joined keep their keys)")
        return {"token": str(authority.token), "command": authority.join_command()}

    @handles(node_msg.CREDENTIALS)
    def on_credentials(self, m: Envelope) -> dict[str, Any]:
        authority = self._secure()
        if m.body["role"] not in ROLES:
            raise CubeError(BAD_REQUEST, f"field 'role': use one of {', '.join(ROLES)}, not {m.body['role']!r}")
        creds = authority.issue(m.body["name"], m.body["role"])
        log.info("manager: issued %s credentials %r", creds.role, creds.name)
        return {"credentials": creds.to_dict()}

    @handles(node_msg.CREDENTIALS_LIST)
    def on_credentials_list(self, m: Envelope) -> dict[str, Any]:
        ring = self._secure().keyring
        return {"credentials": sorted(({"name": c["name"], "role": c["role"], "created": c.get("created", 0.0),
                                        "key": key[:8]} for key, c in ring.clients.items()),
                                       key=lambda c: (c["name"], c["created"]))}

    @handles(node_msg.CREDENTIALS_REVOKE)
    def on_credentials_revoke(self, m: Envelope) -> dict[str, Any]:
        """Their next request is refused, and so is every new connection; an open event
        subscription ends when its connection does (docs/security.md)."""
        authority = self._secure()
        if m.principal == ADMIN and m.body["name"] == authority.keyring.clients.get(m.peer, {}).get("name") \
                and sum(1 for c in authority.keyring.clients.values() if c["role"] == ADMIN) <= 1:
            raise CubeError(CONFLICT, "these are the last admin credentials: issue others before revoking them")
        n = authority.revoke_client(m.body["name"])
        if not n:
            raise CubeError(NOT_FOUND, f"no credentials named {m.body['name']!r}")
        log.warning("manager: revoked %d credentials named %r", n, m.body["name"])
        return {"name": m.body["name"], "revoked": n}

    @handles(node_msg.REMOVE)
    def on_remove_node(self, m: Envelope) -> dict[str, Any]:
        """Revoke a worker: its key may not speak again, it is lost now, and its tasks move."""
        self._ready()
        name = m.body["name"]
        known = self.registry.get(name) is not None
        revoked = self.authority.keyring.revoke_worker(name) if self.authority else None
        if not known and revoked is None:
            raise CubeError(NOT_FOUND, f"no worker named {name!r}")
        rec = self.registry.get(name)
        action, why = ("revoked", "cube node rm: its key was revoked") if revoked else ("removed", "cube node rm")
        if rec is not None:
            self.registry.lose(name)
            self.commands.cancel(name)
            self._save_node(rec.to_dict(), action, why)
            self._unmoved.add(name)
            self._removed.add(name)
        else:  # a key that never said hello to this manager: the event alone
            self.eventlog.record({"type": "node", "node": name, "action": action, "reason": why},
                                 events_msg.NODE_EVENT)
        log.warning("manager: worker %s removed%s; its tasks move", name, " and its key revoked" if revoked else "")
        return {"name": name, "revoked": revoked is not None}

    @handles(node_msg.LIST)
    def on_list_nodes(self, m: Envelope) -> None:
        self._ready()

        def answer(reply: Envelope | None) -> None:
            metrics = {}
            if reply is not None and reply.type != REPLY_ERROR:
                metrics = {n["name"]: n for n in reply.body.get("nodes", [])}
            else:
                log.warning("manager: no node metrics from the scheduler")
            def row(rec: Any) -> dict[str, Any]:
                return {**rec.view(), "tasks": self.book.count_on_worker(rec.name), "metrics": metrics.get(rec.name)}
            try:
                nodes, token = listing.page(self.registry.workers.values(), lambda r: [r.name], row, m.body)
            except CubeError as e:
                m.respond(error=e)
                return
            m.respond({"nodes": nodes, "continue": token})
        self.request(self.sched_sock, Envelope(sched_msg.NODES, {}), answer, timeout=1.0)

    # ---- workers ----------------------------------------------------------------------------
    @handles(worker_msg.HELLO)
    def on_hello(self, m: Envelope) -> dict[str, Any]:
        self._ready()
        b = m.body
        name = b["name"]
        if name != m.principal:
            raise CubeError(BAD_REQUEST, f"this connection speaks for worker {m.principal!r}, not {name!r}")
        admitted = self._admitted_address(name)
        if self.authority is not None and b["address"] != admitted:
            raise CubeError(FORBIDDEN, f"worker {name} joined with address {admitted}, not {b['address']}; "
                                       f"to move it, `cube node rm {name}` and join again")
        clock = report_clock(b.get("clock"))
        if self.registry.stale_hello(name, clock):  # e.g. delayed past a newer one: it must not revive
            raise CubeError(CONFLICT, f"stale hello from {name}: a newer one was already taken")
        # Pending commands are kept: each is the current intent for one attempt (a newer one
        # replaces it by key), and a late hello must not cancel a stop sent after its snapshot.
        old = self.registry.get(name)
        rec = self.registry.hello(name, b["address"], float(b["cpus"]), b["memory"], b["disk"], b.get("pid", 0),
                                  clock)
        self._follow(name, m.route)
        self._save_node(rec.to_dict(), *_hello_event(old))
        log.info("manager: worker %s at %s says hello with %d containers", name, rec.address, len(b["tasks"]))
        self.loop.call_later(0, lambda: self.life.reconcile(name, b["tasks"], clock))
        self.placement.schedule()
        # Again once its first metrics sample reached the Scheduler (sent on our reply): a new
        # leader, or a restarted manager, places waiting tasks on it then, not a second later.
        self.loop.call_later(0.3, self.placement.schedule)
        return {"metrics": self.config.metrics_advertised, **self._paced(),
                "term": self.leadership.term,
                "grace": self.registry.grace, "retention": self.config.retention}  # retained logs' age bound

    def _known_worker(self, m: Envelope) -> str:
        """The worker behind a message: the name its key is bound to (`admit`), never what the
        body claims; its commands follow the connection it spoke on."""
        worker = m.principal
        if self.registry.seen(worker) is None:
            raise CubeError(NOT_FOUND, "unknown worker: say hello")
        self._follow(worker, m.route)
        return worker

    def _follow(self, worker: str, route: list[bytes]) -> None:
        if self.registry.track_route(worker, route):
            self.commands.reroute(worker)

    def _admitted_address(self, name: str) -> str:
        return self.authority.keyring.addresses.get(name, "") if self.authority else ""

    @handles(worker_msg.JOIN)
    def on_join(self, m: Envelope) -> dict[str, Any]:
        """A new worker proves the join token once; from then on its key speaks for its name."""
        if self.authority is None:
            return {"name": m.body["name"]}
        b = m.body
        if not WORKER_NAME.match(b["name"]) or not WORKER_ADDRESS.match(b["address"]):
            raise CubeError(BAD_REQUEST, "a worker joins with a name (letters, digits, '.', '_', '-') and the "
                                         "address its ports and health checks are reached at (--address)")
        was = self.authority.keyring.revoked.get(m.peer)
        if was is not None:
            raise CubeError(FORBIDDEN, f"this worker's key was revoked (it was {was!r}); remove the worker's "
                                       f"curve/ directory and join again with a token")
        if b["name"] in self._removed:
            raise CubeError(FORBIDDEN, f"worker {b['name']} is being removed (its tasks are moving); "
                                       f"join again in a moment")
        try:
            new = self.authority.join(b["name"], m.peer, b["secret"], b["address"])
        except JoinRefused as e:
            self.stats["joins_refused"] += 1
            self._throttled.warning("join", "manager: refused a join as %r: %s", b["name"], e)
            raise CubeError(FORBIDDEN, str(e)) from None
        if new:
            log.info("manager: worker %s joined (key %s…)", b["name"], m.peer[:8])
        return {"name": b["name"]}

    @handles(worker_msg.HEARTBEAT)
    def on_heartbeat(self, m: Envelope) -> dict[str, Any]:
        self._known_worker(m)
        return self._paced()

    def _paced(self) -> dict[str, float]:
        """How often workers report, for this size of cluster (pace.py)."""
        live = self.registry.live_count()  # lost workers do not heartbeat: they do not count
        if live != self._paced_for:
            self._paced_for = live
            self.pace.update(live)
        self.registry.grace = self.pace.grace
        return self.pace.advice()

    @handles(worker_msg.STATUS)
    def on_status(self, m: Envelope) -> None:
        self._ready()
        worker = self._known_worker(m)
        self.life.status(worker, m.body, lambda body, error: m.respond(error=error) if error else m.respond(body))

    # ---- timers -------------------------------------------------------------------------------
    def _check_workers(self) -> None:
        now = self.loop.clock()
        late, self._last_check = now - self._last_check, now
        if late > max(1.5, self.config.grace / 2):
            # This loop did not run for a while (the process was paused or starved of CPU): the
            # workers' silence proves nothing, and their heartbeats may still be queued unread.
            log.warning("manager: loop late by %.1fs; not judging worker liveness this round", late)
            self.registry.touch_all()
            return
        self._paced()
        for rec in self.registry.expire():
            log.warning("manager: worker %s lost (silent for more than %gs)", rec.name, self.registry.grace)
            self.commands.cancel(rec.name)
            self._save_node(rec.to_dict(), "lost", f"silent for more than {self.registry.grace:g}s")
            self._unmoved.add(rec.name)
        for name in sorted(self._unmoved - self._moving):  # retried every tick until the Store takes them
            if self.registry.is_ready(name):  # back already: its hello reconciles instead
                self._unmoved.discard(name)
                continue
            self._moving.add(name)

            def moved(ok: bool, name: str = name) -> None:
                self._moving.discard(name)
                if ok:
                    self._unmoved.discard(name)
                    if name in self._removed:
                        self._forget_node(name)
                    self.placement.schedule()
                else:
                    log.warning("manager: tasks of lost worker %s not all moved yet; retrying", name)
            self.life.worker_lost(name, moved)

    def _prune(self) -> None:
        """Forget tasks finished longer ago than the retention period, with their events."""
        horizon = time.time() - self.config.retention
        old = [t.id for t in self.book.tasks.values()
               if listing.finished(t) and 0 < (t.finished_at or t.updated_at) < horizon][:1000]
        if old:
            self.book.prune(old, lambda n, error: log.info("manager: pruned %d finished tasks", n) if n else None)

    def _forget_node(self, name: str) -> None:
        self._removed.discard(name)
        self.registry.forget(name)
        self.store.delete(NODES, name, lambda _, error: error and log.warning(
            "manager: could not forget node %s: %s", name, error))

    def _save_node(self, data: dict[str, Any], action: str = "", reason: str = "", done: Any = None) -> None:
        """Persist a node's record; with `action`, its node event is written in the same batch and
        published once stored (docs/architecture.md, "The event log")."""
        def saved(_: Any, error: CubeError | None) -> None:
            if error is not None:
                log.warning("manager: could not record node %s: %s", data["name"], error)
            if done is not None:
                done(_, error)
        if not action:
            self.store.put(NODES, data["name"], data, saved)
            return
        self.eventlog.record({"type": "node", "node": data["name"], "action": action, "reason": reason},
                             events_msg.NODE_EVENT, ops=[("put", NODES, data["name"], data)], done=saved)

    # ---- events -----------------------------------------------------------------------------------
    @handles(events_msg.SINCE)
    def on_events_since(self, m: Envelope) -> None:
        """One page of stored events after `seq` (or from `time`; neither: from now), filtered
        (docs/protocol.md, "Events"). Events hold no env values: read-only credentials may read."""
        self._ready()
        b = m.body
        filters = events_msg.filters_of(b)
        limit = b.get("limit") or events_msg.MAX_PAGE
        if not 1 <= limit <= events_msg.MAX_PAGE:
            raise CubeError(BAD_REQUEST, f"limit must be between 1 and {events_msg.MAX_PAGE}")
        if b.get("seq") is not None and b["seq"] < 0:
            raise CubeError(BAD_REQUEST, "seq must be 0 or more")
        log_ = self.eventlog
        if b.get("seq") is not None and b["seq"] > log_.published:  # it would hide the events to come
            raise CubeError(BAD_REQUEST, f"there is no event #{b['seq']} yet: the latest event is #{log_.published}")

        def read(after: int | None, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            last, first = log_.published, log_.first

            def page(body: dict[str, Any] | None, error: CubeError | None) -> None:
                if error is not None:
                    m.respond(error=error)
                else:
                    m.respond({**body, "last": last, "first": first, "after": after, "started": self.started,
                               "term": self.leadership.term, "events_port": self.config.events_port})
            if b.get("seq") is None and b.get("time") is None:  # from now: nothing to read
                page({"events": [], "next": last, "more": False}, None)
            else:
                log_.read(after, page, until=b.get("until"), limit=limit, filters=filters)
        if b.get("seq") is not None:
            read(b["seq"], None)
        elif b.get("time") is not None:
            log_.seek(float(b["time"]), read)
        else:
            read(log_.published, None)

    def _publish(self, event: TaskEvent, task: Task, record: dict[str, Any]) -> None:
        # The event as stored, nothing more: a live copy and a replayed one are the same (the
        # task's record is one `task.inspect` away, where env values are an admin's only).
        self.eventlog.publish(task_msg.EVENT, event.to_dict())
        if task.state in (State.COMPLETED, State.FAILED):  # its capacity is free again, now
            self.request(self.sched_sock, Envelope(sched_msg.RELEASE, {"task_id": task.id}), timeout=2.0)


def _hello_event(old: Any) -> tuple[str, str]:
    """The node event a hello makes: a first one joins, any other is a worker coming back."""
    if old is None:
        return "joined", "said hello"
    if old.state == LOST_NODE:
        return "back", "said hello again after it was lost"
    if not old.greeted:
        return "back", "said hello after the manager restarted"
    return "back", "said hello again (it restarted or reconnected)"


def _relay(m: Envelope, reply: Envelope | None, who: str, pick: Any) -> None:
    if reply is None:
        m.respond(error=CubeError(UNAVAILABLE, f"{who} did not answer"))
    elif reply.type == REPLY_ERROR:
        m.respond(error=CubeError(reply.body.get("code", "error"), reply.body.get("message", "")))
    else:
        m.respond(pick(reply.body))


def run_manager(config: ManagerConfig) -> None:
    """Process entry point."""
    from cube.chaos import hook
    manager = Manager(config.resolved())
    hook.attach(manager)
    manager.stop_on_signals()
    from cube.observability import manager_metrics
    exported = manager_metrics.export(manager)  # /metrics (docs/architecture.md, "Metrics"); None when off
    try:
        manager.run()
    finally:
        if exported is not None:
            exported.close()
