"""The Docker `start` event of a container the Worker is starting itself does not make it list
and report the task a second time (one converge, one status per start)."""
from __future__ import annotations

import threading
import time


from cube.runtime.base import ContainerInfo, ContainerSpec
from cube.runtime.fake import FakeRuntime
from tests.actors.conftest import actors  # noqa: F401, F811  (the actor tests' fixture, not a copy)
from tests.actors.test_worker_actor import TASK, FakeManager


class SlowToReturnRuntime(FakeRuntime):
    """run() emits the start event, then takes a while to return (as an inspect after a start
    does), so the event reaches the worker while its converge is still running."""

    def __init__(self) -> None:
        super().__init__()
        self.lists = 0
        self.count = threading.Lock()

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        info = super().run(spec)
        time.sleep(0.3)
        return info

    def list(self, worker: str | None = None) -> list[ContainerInfo]:
        with self.count:
            self.lists += 1
        return super().list(worker)


def test_our_own_start_event_does_not_converge_again(actors):
    fm = FakeManager(actors)
    runtime = SlowToReturnRuntime()
    actors.worker(fm.config, "w1", runtime)
    fm.accept_hello()
    lists_before = runtime.lists  # the hello's listing
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    fm.status("task-1", "running")
    fm.idle(0.5)
    statuses = [m for m in fm.seen if m.type == "task.status" and m.body["task_id"] == "task-1"]
    assert [m.body["state"] for m in statuses] == ["running"]
    assert runtime.lists - lists_before == 1  # the converge's own listing, no second one


def test_a_death_during_the_start_is_still_seen(actors):
    """What the busy check is for: a container that dies while its start is being converged."""
    fm = FakeManager(actors)
    runtime = SlowToReturnRuntime()

    def run_and_die(spec: ContainerSpec) -> ContainerInfo:
        info = FakeRuntime.run(runtime, spec)
        runtime.kill(info.container_id, exit_code=3)
        time.sleep(0.3)
        return info
    runtime.run = run_and_die
    actors.worker(fm.config, "w1", runtime)
    fm.accept_hello()
    fm.command("worker.run", {"spec": TASK, "attempt": 1})
    exited = fm.status("task-1", "exited")
    assert exited.body["exit_code"] == 3
