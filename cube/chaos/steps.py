"""What each kind of chaos step does. A step returns a one-line result or raises StepFailed.

Steps talk to the cluster the way a client, a peer or an operator would: the manager's api (tasks
and services), raw
ZeroMQ sockets on every bound endpoint, signals to processes, the Docker SDK behind Cube's back,
and fault rules for the injectors inside the actors (cube/chaos/rules.py).
"""
from __future__ import annotations

import base64
import re
import signal as signals
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import docker
import msgpack
import zmq

from cube.chaos import invariants
from cube.chaos.rules import Rule
from cube.chaos.script import SERVICE_ACTIONS
from cube.harness import wait_for
from cube.runtime.base import LABEL_TASK
from cube.wire.envelope import VERSION, decode
from cube.wire.errors import CubeError

if TYPE_CHECKING:  # pragma: no cover
    from cube.chaos.runner import Run
    from cube.chaos.script import Step


class StepFailed(Exception):
    """The step did not do what the script expected; the message says what happened."""


# ---- tasks --------------------------------------------------------------------------------------

def start(run: "Run", step: "Step") -> str:
    count = int(step.get("count", 1))
    if count > 1 and step.get("id"):
        raise StepFailed("id is for one task (count = 1): a replay of a known id")
    if step.get("background"):
        thread = threading.Thread(target=_background, args=(run, step), name=f"step-{step.number}", daemon=True)
        run.background.append(thread)
        thread.start()
        return f"{count} starts in the background"
    return _starts(run, step)


def _background(run: "Run", step: "Step") -> None:
    try:
        run.out(f"      [step {step.number}, background] {_starts(run, step)}")
    except Exception as e:  # reported by `join` and at the end
        run.background_errors.append(f"step {step.number}: {e}")


def _starts(run: "Run", step: "Step") -> str:
    count, expect = int(step.get("count", 1)), step.get("expect", "ok")
    alias = step.get("as")
    declared = int(step.get("restarts", 0))  # failures the task's own command causes (docs/chaos.md)
    acked, refused, unanswered = [], [], []
    for i in range(count):
        spec = dict(run.resolve(step.get("spec", {})))
        spec.setdefault("image", step.get("image", run.script.cluster.image))
        spec.setdefault("name", step.get("name") or f"{alias or 'task'}-{i}")
        spec.setdefault("command", step.get("cmd", "sleep 600"))
        for key in ("restart", "max_restarts", "cpu", "memory", "ports", "pids_limit"):
            if key in step.args:
                spec[key] = run.resolve(step.args[key])  # "${free_port.P}:80" (docs/chaos.md)
        spec["id"] = str(run.resolve(step.get("id"))) if step.get("id") else str(uuid.uuid4())
        if declared:
            run.allow(spec["id"], declared)
        run.asking(spec["id"])  # before it is sent: a check meanwhile may see the task already
        reply, error, tries = run.api_tries("task.start", {"task": spec}, retries=int(step.get("retries", 3)),
                                            timeout=float(step.get("timeout", 3.0)))
        outcome = run.record_start(spec["id"], tries, reply["task"]["desired"] if reply else None)
        if reply is None:
            assert error is not None
            (unanswered if outcome == invariants.UNANSWERED else refused).append(
                f"{spec['id'][:8]}: {error.code}: {error.message}")
            if expect == "ok":
                raise StepFailed(f"task.start {outcome}: {error.code}: {error.message}") from None
        else:
            acked.append(reply["task"]["id"])
            if alias:
                run.aliases.setdefault(alias, []).append(reply["task"]["id"])
        if step.get("interval"):
            time.sleep(float(step.get("interval")))
    if expect == "error" and acked:
        raise StepFailed(f"expected task.start to be refused, {len(acked)} acknowledged")
    if step.get("wait"):
        for task_id in acked:
            _wait_task(run, task_id, {"state": step.get("wait")}, float(step.get("timeout", run.script.cluster.settle)))
    shown = ", ".join(t[:8] for t in acked[:4]) + (" ..." if len(acked) > 4 else "")
    return (f"{len(acked)} acknowledged ({shown})" + (f", {len(refused)} refused: {refused[0]}" if refused else "")
            + (f", {len(unanswered)} unanswered: {unanswered[0]}" if unanswered else ""))


def stop(run: "Run", step: "Step") -> str:
    expect = step.get("expect", "ok")
    done = []
    for task_id in run.task_ids(step.get("task")):
        reply, error, tries = run.api_tries("task.stop", {"id": task_id}, retries=int(step.get("retries", 3)))
        if reply is None:
            assert error is not None
            if "none" in tries:  # a try got no answer: the stop may still be applied later
                run.doubt(task_id, "stopped")
            outcome = "unanswered" if "none" in tries else "refused"
            if expect == "ok":
                raise StepFailed(f"task.stop {task_id[:8]} {outcome}: {error.code}: {error.message}") from None
            done.append(f"{task_id[:8]} {outcome} ({error.code})")
            continue
        run.acknowledge(reply["task"]["id"], reply["task"]["desired"])
        done.append(f"{task_id[:8]} {reply['task']['state']}")
    return "stop acknowledged: " + ", ".join(done)


def allow(run: "Run", step: "Step") -> str:
    """Declare failures the runner cannot see the script cause (docs/chaos.md, restart accounting):
    for tasks, or for every task of a service (of one spec version), present and future."""
    n = int(step.get("restarts"))
    if n < 0:
        raise StepFailed(f"restarts = {n}: an allowance is a number of failures, >= 0")
    if step.get("service") is not None:
        name, version = str(run.resolve(step.get("service"))), int(step.get("version", 0))
        if not run.allow_service(name, version, n):
            raise StepFailed(f"service {name!r}: the script never asked for it (a service step creates it)")
        return f"each task of service {name}" + (f" at version {version}" if version else "") + f" may fail {n} more times"
    ids = run.task_ids(step.get("task"))
    for task_id in ids:
        run.allow(task_id, n)
    return f"{len(ids)} tasks may fail {n} more times"


def container(run: "Run", step: "Step") -> str:
    action = step.get("action", "kill")
    if action not in ("kill", "remove", "stop"):
        raise StepFailed(f"container action {action!r}: use kill, remove or stop")
    ids = _service_task_ids(run, step) if step.get("service") is not None else run.task_ids(step.get("task"))
    client = docker.from_env(timeout=30)
    hit = []
    try:
        for task_id in ids:
            for c in client.containers.list(filters={"label": f"{LABEL_TASK}={task_id}"}):
                run.allow(task_id, 1)  # the script makes this task fail once (restart accounting)
                {"kill": c.kill, "stop": lambda c=c: c.stop(timeout=1),
                 "remove": lambda c=c: c.remove(force=True)}[action]()
                hit.append(f"{c.short_id} of {task_id[:8]}")
    finally:
        client.close()
    if not hit:
        raise StepFailed(f"no running container for {step.get('task') or 'service ' + str(step.get('service'))}")
    return f"{action}: {', '.join(hit)}"


def _service_task_ids(run: "Run", step: "Step") -> list[str]:
    """The Running tasks (desired running) of a service, or of one of its slots (`slot`)."""
    name = str(run.resolve(step.get("service")))
    tasks = run.cluster.call("service.ps", {"name": name})["tasks"]
    slot = step.get("slot")
    return [t["id"] for t in tasks if t["state"] == "Running" and t["desired"] == "running"
            and (slot is None or t.get("slot") == int(slot))]


# ---- services -----------------------------------------------------------------------------------

def service(run: "Run", step: "Step") -> str:
    """A service request (docs/protocol.md, "Services"), re-sent when unanswered or `unavailable`
    (except a rollback or a forced update: not idempotent), and recorded for the invariants: the
    replicas and version the manager acknowledged, or what an unanswered request may still set."""
    action, expect = step.get("action"), step.get("expect", "ok")
    body: dict[str, Any] = {"name": str(run.resolve(step.get("name")))}
    for key in ("replicas", "task", "update", "force"):
        if key in step.args:
            body[key] = run.resolve(step.get(key))
    if action == "create":
        task = dict(body.get("task") or {})
        task.setdefault("image", run.script.cluster.image)
        task.setdefault("command", "sleep 600")
        body["task"] = task
    once = action == "rollback" or bool(body.get("force"))
    reply, error, tries = run.api_tries(SERVICE_ACTIONS[action], body, retries=int(step.get("retries", 0 if once else 3)),
                                        timeout=float(step.get("timeout", 3.0)))
    outcome = run.record_service(action, body, tries, reply)
    if reply is None:
        assert error is not None
        said = f"service.{action} {body['name']} {outcome}: {error.code}: {error.message}"
        if expect == "ok":
            raise StepFailed(said)
        if expect == "error" and step.get("code") and error.code != step.get("code"):
            raise StepFailed(f"expected error code {step.get('code')}; {said}")
        return said
    if expect == "error":
        raise StepFailed(f"expected service.{action} {body['name']} to be refused; it was acknowledged")
    view = reply.get("service")
    if isinstance(view, dict):
        rollout = (view.get("rollout") or {}).get("state") or "none"
        return (f"service.{action} {body['name']} acknowledged: {view.get('replicas')} replicas, version "
                f"{view.get('version')}, rollout {rollout}" + (" (existing)" if reply.get("existing") else "")
                + (" (unchanged)" if reply.get("unchanged") else ""))
    return f"service.{action} {body['name']} acknowledged: {reply}"


def _service_state(run: "Run", name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reply = run.cluster.call("service.ps", {"name": name})
    return reply["service"], reply["tasks"]


#: Rollout states the manager leaves only when the script asks (an update, a rollback, a scale...).
_ROLLOUT_RESTING = ("", "completed", "paused", "rollback_paused", "rollback_completed")


def _service_mismatch(run: "Run", step: "Step", svc: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[str, bool]:
    """('' , _) when the service matches the step's conditions; else what differs, and whether it
    can still come to match without the script doing anything (a rollout that ended elsewhere
    cannot)."""
    version = int(svc.get("version") or 0)
    replicas = int(svc.get("replicas") or 0)
    rollout = svc.get("rollout") or {}
    state = str(rollout.get("state") or "")
    running = _running_slots(svc, tasks)
    want_state = step.get("rollout")
    if want_state is not None:
        want_state = "" if want_state in ("none", "") else str(want_state)
        if state != want_state:
            final = state in _ROLLOUT_RESTING or (state.startswith("rollback") and not want_state.startswith("rollback"))
            return f"rollout is {state or 'none'}, not {want_state or 'none'} ({rollout.get('message') or '-'})", not final
    if step.get("version") is not None and version != int(step.get("version")):
        return f"version is {version}, not {step.get('version')}", True
    if step.get("replicas") is not None and replicas != int(step.get("replicas")):
        return f"{replicas} replicas, not {step.get('replicas')}", True
    if step.get("running") is not None and not _count_ok(len(running), step.get("running")):
        return f"{len(running)} of {replicas} slots Running at version {version}, expected {step.get('running')}", True
    if step.get("updated") is not None and not _count_ok(len(rollout.get("done") or []), step.get("updated")):
        return (f"{len(rollout.get('done') or [])} slots updated in the rollout ({state or 'none'}), "
                f"expected {step.get('updated')}"), True
    if step.get("tasks") is not None and not _count_ok(len(tasks), step.get("tasks")):
        return f"the service has {len(tasks)} tasks, expected {step.get('tasks')}", True
    return "", True


def _wait_service(run: "Run", step: "Step", timeout: float) -> str:
    name = str(run.resolve(step.get("service")))
    t0 = time.monotonic()
    deadline = t0 + timeout
    why = ""
    while True:
        try:
            svc, tasks = _service_state(run, name)
            why, can = _service_mismatch(run, step, svc, tasks)
        except CubeError as e:  # not there (yet), or the manager is restarting: keep asking
            svc, tasks, why, can = {}, [], f"service.ps: {e.code}: {e.message}", True
        if not why:
            return f"service {name} matched after {time.monotonic() - t0:.1f}s: {_service_line(svc, tasks)}"
        if not can:
            raise StepFailed(f"service {name}: {why}; it will not change by itself{_service_events(run, name)}")
        if time.monotonic() >= deadline:
            raise StepFailed(f"service {name} after {timeout:g}s: {why}{_service_events(run, name)}")
        time.sleep(0.2)


def _running_slots(svc: dict[str, Any], tasks: list[dict[str, Any]]) -> set[int]:
    """Slots 1..replicas with a task Running (desired running) at the service's version."""
    version, replicas = int(svc.get("version") or 0), int(svc.get("replicas") or 0)
    return {int(t.get("slot") or 0) for t in tasks if t["state"] == "Running" and t["desired"] == "running"
            and t.get("version") == version and 1 <= int(t.get("slot") or 0) <= replicas}


def _service_line(svc: dict[str, Any], tasks: list[dict[str, Any]]) -> str:
    rollout = svc.get("rollout") or {}
    return (f"{len(_running_slots(svc, tasks))} of {svc.get('replicas')} slots Running at version "
            f"{svc.get('version')} ({svc.get('running')} Running tasks), rollout {rollout.get('state') or 'none'}")


def _service_events(run: "Run", name: str) -> str:
    """The service's latest events, for a failure message."""
    try:
        events = run.cluster.call("service.inspect", {"name": name}).get("events") or []
    except CubeError:
        return ""
    return ("; latest events: " + " | ".join(str(e.get("message")) for e in events[-4:])) if events else ""


# ---- raw messages ---------------------------------------------------------------------------------

SOCKET_KIND = {"api": zmq.DEALER, "workers": zmq.DEALER, "store": zmq.DEALER, "scheduler": zmq.DEALER,
               "metrics": zmq.PUB, "events": zmq.XSUB}
METRICS_TOPIC = b"node.metrics"


def send(run: "Run", step: "Step") -> str:
    to = step.get("to")
    if to not in SOCKET_KIND:
        raise StepFailed(f"send to {to!r}: use one of {', '.join(SOCKET_KIND)}")
    frames, msg_id, msg = _frames(run, step)
    if to == "api" and msg is not None and msg.get("type") == "task.start" and isinstance(msg.get("body"), dict) \
            and isinstance(msg["body"].get("task"), dict) and isinstance(msg["body"]["task"].get("id"), str):
        run.asking(msg["body"]["task"]["id"])
    kind = SOCKET_KIND[to]
    if kind == zmq.PUB and not step.get("frames"):
        frames = [METRICS_TOPIC, *frames]  # the topic the scheduler subscribes to
    times, expect = int(step.get("times", 1)), step.get("expect", "any" if kind == zmq.DEALER else "none")
    ctx = zmq.Context.instance()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    identity = run.resolve(step.get("identity")) if step.get("identity") else f"chaos-{uuid.uuid4().hex[:8]}"
    if kind == zmq.DEALER:
        sock.setsockopt(zmq.IDENTITY, str(identity).encode())
    curve = _credentials(run, step, to, str(identity))
    if curve is not None:
        curve.apply(sock)
    said_disrupt, borrowed = "", ""
    if to == "workers" and str(identity) in run.worker_names():
        # A borrowed worker identity takes that worker's route while this socket lives: the worker
        # may miss replies and commands (a disruption until the socket is closed).
        borrowed = f"borrowed:{uuid.uuid4().hex[:8]}"
        said_disrupt = "; " + run.disrupt(str(identity), "identity borrowed by a send step", borrowed)
    try:
        sock.connect(run.cluster.endpoints[to])
        if kind != zmq.DEALER:
            time.sleep(0.3)  # PUB/SUB joins late: give the connection time, or the frames vanish
        for _ in range(times):
            sock.send_multipart(frames)
        replies, other = _replies(sock, times, float(step.get("timeout", 2.0))) if kind == zmq.DEALER else ([], [])
    finally:
        sock.close(linger=0)
        if borrowed:
            run.end_disruption(borrowed)
    if to == "api" and msg is not None:
        _record_api(run, msg, replies, times)
    said = _judge(run, step, to, expect, replies, msg_id, times)
    return said + (f"; also received {', '.join(other)}" if other else "") + said_disrupt


def _credentials(run: "Run", step: "Step", to: str, identity: str) -> Any:
    """What a send step presents on a CURVE socket (docs/chaos.md, "send"): the admin credentials
    on the api and events sockets; on the workers and metrics sockets, the key of the worker
    `identity` names (a second process of that worker), or a stranger's key for any other
    identity (it may connect to the workers socket but has not joined). With no identity, a
    stranger on the workers socket and the first worker on the metrics socket (a stranger could
    not publish at all). `credentials = "none"` sends in plaintext: refused at handshake."""
    cluster = run.cluster
    if cluster.insecure or to in ("store", "scheduler") or step.get("credentials") == "none":
        return None
    if to in ("api", "events"):
        return cluster.credentials().curve()
    names = run.worker_names()
    if identity in names:
        return cluster.worker_curve(identity)
    if to == "metrics" and not step.get("identity") and names:
        return cluster.worker_curve(sorted(names)[0])
    from cube.security.curve import CurveClient
    from cube.security.keys import Keypair
    return CurveClient(Keypair.generate(), cluster.credentials().server_key.encode())


def _record_api(run: "Run", msg: dict[str, Any], replies: list[Any], times: int) -> None:
    """A task.start or task.stop sent by hand counts like one made by a start or stop step."""
    body = msg.get("body") if isinstance(msg.get("body"), dict) else {}
    oks = [r for r in replies if not isinstance(r, str) and r.type == "ok"]
    doubts = [r for r in replies if not isinstance(r, str) and r.type == "error" and r.body.get("code") == "in_doubt"]
    tries = (["ok"] * len(oks) + ["none"] * (len(doubts) + max(0, times - len(replies)))
             + ["error"] * (len(replies) - len(oks) - len(doubts)))
    if msg.get("type") == "task.start" and isinstance(body.get("task"), dict) and isinstance(body["task"].get("id"), str):
        run.record_start(body["task"]["id"], tries)  # _judge records the acknowledged desired state
    elif msg.get("type") == "task.start" and isinstance(body.get("task"), dict):
        run.unnamed_starts += tries.count("none")  # created under an id the runner never learns, maybe
    elif msg.get("type") == "task.stop" and isinstance(body.get("id"), str) and not oks and "none" in tries:
        run.doubt(body["id"], "stopped")
    elif isinstance(msg.get("type"), str) and msg["type"].startswith("service."):
        action = msg["type"].partition(".")[2]
        if action in ("create", "scale", "update", "rollback", "rm"):
            run.record_service(action, body, tries, oks[0].body if oks else None)


def _frames(run: "Run", step: "Step") -> tuple[list[bytes], str | None, dict[str, Any] | None]:
    if step.get("frames") is not None:
        return [bytes.fromhex(f) for f in step.get("frames")], None, None
    if step.get("raw") is not None:
        return [bytes.fromhex(step.get("raw"))], None, None
    if step.get("raw_b64") is not None:
        return [base64.b64decode(step.get("raw_b64"))], None, None
    msg = {"v": VERSION, "id": uuid.uuid4().hex, "type": step.get("type"), "from": run.resolve(step.get("from", "chaos")),
           "ts": time.time(), "re": None, "body": run.resolve(step.get("body", {}))}
    msg.update(run.resolve(step.get("envelope", {})))
    for key in step.get("omit", []):
        msg.pop(key, None)
    return [msgpack.packb(msg, use_bin_type=True)], msg.get("id") if isinstance(msg.get("id"), str) else None, msg


def _replies(sock: zmq.Socket, times: int, timeout: float) -> tuple[list[Any], list[str]]:
    """Replies (ok / error) to what we sent, and the types of requests that came our way instead
    (with a borrowed worker identity, the manager's commands to that worker reach us)."""
    replies: list[Any] = []
    other: list[str] = []
    deadline = time.monotonic() + timeout
    while len(replies) < times and sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
        frame = sock.recv_multipart()[-1]
        try:
            env = decode(frame)
        except CubeError as e:
            replies.append(f"undecodable reply: {e}")
            continue
        if env.is_reply:
            replies.append(env)
        else:
            other.append(env.type)
    return replies, other


def _judge(run: "Run", step: "Step", to: str, expect: str, replies: list[Any], msg_id: str | None,
           times: int) -> str:
    shown = [_show(r) for r in replies]
    summary = f"{times} sent to {to}; " + (f"replies: {'; '.join(shown)}" if replies else "no reply")
    for r in replies:  # a start or stop the manager acknowledged counts, however it was sent
        if to == "api" and not isinstance(r, str) and r.type == "ok" and isinstance(r.body.get("task"), dict):
            task = r.body["task"]
            if isinstance(task.get("id"), str) and task.get("desired") in ("running", "stopped"):
                run.acknowledge(task["id"], task["desired"])
    if expect == "any":
        return summary
    if expect == "none":
        if replies:
            raise StepFailed(f"expected no reply; {summary}")
        return summary
    if len(replies) < times:
        raise StepFailed(f"expected {times} {expect} replies; {summary}")
    for r in replies:
        if isinstance(r, str) or r.type != expect:
            raise StepFailed(f"expected {expect}; {summary}")
        if expect == "error" and step.get("code") and r.body.get("code") != step.get("code"):
            raise StepFailed(f"expected error code {step.get('code')}; {summary}")
        if msg_id and r.re != msg_id:
            raise StepFailed(f"reply re={r.re!r} does not point at the request {msg_id}; {summary}")
    return summary


def _show(r: Any) -> str:
    if isinstance(r, str):
        return r
    if r.type == "error":
        return f"error {r.body.get('code')}: {str(r.body.get('message'))[:80]}"
    keys = ",".join(sorted(r.body)[:4])
    return f"ok {{{keys}}}" + (" existing" if r.body.get("existing") else "")


# ---- faults -------------------------------------------------------------------------------------------

def fault(run: "Run", step: "Step") -> str:
    run.rule_seq += 1
    rule = Rule(id=str(step.get("as") or f"r{run.rule_seq}"), action=step.get("action"),
                sender=run.actor_name(step.get("from", "*")), type=step.get("type", "*"),
                to=run.actor_name(step.get("to", "*")),
                count=int(step.get("count")) if step.get("count") is not None else None,
                until=time.time() + float(step.get("for")) if step.get("for") is not None else None,
                delay=float(step.get("delay", 0.0)), copies=int(step.get("copies", 2)),
                window=int(step.get("window", 3)), hold=float(step.get("hold", 1.0)),
                payload=str(step.get("payload", "")))
    # A rule that can make a worker it names look lost (docs/chaos.md, "Disruption windows")
    # disrupts it until its `for` ends or it is cleared (a count-only rule: until cleared).
    run.end_disruption(f"rule:{rule.id}")  # a rule replaced by one with the same id ends
    named = invariants.rule_targets(rule.sender if step.get("from") is not None else None,
                                    rule.to if step.get("to") is not None else None, run.worker_names())
    said = "".join("; " + run.disrupt(w, f"rule {rule.id}", f"rule:{rule.id}", rule.until)
                   for w in sorted(named) if invariants.rule_disrupts(rule, w))
    run.cluster.rules.add(rule)
    time.sleep(0.2)  # injectors look at the rules file at most every 100 ms
    return f"rule {rule.id}: {rule.describe()}{said}"


def clear(run: "Run", step: "Step") -> str:
    n = run.cluster.rules.remove(step.get("rule"))
    if step.get("rule"):
        run.end_disruption(f"rule:{step.get('rule')}")
    else:
        run.end_disruption("rule:", prefix=True)
    time.sleep(0.2)
    return f"{n} rules cleared"


# ---- processes --------------------------------------------------------------------------------------

def _signal(name: str) -> int:
    name = name.upper()
    return int(getattr(signals, name if name.startswith("SIG") else "SIG" + name))


def _disrupt(run: "Run", target: str, sig: int) -> str:
    """A worker about to be signalled: its disruption window opens before the signal (restart
    accounting, and the watcher's excuse for a partition's overlapping containers; docs/chaos.md).
    SIGSTOP: paused until resumed; SIGCONT: the pause ends; any other signal: down until the
    worker is restarted (or the end of the run, if it survives the signal)."""
    if target not in run.script.cluster.workers:
        return ""
    worker = run.cluster.worker_name(target)
    if sig == signals.SIGCONT:
        run.end_disruption(f"paused:{target}")
        return ""
    if sig == signals.SIGSTOP:
        return "; " + run.disrupt(worker, "paused", f"paused:{target}")
    run.end_disruption(f"paused:{target}")  # a paused worker killed: down from now on
    return "; " + run.disrupt(worker, f"{signals.Signals(sig).name}", f"down:{target}")


def kill(run: "Run", step: "Step") -> str:
    target, sig = run.target_name(step.get("target")), _signal(step.get("signal", "KILL"))
    said = _disrupt(run, target, sig)
    pid = run.cluster.signal(target, sig)
    if sig == signals.SIGSTOP:
        run.paused.add(target)
    elif sig == signals.SIGCONT:
        run.paused.discard(target)
    if sig in (signals.SIGKILL, signals.SIGTERM) and target in run.process_targets():
        run.down.add("cube-manager" if target == "supervisor" else target)
    return f"{signals.Signals(sig).name} -> {target} (pid {pid}){said}"


def pause(run: "Run", step: "Step") -> str:
    target = run.target_name(step.get("target"))
    said = _disrupt(run, target, signals.SIGSTOP)
    pid = run.cluster.signal(target, signals.SIGSTOP)
    run.paused.add(target)
    if step.get("for") is None:
        return f"SIGSTOP -> {target} (pid {pid}){said}"
    time.sleep(float(step.get("for")))
    run.cluster.signal(target, signals.SIGCONT)
    run.paused.discard(target)
    run.end_disruption(f"paused:{target}")
    return f"SIGSTOP -> {target} (pid {pid}), SIGCONT after {float(step.get('for')):g}s{said}"


def resume(run: "Run", step: "Step") -> str:
    target = run.target_name(step.get("target"))
    pid = run.cluster.signal(target, signals.SIGCONT)
    run.paused.discard(target)
    run.end_disruption(f"paused:{target}")
    return f"SIGCONT -> {target} (pid {pid})"


def restart(run: "Run", step: "Step") -> str:
    target = run.target_name(step.get("target"))
    target = "cube-manager" if target == "supervisor" else target
    if run.cluster.alive(target):
        raise StepFailed(f"{target} is still running; kill it first")
    if target == "cube-manager":
        run.cluster.start_manager(wait=step.get("wait", True))
    elif target in run.script.cluster.workers:
        run.cluster.start_worker(target, wait=step.get("wait", True))
        run.end_disruption(f"down:{target}")  # back (ready, unless wait = false): + grace + margin
    else:
        raise StepFailed(f"restart {target!r}: only cube-manager or a worker (actors restart by themselves)")
    run.down.discard(target)
    return f"{target} started" + (" and ready" if step.get("wait", True) else "")


# ---- waiting and asserting ---------------------------------------------------------------------------

def wait(run: "Run", step: "Step") -> str:
    timeout = float(step.get("timeout", run.script.cluster.settle))
    if step.get("for") is not None:
        time.sleep(float(step.get("for")))
        return f"slept {float(step.get('for')):g}s"
    if step.get("log") is not None:
        checks = _log_checks(run, step)
        t0 = time.monotonic()
        try:
            wait_for(lambda: not _log_problems(run, checks), timeout, "log lines")
        except TimeoutError:
            raise StepFailed(f"after {timeout:g}s: {'; '.join(_log_problems(run, checks))}") from None
        return f"log lines found after {time.monotonic() - t0:.1f}s"
    if step.get("service") is not None:
        return _wait_service(run, step, timeout)
    if step.get("workers_ready"):
        for short in run.live_workers():
            run.cluster.wait_worker_ready(short, timeout)
        return f"workers ready: {', '.join(run.live_workers())}"
    if step.get("node"):
        name = run.actor_name(step.get("node"))
        want = step.get("state", "ready")  # exactly: "remembered" is not "ready" (docs/chaos.md)
        t0 = time.monotonic()
        try:
            wait_for(lambda: _node(run, name).get("state") == want, timeout, f"node {name} {want}")
        except TimeoutError as e:
            raise StepFailed(str(e)) from None
        return f"node {name} {want} after {time.monotonic() - t0:.1f}s"
    match = dict(step.get("match", {}))
    if step.get("state"):
        match["state"] = step.get("state")
    t0 = time.monotonic()
    for task_id in run.task_ids(step.get("task")):
        _wait_task(run, task_id, match, timeout)
    return f"{step.get('task')} matched {match} after {time.monotonic() - t0:.1f}s"


def _wait_task(run: "Run", task_id: str, match: dict[str, Any], timeout: float) -> None:
    try:
        wait_for(lambda: not _mismatch(run, run.task(task_id), match), timeout, f"task {task_id[:8]} {match}")
    except TimeoutError:
        t = run.task(task_id)
        raise StepFailed(f"task {task_id[:8]} did not match {match} in {timeout:g}s: "
                         f"{_mismatch(run, t, match)}; reason: {t.get('reason')}") from None


def _mismatch(run: "Run", task: dict[str, Any], match: dict[str, Any]) -> str:
    """'' when the task matches; else what differs. A value '!x' means 'anything but x', '~x'
    'a string containing x' (a reason naming a port)."""
    for key, want in match.items():
        want = run.resolve(want)
        if key == "worker" and isinstance(want, str):
            want = ("!" + run.actor_name(want[1:])) if want.startswith("!") else run.actor_name(want)
        have = task.get(key)
        if isinstance(want, str) and want.startswith("~"):
            if want[1:] not in str(have or ""):
                return f"{key} is {have!r}, which does not contain {want[1:]!r}"
        elif isinstance(want, str) and want.startswith("!"):
            if str(have) == want[1:]:
                return f"{key} is {have!r}"
        elif have != want:
            return f"{key} is {have!r}, not {want!r}"
    return ""


def _node(run: "Run", name: str) -> dict[str, Any]:
    return {n["name"]: n for n in run.cluster.call("node.ls")["nodes"]}.get(name, {})


def _log_checks(run: "Run", step: "Step") -> list[tuple[str, str, Any]]:
    """The step's `log` table(s) as (log name, text, count), templates resolved once."""
    raw = step.get("log")
    checks = []
    for c in raw if isinstance(raw, list) else [raw]:
        target = run.target_name(c["target"])
        # cube-manager's processes (supervisor, store, scheduler, manager) share one log
        name = f"worker-{target}" if target in run.script.cluster.workers else "manager"
        checks.append((name, str(run.resolve(c["contains"])), c.get("count", ">=1")))
    return checks


def _log_problems(run: "Run", checks: list[tuple[str, str, Any]]) -> list[str]:
    """What does not hold of `log` checks: lines of a process's log (in the cluster's temp dir)
    containing a text, counted."""
    problems = []
    for name, text, count in checks:
        n = sum(text in line for line in run.cluster.log(name).splitlines())
        if not _count_ok(n, count):
            problems.append(f"{name}.log has {n} lines containing {text!r}, expected {count}")
    return problems


def check_assert(run: "Run", step: "Step") -> str:
    said = []
    if step.get("log") is not None:
        checks = _log_checks(run, step)
        problems = _log_problems(run, checks)
        if problems:
            raise StepFailed("; ".join(problems))
        said += [f"{name}.log: {text!r} {count}" for name, text, count in checks]
    if step.get("node"):
        name = run.actor_name(step.get("node"))
        state = _node(run, name).get("state")
        if state != step.get("state", "ready"):
            raise StepFailed(f"node {name} is {state}, expected {step.get('state', 'ready')}")
        said.append(f"node {name} {state}")
    if step.get("service") is not None:
        name = str(run.resolve(step.get("service")))
        svc, tasks = _service_state(run, name)
        why, _ = _service_mismatch(run, step, svc, tasks)
        if why:
            raise StepFailed(f"service {name}: {why}")
        said.append(f"service {name}: {_service_line(svc, tasks)}, {len(tasks)} tasks")
    elif step.get("tasks") is not None:
        n = len(invariants.all_tasks(run.cluster))
        if n != int(step.get("tasks")):
            raise StepFailed(f"the manager knows {n} tasks, expected {step.get('tasks')}")
        said.append(f"{n} tasks")
    for task_id in run.task_ids(step.get("task")) if step.get("task") else []:
        reply = run.cluster.call("task.inspect", {"id": task_id})
        problem = _mismatch(run, reply["task"], step.get("match", {}))
        if problem:
            raise StepFailed(f"task {task_id[:8]}: {problem} (reason: {reply['task'].get('reason')})")
        for text, count in step.get("reasons", {}).items():
            text = str(run.resolve(text))
            n = sum(text in (e.get("reason") or "") for e in reply["events"])
            if not _count_ok(n, count):
                raise StepFailed(f"task {task_id[:8]}: {n} events say {text!r}, expected {count}")
        if step.get("containers") is not None:
            # every container of the task that is not exited/dead: created, paused and restarting
            # ones count too (docs/chaos.md, `assert`)
            live = [c for c in run.cluster.containers(all_=True) if c.labels.get(LABEL_TASK) == task_id
                    and c.status in invariants.LIVE_CONTAINER_STATUSES]
            if len(live) != int(step.get("containers")):
                shown = ", ".join(f"{c.short_id} {c.status}" for c in live)
                raise StepFailed(f"task {task_id[:8]} has {len(live)} live containers ({shown or 'none'}), "
                                 f"expected {step.get('containers')}")
        said.append(f"{task_id[:8]} ok")
    return "holds: " + ", ".join(said)


def _count_ok(n: int, want: Any) -> bool:
    """`want` is a number (exactly) or a string such as ">=1", "<3"."""
    if isinstance(want, int):
        return n == want
    m = re.fullmatch(r"\s*(>=|<=|>|<|==)?\s*(\d+)\s*", str(want))
    if not m:
        raise StepFailed(f"bad count {want!r}: use a number or >=N, <=N, >N, <N")
    op, k = m.group(1) or "==", int(m.group(2))
    return {">=": n >= k, "<=": n <= k, ">": n > k, "<": n < k, "==": n == k}[op]


def check(run: "Run", step: "Step") -> str:
    ok = run.check_invariants(step.get("invariants"), float(step.get("settle", run.script.cluster.settle)))
    if not ok:
        raise StepFailed("an invariant does not hold")
    return "invariants hold"


def join(run: "Run", step: "Step") -> str:
    n = run.join_background(float(step.get("timeout", 120)))
    if run.background_errors:
        raise StepFailed("; ".join(run.background_errors))
    return f"{n} background steps done"


STEPS = {"start": start, "stop": stop, "send": send, "fault": fault, "clear": clear, "kill": kill,
         "pause": pause, "resume": resume, "restart": restart, "container": container, "wait": wait,
         "assert": check_assert, "check": check, "join": join, "allow": allow, "service": service}
