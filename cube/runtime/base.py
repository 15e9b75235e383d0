"""The contract between a Worker and whatever runs its containers.

The Worker only ever talks to this interface, so the same worker logic drives real Docker
containers in production and end-to-end tests, and simulated ones in unit tests and benchmarks.
Every call is blocking; the Worker runs them off its event loop.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from cube.runtime.logstore import Record

LABEL_TASK = "cube.task_id"
LABEL_WORKER = "cube.worker"
LABEL_ATTEMPT = "cube.attempt"


class RuntimeFailure(Exception):
    """A container operation failed; the message is meant for the user (e.g. image not found)."""


class PortConflict(RuntimeFailure):
    """A fixed host port was taken on this host when the container started (a race with another
    process): the task belongs on another worker, not on a retry here (docs/architecture.md, "Ports")."""


@dataclass
class ContainerSpec:
    """What to run for one attempt of one task."""

    task_id: str
    attempt: int
    name: str
    image: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0  # cores; 0 means no limit
    memory: int = 0  # bytes; 0 means no limit
    ports: list[str] = field(default_factory=list)  # "8080/tcp", or "8081:80/tcp" for a fixed host port
    pids_limit: int = 0  # most processes in the container; 0 means the runtime's default
    labels: dict[str, str] = field(default_factory=dict)  # extra labels, e.g. cube.worker


@dataclass
class ContainerInfo:
    """What the runtime observes of one container."""

    container_id: str
    task_id: str
    attempt: int
    state: str  # docker's status: created, running, paused, restarting, exited, dead, removing
    exit_code: int | None = None
    host_ports: dict[str, int] = field(default_factory=dict)  # "8080/tcp" -> 32768
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    worker: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting", "paused")


@dataclass
class RuntimeEvent:
    """A change in a labelled container noticed by the runtime (not by polling)."""

    kind: str  # "start", "die", "destroy", "oom"
    task_id: str
    container_id: str
    attempt: int
    exit_code: int | None = None
    time: float = 0.0


class Runtime(Protocol):
    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Ensure the image (pull only when missing), create and start the container."""

    def stop(self, container_id: str, timeout: float = 5.0,
             before_remove: Callable[[], None] | None = None) -> None:
        """Stop and remove the container with its volumes; a missing container is not an error.
        `before_remove` runs once it is stopped, before it is removed (the worker keeps its output)."""

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's current state, or None when it no longer exists."""

    def list(self, worker: str | None = None) -> list[ContainerInfo]:
        """Every container labelled with cube.task_id (only this worker's when given).

        Cheap enough to call before every start: a runtime may leave started_at and error empty
        for containers that have not exited (exit_code, error and finished_at of an exited
        one are always there); inspect() has everything."""

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Blocking stream of events of labelled containers until `stop` is set."""

    def logs(self, container_id: str, tail: int = 100) -> str:
        """The last lines of the container's output."""

    def output(self, container_id: str, tail: int | None = None, since: int = 0) -> Iterator[Record]:
        """The container's output, stdout and stderr interleaved, as timestamped records
        (cube/runtime/logstore.py): the last `tail` records (None: all), or those stamped at or
        after `since` (nanoseconds; then `tail` is ignored). RuntimeFailure if the container is gone."""
