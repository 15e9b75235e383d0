"""What a task's end means: finished, failed for good, or restart after a backoff (pure logic)."""
from __future__ import annotations

from dataclasses import dataclass

from cube.model.state import State
from cube.model.task import DESIRED_STOPPED, Task


@dataclass
class Outcome:
    state: State  # COMPLETED or FAILED
    restart: bool
    delay: float
    reason: str


def on_end(task: Task, exit_code: int | None, cause: str) -> Outcome:
    """Decide what follows a container's end. `cause` says what happened, in words."""
    if task.desired == DESIRED_STOPPED:
        return Outcome(State.COMPLETED, False, 0.0, f"stopped ({cause})")
    policy = task.restart
    if exit_code == 0 and policy.name != "always":
        return Outcome(State.COMPLETED, False, 0.0, cause)
    if policy.allows(exit_code, task.restart_count):
        delay = policy.delay(task.restart_count)
        return Outcome(State.FAILED, True, delay,
                       f"{cause}; restart {task.restart_count + 1} of {policy.max_restarts} in {delay:g}s")
    if exit_code == 0:  # under 'always' with its restarts used up: it still ended well
        return Outcome(State.COMPLETED, False, 0.0,
                       f"{cause}; no restart left ({task.restart_count} of {policy.max_restarts} under 'always')")
    if policy.name == "no":
        why = "restart policy is 'no'"
    else:
        why = f"gave up after {task.restart_count} restarts"
    return Outcome(State.FAILED, False, 0.0, f"{cause}; {why}")
