"""What a follower Manager answers itself (docs/ha.md, "Reads on followers"): reads, from etcd.

A follower holds no copy of the cluster in memory (only the leader loads it), so it answers the
read requests a client needs most straight from the shared Store: `task.ls`, `task.inspect`,
`service.ls`, `service.inspect` and `node.ls`. They are as fresh as etcd (every read goes through
etcd's leader), and go on working while no manager leads (a failover), as long as etcd has a
majority. Writes, `service.ps`, `task.logs` and `events.since` stay with the leader.

What a follower cannot know, it says instead of guessing: it lists tasks in id order (the leader
in creation order), finds a task by its id or an id prefix (a name needs the leader's index),
shows workers as they were last recorded (`state: recorded`: whether one is connected now is
the leader's knowledge) and services without their running count.
"""
from __future__ import annotations

from typing import Any, Callable

from cube.manager import listing
from cube.manager.services import SERVICES
from cube.manager.taskbook import EVENTS, MAX_EVENTS, TASKS
from cube.messages import node as node_msg
from cube.messages import service as service_msg
from cube.messages import task as task_msg
from cube.model.task import Task
from cube.security.authority import ADMIN
from cube.wire.envelope import Envelope
from cube.wire.errors import BAD_REQUEST, NOT_FOUND, CubeError

NODES = "nodes"
MIN_PREFIX = 4  # an id prefix shorter than this matches too much to be meant

# request type -> FollowerReads method
READS = {task_msg.LIST: "tasks", task_msg.INSPECT: "inspect", service_msg.LIST: "services",
         service_msg.INSPECT: "service", node_msg.LIST: "nodes"}


class FollowerReads:
    def __init__(self, store: Any, role: Callable[[], dict[str, Any]]):
        self.store = store  # the Manager's AsyncStore
        self.role = role  # who leads, for the replies' `served_by`

    def handler(self, msg_type: str) -> Callable[[Envelope], None]:
        return getattr(self, READS[msg_type])

    # ---- tasks ------------------------------------------------------------------------------------
    def tasks(self, m: Envelope) -> None:
        """One page of tasks in id order; the token is the last id read (a leader's token is not)."""
        keep = listing.task_filter(m.body)
        limit = listing.limit_of(m.body)
        after = str(m.body.get("continue") or "")
        if after.startswith("{") or len(after) > 128:
            raise CubeError(BAD_REQUEST, "bad continue token: pass back the one a follower's list reply gave")

        def got(body: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            items = body["items"]
            rows = [listing.public_view(t) for t in (Task.from_dict(v) for _, v in items) if keep(t)]
            token = items[-1][0] if items and body.get("more") else ""
            m.respond({"tasks": rows, "continue": token, **self._served()})
        self.store.list_page(TASKS, got, after=after, limit=limit)

    def inspect(self, m: Envelope) -> None:
        ref = str(m.body["id"])
        shown = Task.to_dict if m.principal == ADMIN else listing.public_view

        def with_events(task: Task) -> None:
            def got(items: Any, error: CubeError | None) -> None:
                if error is not None:
                    m.respond(error=error)
                else:
                    m.respond({"task": shown(task), "events": [v for _, v in items][-MAX_EVENTS:], **self._served()})
            self.store.list_all(EVENTS, got, prefix=task.id + "/")

        def by_prefix(body: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            found = body["items"]
            if len(found) == 1:
                with_events(Task.from_dict(found[0][1]))
            elif found:
                m.respond(error=CubeError(BAD_REQUEST, f"{ref!r} matches several tasks; give more of the id"))
            else:
                m.respond(error=CubeError(NOT_FOUND, f"no task with id {ref!r} (this manager follows: it finds "
                                                     f"tasks by id or id prefix; by name, ask the leader)"))

        def exact(value: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
            elif value is not None:
                with_events(Task.from_dict(value))
            elif len(ref) >= MIN_PREFIX:
                self.store.list_page(TASKS, by_prefix, prefix=ref, limit=2)
            else:
                by_prefix({"items": []}, None)
        self.store.get(TASKS, ref, exact)

    # ---- services and nodes -----------------------------------------------------------------------
    def services(self, m: Envelope) -> None:
        def got(items: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            rows, token = listing.page([v for _, v in items], lambda s: [s["name"]], _service_view, m.body)
            m.respond({"services": rows, "continue": token, **self._served()})
        self.store.list_all(SERVICES, got)

    def service(self, m: Envelope) -> None:
        name = m.body["name"]

        def got(value: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
            elif value is None:
                m.respond(error=CubeError(NOT_FOUND, f"no service named {name!r}"))
            else:
                m.respond({"service": _service_view(value), "events": [], **self._served()})
        self.store.get(SERVICES, name, got)

    def nodes(self, m: Envelope) -> None:
        def got(items: Any, error: CubeError | None) -> None:
            if error is not None:
                m.respond(error=error)
                return
            rows, token = listing.page([v for _, v in items], lambda n: [n.get("name", "")], _node_view, m.body)
            m.respond({"nodes": rows, "continue": token, **self._served()})
        self.store.list_all(NODES, got)

    def _served(self) -> dict[str, Any]:
        return {"served_by": "follower", **self.role()}


def _service_view(record: dict[str, Any]) -> dict[str, Any]:
    view = {**record, "running": None}  # replicas running: the leader's knowledge
    view["spec"] = listing.redact(view.get("spec") or {})
    if view.get("previous_spec"):
        view["previous_spec"] = listing.redact(view["previous_spec"])
    return view


def _node_view(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "state": "recorded", "tasks": None, "metrics": None}
