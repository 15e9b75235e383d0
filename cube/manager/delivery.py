"""Commands to workers: `worker.run` and `worker.stop`, re-sent until the worker acknowledges
(after 1 s, then 2 s, then every 4 s: ManagerConfig.command_retry and twice and four times it).

Each command is keyed by (worker, task, attempt): a newer command for the same attempt replaces the
older one (a stop replaces the run it cancels), and a command for an old attempt never cancels the
run of a new one. Commands to a worker that is lost are not sent; its hello reconciles instead.
"""
from __future__ import annotations

import logging
from typing import Any

import zmq

from cube.manager.registry import LOST, WorkerRegistry
from cube.messages import worker as worker_msg
from cube.model.runspec import RunSpec
from cube.model.task import Task
from cube.wire.actor import Actor
from cube.wire.envelope import REPLY_ERROR, Envelope

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, actor: Actor, sock: zmq.Socket, registry: WorkerRegistry, retry_every: float):
        self.actor = actor
        self.sock = sock
        self.registry = registry
        self.retry_every = retry_every
        self.fence: Any = None  # cube/ha/leadership.py: only a leader commands, and says its term

    def run(self, task: Task) -> None:
        self._send(task.worker, task.id, worker_msg.RUN, {"spec": RunSpec.of(task).to_dict(), "attempt": task.attempt})

    def stop(self, worker: str, task_id: str, attempt: int, reason: str) -> None:
        self._send(worker, task_id, worker_msg.STOP, {"task_id": task_id, "attempt": attempt, "reason": reason})

    def cancel(self, worker: str) -> None:
        """Forget every command to a worker (it is lost: its hello will reconcile)."""
        self.actor.cancel_where(lambda key: key[0] == "cmd" and key[1] == worker)

    def reroute(self, worker: str) -> None:
        """The worker came back on another connection: its pending commands follow it."""
        rec = self.registry.get(worker)
        if rec is not None:
            self.actor.reroute(lambda key: key[0] == "cmd" and key[1] == worker, rec.route)

    def _send(self, worker: str, task_id: str, msg_type: str, body: dict[str, Any]) -> None:
        if self.fence is not None:  # docs/ha.md: a worker ignores a command of an older term than it saw
            if not self.fence.leading():
                return
            if self.fence.term:
                body = {**body, "term": self.fence.term}
        rec = self.registry.get(worker)
        if rec is None or rec.state == LOST or not rec.route:  # no route yet: its hello reconciles
            return

        def acked(reply: Envelope | None) -> None:
            if reply is not None and reply.type == REPLY_ERROR:
                log.warning("manager: %s refused %s for %s: %s", worker, msg_type, task_id[:8],
                            reply.body.get("message"))
        key = ("cmd", worker, task_id, body.get("attempt"))
        # Re-sent after retry_every, then twice that, then every 4x (jittered): a worker slow to
        # answer, or a manager slow to read its answers, is not helped by more copies (each one
        # makes the worker converge and report again).
        self.actor.request(self.sock, Envelope(msg_type, body, route=rec.route), acked,
                           retry_every=self.retry_every, key=key, backoff=2.0, max_every=4 * self.retry_every)
