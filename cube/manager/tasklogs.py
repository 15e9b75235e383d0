"""`task.logs`: which worker to ask for a page of which attempt's output (docs/protocol.md, "Logs").

Output lives on workers (docs/architecture.md, "Logs"): in the container while it exists, then in
the copy the worker keeps of it. The manager only knows where each attempt ran (Task.ran_on) and
whether the attempt has ended, which tells a follower (`cube task logs -f`) when to stop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cube.model.state import State
from cube.model.task import MAX_RAN_ON, Task
from cube.wire.envelope import REPLY_ERROR, REPLY_OK, Envelope
from cube.wire.errors import BAD_REQUEST, NOT_FOUND, UNAVAILABLE, CubeError

DEFAULT_TAIL = 100
LIVE = (State.SCHEDULED, State.RUNNING)


@dataclass
class LogsRequest:
    worker: str
    attempt: int
    ended: bool  # decided before the worker reads: a page read after this saw all of an ended attempt
    body: dict[str, Any]  # the worker.logs body
    placed: bool = False  # Scheduled, not yet running: the worker may not have its run command yet

    def settle(self, reply: Envelope | None) -> Envelope | None:
        """The worker's reply, except that a just-placed attempt it does not know yet has no
        output yet rather than none at all (a follower started with the task keeps waiting)."""
        if self.placed and reply is not None and reply.type == REPLY_ERROR and reply.body.get("code") == NOT_FOUND:
            return Envelope(REPLY_OK, {"logs": "", "cursor": self.body.get("cursor") or "0:0", "source": "none"})
        return reply

    def answer(self, reply: dict[str, Any]) -> dict[str, Any]:
        """The client's reply from the worker's."""
        return {"logs": reply.get("logs", ""), "cursor": reply.get("cursor", ""), "more": bool(reply.get("more")),
                "source": reply.get("source", ""), "attempt": self.attempt, "worker": self.worker,
                "ended": self.ended}


def not_started(task: Task, body: dict[str, Any]) -> dict[str, Any] | None:
    """With `follow`, a task that has not run yet but may: an empty page that says so (`waiting`),
    so a follower waits for its first attempt instead of failing. None otherwise."""
    if task.attempt >= 1 or not body.get("follow") or task.state not in (State.PENDING, State.SCHEDULED):
        return None
    return {"logs": "", "cursor": "", "more": False, "source": "none", "attempt": 0, "worker": "",
            "ended": False, "waiting": f"{task.state.value}: {task.reason or 'waiting'}"}


def plan(task: Task, body: dict[str, Any], connected: Callable[[str], bool]) -> LogsRequest:
    """The worker.logs request for a task.logs body, or a CubeError saying why there is none."""
    short = task.id[:12]
    if task.attempt < 1:
        raise CubeError(NOT_FOUND, f"task {short} has not run yet ({task.state.value}: {task.reason or 'waiting'})")
    attempt = body.get("attempt") or task.attempt
    if not 1 <= attempt <= task.attempt:
        raise CubeError(NOT_FOUND, f"task {short} has no attempt {attempt} (its attempts are 1 to {task.attempt})")
    tail = body.get("tail")
    if tail is not None and tail < 0:
        raise CubeError(BAD_REQUEST, "field 'tail': a number of lines >= 0")
    worker = task.worker_of(attempt)
    if not worker:
        raise CubeError(NOT_FOUND, f"where attempt {attempt} of task {short} ran is forgotten (a task remembers "
                                   f"the workers of its last {MAX_RAN_ON} attempts)")
    if not connected(worker):
        kept = (f"; its last lines are in `cube task inspect {short}`"
                if task.output and task.output_attempt == attempt else "")
        raise CubeError(UNAVAILABLE, f"worker {worker}, which ran attempt {attempt} of task {short}, is not "
                                     f"connected: the output it keeps can be read once it is back{kept}")
    ended = attempt != task.attempt or task.state not in LIVE
    ask: dict[str, Any] = {"task_id": task.id, "attempt": attempt,
                           "tail": DEFAULT_TAIL if tail is None else tail}
    if body.get("cursor"):
        ask["cursor"] = body["cursor"]
    return LogsRequest(worker, attempt, ended, ask, placed=task.state == State.SCHEDULED and attempt == task.attempt)
