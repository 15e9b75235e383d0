"""The actor base with real actors and sockets: every actor handles exactly the types its sockets
accept, and `stop()` from another thread fails what is still waiting and ends `run()`."""
from __future__ import annotations

import threading

import pytest

from cube.actors.scheduler import SchedulerActor
from cube.actors.store import StoreActor
from cube.actors.worker import Worker
from cube.manager import Manager
from cube.messages import events as events_msg
from cube.messages import node as node_msg
from cube.messages import service as service_msg
from cube.messages import sched as sched_msg
from cube.messages import store as store_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.wire.actor import Actor
from cube.wire.envelope import Envelope
from tests.actors.helpers import Host, free_ports, tcp, wait_for


def marked(cls: type) -> dict[str, set[str]]:
    """Message type -> names of the methods of `cls` (as resolved on it) marked as its handler."""
    out: dict[str, set[str]] = {}
    for name in dir(cls):
        for msg_type in getattr(getattr(cls, name, None), "__cube_handles__", ()):
            out.setdefault(msg_type, set()).add(name)
    return out


def test_every_actor_handles_exactly_what_its_sockets_accept(actors, monkeypatch):
    served: dict[type, list] = {}
    original = Actor.serve

    def recording(self, sock, accept=None, replies=True, authenticated=False):
        served.setdefault(type(self), []).append(accept)
        return original(self, sock, accept, replies, authenticated)
    monkeypatch.setattr(Actor, "serve", recording)

    _, sched_ep, _ = actors.scheduler()
    manager = actors.manager(scheduler_endpoint=sched_ep)
    worker = actors.worker(manager.config)
    wait_for(lambda: manager.registry.is_ready(worker.config.name), what="the worker to join")

    expected = {
        StoreActor: store_msg.ALL,
        SchedulerActor: sched_msg.ALL | {node_msg.METRICS},
        Manager: task_msg.API | node_msg.API | service_msg.API | events_msg.API | worker_msg.FROM_WORKER,
        Worker: worker_msg.TO_WORKER,
    }
    assert set(served) == set(expected)
    for cls, wanted in expected.items():
        assert all(a is not None for a in served[cls]), f"{cls.__name__} serves a socket accepting anything"
        accepted = set().union(*served[cls])
        assert accepted == wanted, cls.__name__
        assert set(cls.HANDLERS) == accepted, f"{cls.__name__}: handlers {sorted(cls.HANDLERS)}"
        handlers = marked(cls)
        assert set(handlers) == accepted, cls.__name__  # no handler for a type never accepted
        for msg_type, names in handlers.items():
            assert names == {cls.HANDLERS[msg_type]}, f"{cls.__name__}: {msg_type} handled by {names}"


class Stopping(Host):
    def __init__(self, endpoint: str):
        super().__init__(endpoint, name="stopping")
        self.stopped = threading.Event()
        self.log: list[str] = []

    def on_start(self) -> None:
        self.log.append("start")

    def on_stop(self) -> None:
        self.log.append("stop")
        self.stopped.set()


def test_stop_from_another_thread_fails_pending_requests_and_ends_run(actors):
    nobody = tcp(free_ports(1)[0])  # nothing listens there: no answer will ever come
    actor = Stopping(nobody)
    running = actors.start(actor, actor.run)
    thread = next(r.thread for r in actors.running if r.actor is running)
    answers: list = []

    def ask() -> None:
        actor.request(actor.store_sock, Envelope(store_msg.COUNT, {"ns": "tasks"}),
                      lambda r: answers.append(("waited", r)))  # no timeout: waits for ever
        actor.request(actor.store_sock, Envelope(store_msg.COUNT, {"ns": "tasks"}),
                      lambda r: answers.append(("retried", r)), retry_every=0.05)
        actor.request(actor.store_sock, Envelope(store_msg.COUNT, {"ns": "tasks"}), None, timeout=60)
    actor.on_loop(ask)
    assert len(actor._outstanding) == 3
    queued = threading.Event()
    actor.loop.call_soon_threadsafe(lambda: (actor.log.append("queued work"), queued.set()))
    actor.stop()  # from this thread
    thread.join(5)
    assert not thread.is_alive(), "run() did not return"
    assert sorted(answers) == [("retried", None), ("waited", None)]
    assert actor._outstanding == {} and actor._keyed == {}
    assert actor.log == ["start", "queued work", "stop"]  # the work queued before stop() ran first
    actor.stop()  # again, after the end: harmless


@pytest.mark.parametrize("where", ["before the loop runs", "from a callback"])
def test_stop_is_safe_early_and_from_the_loop_itself(actors, where):
    actor = Stopping(tcp(free_ports(1)[0]))
    if where == "before the loop runs":
        actor.stop()
        actors.start(actor, actor.run)
    else:
        actors.start(actor, actor.run)
        actor.loop.call_soon_threadsafe(actor.stop)
    assert actor.stopped.wait(5)
    assert actor.log == ["start", "stop"]
