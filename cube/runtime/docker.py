"""DockerRuntime: the Runtime interface on the local Docker engine via the docker SDK.

Every docker/requests exception is turned into RuntimeFailure here, so callers (the Worker)
never depend on docker.errors and users see messages about their task, not HTTP internals.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Iterator

import docker
import docker.errors
import requests.exceptions

from cube.model import ports as port_spec
from cube.runtime import logstore
from cube.runtime.logstore import Record
from cube.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_TASK,
    LABEL_WORKER,
    ContainerInfo,
    ContainerSpec,
    PortConflict,
    RuntimeEvent,
    RuntimeFailure,
)

log = logging.getLogger(__name__)

EVENT_ACTIONS = ("start", "die", "destroy", "oom")
# Hardening every task container gets ("hardened tasks by default"). A task cannot turn
# these off: no setuid/file-capability escalation inside the container, no raw sockets (ARP and
# ICMP spoofing on the bridge), and a process ceiling so a fork bomb stays inside its container.
SECURITY_OPT = ["no-new-privileges"]
CAP_DROP = ["NET_RAW"]
DEFAULT_PIDS_LIMIT = 1024
ANY_ADDRESS = "0.0.0.0"
_HOST_CONFIG_KEYS = frozenset({"restart_policy", "init", "security_opt", "cap_drop", "pids_limit",
                               "mem_limit", "nano_cpus"})
_NEVER = "0001-01-01T00:00:00Z"  # docker's zero time for "not started/finished yet"
EXITED_STATES = ("exited", "dead")  # listed containers that are inspected for their exit code


def container_name(spec: ContainerSpec) -> str:
    """A readable, docker-legal, per-attempt name, so a retried run() finds its own container."""
    base = re.sub(r"[^a-zA-Z0-9_.-]+", "-", spec.name).strip("-.") or "task"
    task = re.sub(r"[^a-zA-Z0-9_.-]+", "-", spec.task_id)[:8]
    return f"cube-{base[:40]}-{task}-{spec.attempt}"


_BIND_REFUSED = re.compile(r"port is already allocated|address already in use|bind: permission denied", re.I)


def bind_ip(address: str) -> str:
    """The IP literal Docker needs for published ports; a host name is resolved once, here.

    Docker only takes an IP as HostIp, and resolving at construction makes a misspelt
    --address fail when the worker starts rather than on every task it is given.
    """
    address = (address or "").strip().strip("[]")
    if address in ("", "*", ANY_ADDRESS):
        return ANY_ADDRESS
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RuntimeFailure(f"cannot publish ports on {address!r}: the name does not resolve ({exc})") from exc
    ipv4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]  # _host_ports prefers IPv4 too
    return (ipv4 or [i[4][0] for i in infos])[0]


def _is_local(ip: str) -> bool:
    """Whether this host can bind `ip` (Docker can publish on it only if so)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
        return True
    except OSError:
        return False


def _explain(exc: Exception) -> str:
    """The most human part of a docker/requests exception."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return f"cannot reach the Docker daemon ({exc.__class__.__name__}: {exc})"
    return str(exc) or exc.__class__.__name__


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Re-raise any docker or transport error as RuntimeFailure prefixed with what we were doing."""
    try:
        yield
    except RuntimeFailure:
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise RuntimeFailure(f"{what}: {_explain(exc)}") from exc


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    """ContainerInfo from `docker inspect` output."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State") or {}
    status = state.get("Status", "")
    exit_code = state.get("ExitCode") if status in ("exited", "dead") else None
    error = state.get("Error") or ""
    if not error and state.get("OOMKilled"):
        error = "killed: out of memory"
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, 0))
    except ValueError:
        attempt = 0
    return ContainerInfo(
        container_id=attrs["Id"],
        task_id=labels.get(LABEL_TASK, ""),
        attempt=attempt,
        state=status,
        exit_code=exit_code,
        host_ports=_host_ports((attrs.get("NetworkSettings") or {}).get("Ports") or {}),
        error=error,
        started_at="" if state.get("StartedAt", _NEVER) == _NEVER else state["StartedAt"],
        finished_at="" if state.get("FinishedAt", _NEVER) == _NEVER else state["FinishedAt"],
        worker=labels.get(LABEL_WORKER, ""),
    )


def _summary_info(summary: dict[str, Any]) -> ContainerInfo:
    """ContainerInfo from a `docker ps` row of a container that has not exited: its state,
    labels and host ports (no start time, nor the error of a start that failed, are there)."""
    labels = summary.get("Labels") or {}
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, 0))
    except ValueError:
        attempt = 0
    ports: dict[str, list[dict[str, str]]] = {}
    for p in summary.get("Ports") or []:
        if p.get("PublicPort") is not None:
            ports.setdefault(f"{p.get('PrivatePort')}/{p.get('Type', 'tcp')}", []).append(
                {"HostIp": p.get("IP", ""), "HostPort": str(p["PublicPort"])})
    return ContainerInfo(
        container_id=summary["Id"],
        task_id=labels.get(LABEL_TASK, ""),
        attempt=attempt,
        state=summary.get("State", ""),
        host_ports=_host_ports(ports),
        worker=labels.get(LABEL_WORKER, ""),
    )


def _host_ports(ports: dict[str, list[dict[str, str]] | None]) -> dict[str, int]:
    """"8080/tcp" -> host port, preferring the IPv4 binding (docker also lists "::")."""
    out: dict[str, int] = {}
    for key, bindings in ports.items():
        if not bindings:
            continue
        ipv4 = [b for b in bindings if ":" not in b.get("HostIp", "")]
        chosen = (ipv4 or bindings)[0]
        with contextlib.suppress(KeyError, ValueError):
            out[key] = int(chosen["HostPort"])
    return out


def _since_param(nanos: int) -> str:
    """Docker parses "S.N" with N as integer nanoseconds, so str(float) would be wrong."""
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


class DockerRuntime:
    """Runs task containers on the local Docker engine; safe to share between threads.

    `bind_address` is where published ports listen: the worker's advertised address, so a task's
    port is reachable where Cube says it is and not on every interface of the host (0.0.0.0,
    the default, keeps Docker's publish-everywhere behaviour). `pids_limit` applies to tasks
    that do not set their own.
    """

    def __init__(self, client: docker.DockerClient | None = None, timeout: int = 30,
                 reconnect_max: float = 5.0, bind_address: str = ANY_ADDRESS,
                 pids_limit: int = DEFAULT_PIDS_LIMIT) -> None:
        self.bind_address = bind_ip(bind_address)
        if self.bind_address != ANY_ADDRESS and not _is_local(self.bind_address):
            # Not fatal: the daemon may see other interfaces than we do (a worker in a container).
            log.warning("published ports bind to %s, which is not an address of this host; "
                        "Docker will refuse to start tasks with ports unless it is one of the daemon's",
                        self.bind_address)
        if isinstance(pids_limit, bool) or not isinstance(pids_limit, int) or pids_limit < 1:
            raise ValueError(f"pids_limit must be a whole number >= 1, got {pids_limit!r}")
        self.pids_limit = pids_limit
        if client is None:
            with _translated("cannot connect to the Docker daemon"):
                client = docker.from_env(timeout=timeout)
        self.client = client
        self.reconnect_max = reconnect_max

    # -- run -------------------------------------------------------------------------------

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start the attempt's container: create, start, inspect (for its host ports),
        as `docker run -d` does. The optimistic order costs nothing on the usual path: the image
        is pulled only when create says it is missing, and the name is checked only when create
        says it is taken (a retried run of the same attempt is then answered with its container).
        """
        name = container_name(spec)
        create = self._create_args(spec)
        pulled = False
        for _ in range(4):  # a pull, then a concurrent run() of the same attempt may win the name race
            try:
                container_id = self.client.api.create_container(spec.image, name=name, **create)["Id"]
            except docker.errors.ImageNotFound as exc:
                if pulled:  # pulled, yet create does not find it
                    raise RuntimeFailure(f"image '{spec.image}' is not present locally and could not be pulled: "
                                         f"{_explain(exc)}") from exc
                self._pull(spec.image)
                pulled = True
                continue
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # the name is taken: ours (a retry) or a leftover
                    reused = self._reuse_or_remove(name, spec)
                    if reused is not None:
                        return reused
                    continue
                raise RuntimeFailure(f"cannot create container for task {spec.task_id}: {_explain(exc)}") from exc
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise RuntimeFailure(f"cannot create container for task {spec.task_id}: {_explain(exc)}") from exc
            return self._start(container_id, spec)
        raise RuntimeFailure(f"cannot create container {name}: the name stays taken by another container")

    def _pull(self, image: str) -> None:
        """Pull a missing image, reporting the registry's reason on failure."""
        try:
            for line in self.client.api.pull(image, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise RuntimeFailure(line["error"])
        except (RuntimeFailure, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            reason = str(exc) if isinstance(exc, RuntimeFailure) else _explain(exc)
            raise RuntimeFailure(
                f"image '{image}' is not present locally and could not be pulled: {reason}") from exc

    def _reuse_or_remove(self, name: str, spec: ContainerSpec) -> ContainerInfo | None:
        """Idempotent retries: keep our own running container, clear anything else under the name."""
        with _translated(f"cannot check existing container {name}"):
            try:
                existing = self.client.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
            info = _info(existing)
            if info.task_id == spec.task_id and info.attempt == spec.attempt and info.running:
                return info
            self._remove(existing["Id"])
            return None

    def _create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        """The container as the SDK's high-level containers.create() takes it (see _create_args).
        A new host-config option must also be named in _HOST_CONFIG_KEYS."""
        labels = {**spec.labels, LABEL_TASK: spec.task_id, LABEL_ATTEMPT: str(spec.attempt)}
        kwargs: dict[str, Any] = dict(
            command=spec.command or None,
            environment=dict(spec.env),
            labels=labels,
            detach=True,
            tty=False,
            ports=self._bindings(spec.ports),
            restart_policy={"Name": "no"},
            # A tiny init as PID 1 forwards SIGTERM: many programs (busybox httpd, sh) ignore it
            # as PID 1, which would turn every stop into a full timeout and a SIGKILL.
            init=True,
            security_opt=list(SECURITY_OPT),
            cap_drop=list(CAP_DROP),
            pids_limit=spec.pids_limit if spec.pids_limit > 0 else self.pids_limit,
        )
        if spec.memory > 0:
            kwargs["mem_limit"] = int(spec.memory)
        if spec.cpu > 0:
            # Docker refuses a limit above the host's core count; a worker may offer more cores
            # than it has (over-commit), so the limit is capped rather than the task refused.
            kwargs["nano_cpus"] = int(min(spec.cpu, os.cpu_count() or 1) * 1e9)
        return kwargs

    def _create_args(self, spec: ContainerSpec) -> dict[str, Any]:
        """_create_kwargs for the SDK's low-level create_container, as containers.create() splits
        them, without the inspection of the new container that containers.create() adds."""
        kwargs = self._create_kwargs(spec)
        bindings = kwargs.pop("ports")
        host = {key: kwargs.pop(key) for key in list(kwargs) if key in _HOST_CONFIG_KEYS}
        if bindings:
            host["port_bindings"] = bindings
            kwargs["ports"] = [tuple(p.split("/", 1)) for p in sorted(bindings)]
        kwargs["host_config"] = self.client.api.create_host_config(**host)
        return kwargs  # anything left over is refused by create_container (TypeError), not dropped

    def _bindings(self, entries: list[str]) -> dict[str, Any]:
        """Docker's port bindings: a fixed host port where the task asks for one, else a free one,
        on the bind address; (ip,) is the SDK's "HostIp only" form, and no HostIp publishes on
        every address (IPv4 and IPv6), as Docker does."""
        out: dict[str, Any] = {}
        for m in (port_spec.parse(e) for e in entries):
            if self.bind_address == ANY_ADDRESS:
                out[m.key] = m.host or None
            else:
                out[m.key] = (self.bind_address, m.host) if m.host else (self.bind_address,)
        return out

    def _start(self, container_id: str, spec: ContainerSpec) -> ContainerInfo:
        try:
            self.client.api.start(container_id)
            # Inspected after the start: the host ports Docker chose, and a container that has
            # already exited (a bad command) is reported as such rather than as running.
            return _info(self.client.api.inspect_container(container_id))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                self.client.api.remove_container(container_id, v=True, force=True)
            why = _explain(exc)
            fixed = port_spec.fixed_host_ports(spec.ports)
            if fixed and _BIND_REFUSED.search(why):
                raise PortConflict(f"host port {', '.join(fixed)} is taken on this worker's host: {why}") from exc
            raise RuntimeFailure(
                f"container for task {spec.task_id} ({spec.image}) failed to start: {why}") from exc

    # -- stop / inspect / list / logs ------------------------------------------------------

    def stop(self, container_id: str, timeout: float = 5.0,
             before_remove: Callable[[], None] | None = None) -> None:
        with _translated(f"cannot stop container {container_id[:12]}"):
            try:
                self.client.api.stop(container_id, timeout=max(0, math.ceil(timeout)))
            except docker.errors.NotFound:
                return
            if before_remove is not None:
                before_remove()
            self._remove(container_id)

    def _remove(self, container_id: str) -> None:
        """Force-remove with volumes; already gone or already being removed both count as done."""
        try:
            self.client.api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc.explanation):
                raise

    def inspect(self, container_id: str) -> ContainerInfo | None:
        with _translated(f"cannot inspect container {container_id[:12]}"):
            try:
                return _info(self.client.api.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

    def list(self, worker: str | None = None) -> list[ContainerInfo]:
        labels = [LABEL_TASK] + ([f"{LABEL_WORKER}={worker}"] if worker is not None else [])
        with _translated("cannot list containers"):
            out = []
            # One listing; only a container that has exited is inspected (for its exit code,
            # error and times). Inspecting every one would be a call per container per listing
            # (the Worker lists before each start), and an inspect waits while the container is
            # being started (the daemon holds its lock), so a start would wait for its neighbours'.
            for summary in self.client.api.containers(all=True, filters={"label": labels}):
                if summary.get("State") not in EXITED_STATES:
                    out.append(_summary_info(summary))
                    continue
                try:
                    out.append(_info(self.client.api.inspect_container(summary["Id"])))
                except docker.errors.NotFound:
                    pass  # removed since the listing
            return out

    def logs(self, container_id: str, tail: int = 100) -> str:
        with _translated(f"cannot read logs of container {container_id[:12]}"):
            try:
                raw = self.client.api.logs(container_id, stdout=True, stderr=True, tail=tail)
            except docker.errors.NotFound as exc:
                raise RuntimeFailure(f"container {container_id[:12]} no longer exists") from exc
            return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def output(self, container_id: str, tail: int | None = None, since: int = 0) -> Iterator[Record]:
        """Docker's multiplexed log stream with timestamps: one frame per logged line, stdout and
        stderr in the order the daemon received them. `since` is passed in whole seconds (the
        SDK takes a float, too coarse for nanoseconds); the records before it are skipped here."""
        what = f"cannot read the output of container {container_id[:12]}"
        with _translated(what):
            try:
                stream = self.client.api.logs(container_id, stdout=True, stderr=True, stream=True, follow=False,
                                              timestamps=True, tail="all" if tail is None or since else max(tail, 0),
                                              since=since // 1_000_000_000 if since >= 1_000_000_000 else None)
            except docker.errors.NotFound as exc:
                raise RuntimeFailure(f"container {container_id[:12]} no longer exists") from exc
        try:
            with _translated(what):
                for record in logstore.from_docker(stream):
                    if record.ts >= since:
                        yield record
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    # -- events ----------------------------------------------------------------------------

    def events(self, stop: threading.Event, since: float | None = None) -> Iterator[RuntimeEvent]:
        """Labelled-container events until `stop`; reconnects (resuming at the last event) on breaks.

        The docker stream blocks without timeout, so a watcher thread closes it when `stop` is set.
        `since` (unix seconds) replays events from that point, which lets callers subscribe
        without racing the containers they are about to start.
        """
        filters = {"type": "container", "label": [LABEL_TASK]}
        state = {"stream": None}
        lock = threading.Lock()
        done = threading.Event()

        def watch() -> None:
            while not stop.wait(0.1):
                if done.is_set():
                    return
            with lock:
                stream = state["stream"]
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

        threading.Thread(target=watch, name="docker-events-watch", daemon=True).start()
        origin = int((time.time() if since is None else since) * 1e9)  # pinned: reconnects lose nothing
        last_nano, seen_at_last = 0, set()  # since= is inclusive: skip what we already yielded
        delay = 0.1
        try:
            while not stop.is_set():
                resume = _since_param(last_nano or origin)
                try:
                    stream = self.client.events(decode=True, filters=filters, since=resume)
                except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                    log.warning("docker events unavailable (%s); retrying in %.1fs", _explain(exc), delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.reconnect_max)
                    continue
                with lock:
                    state["stream"] = stream
                if stop.is_set():  # set between the watcher's check and our registration
                    stream.close()
                try:
                    for raw in stream:
                        delay = 0.1
                        nano = int(raw.get("timeNano") or int(raw.get("time", 0)) * 1_000_000_000)
                        key = (raw.get("id"), raw.get("Action") or raw.get("status"))
                        if nano < last_nano or (nano == last_nano and key in seen_at_last):
                            continue
                        if nano > last_nano:
                            last_nano, seen_at_last = nano, set()
                        seen_at_last.add(key)
                        event = _event(raw)
                        if event is not None:
                            yield event
                except Exception as exc:  # transport errors mid-stream: reconnect below
                    log.warning("docker events stream broke: %s", exc)
                finally:
                    with lock:
                        state["stream"] = None
                    with contextlib.suppress(Exception):
                        stream.close()
                if stop.is_set():
                    break
                # The stream ended without stop: the daemon went away. Resume where we were.
                stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
        finally:
            done.set()


def _event(raw: dict[str, Any]) -> RuntimeEvent | None:
    action = (raw.get("Action") or raw.get("status") or "").split(":")[0]
    if action not in EVENT_ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    exit_code = None
    if action == "die":
        with contextlib.suppress(TypeError, ValueError):
            exit_code = int(attrs.get("exitCode"))
    try:
        attempt = int(attrs.get(LABEL_ATTEMPT, 0))
    except ValueError:
        attempt = 0
    nano = raw.get("timeNano")
    return RuntimeEvent(
        kind=action,
        task_id=attrs.get(LABEL_TASK, ""),
        container_id=actor.get("ID") or raw.get("id", ""),
        attempt=attempt,
        exit_code=exit_code,
        time=nano / 1e9 if nano else float(raw.get("time", 0)),
    )
