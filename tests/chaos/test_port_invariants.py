"""Fixed host ports in the chaos invariants and runner (docs/chaos.md; issue 15): a task that waits
for a port a Running task holds has reached what it can, and a service that pins a port never gets
a start-first excuse for a second live task in a slot; `${free_port.NAME}` resolves once per run."""
from __future__ import annotations

import threading
import types

from cube.chaos import invariants as inv
from cube.chaos import runner as chaos_runner
from cube.chaos import steps as chaos_steps
from cube.chaos.invariants import Expect
from tests.chaos.test_invariants import W1, W2, C, problems, snap, task
from tests.chaos.test_service_invariants import rep, service_snap, svc, three

READY = {W1: {"name": W1, "state": "ready", "address": "127.0.0.1"},
         W2: {"name": W2, "state": "ready", "address": "127.0.0.1"}}


def holder_and_waiter(port: int = 13623, **waiter: object) -> tuple[list[dict], list[C]]:
    a = task("a", ports=[f"{port}:80/tcp"], host_ports={"80/tcp": port}, container_id="ca")
    b = task("b", state="Pending", worker="", attempt=0, ports=[f"{port}:80/tcp"],
             reason=f"no worker has host port {port}/tcp free", **waiter)
    return [a, b], [C("ca", "a", ports={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]})]


def test_a_task_waiting_for_a_port_a_running_task_holds_has_reached_what_it_can():
    tasks, cs = holder_and_waiter()
    s = snap(tasks, cs, nodes=READY)
    assert problems("desired-state", s) == []
    assert "1 Pending for a host port a Running task holds (b)" in inv.desired_state(s)[1]
    # Failed with a restart to come waits the same way; Failed for good is settled anyway
    failed = {**tasks[1], "state": "Failed", "attempt": 1, "restart_count": 1}
    assert problems("desired-state", snap([tasks[0], failed], cs, nodes=READY)) == []


def test_waiting_is_not_excused_when_the_port_is_free_somewhere_or_held_by_no_running_task():
    tasks, cs = holder_and_waiter()
    other = {**READY, "xtok-w3": {"name": "xtok-w3", "state": "ready", "address": "127.0.0.2"}}
    assert "b (n-b): Pending" in problems("desired-state", snap(tasks, cs, nodes=other))[0]
    stopped = {**tasks[0], "state": "Completed", "desired": "stopped"}  # nothing holds it any more
    assert problems("desired-state", snap([stopped, tasks[1]], [], nodes=READY))
    no_port = {**tasks[1], "ports": ["80/tcp"]}  # a task without a fixed port has no excuse
    assert problems("desired-state", snap([tasks[0], no_port], cs, nodes=READY))
    assert problems("desired-state", snap(tasks, cs, nodes={}))  # no ready worker: nothing to wait for
    stopping = {**tasks[1], "desired": "stopped"}  # desired stopped must end, not wait
    assert problems("desired-state", snap([tasks[0], stopping], cs, nodes=READY,
                                          expect={"a": Expect(), "b": Expect(desired="stopped")}))


def test_a_service_pinning_a_port_gets_no_start_first_excuse():
    second = rep("web", 2, version=2, state="Scheduled", worker=W2, created=2.0, tid="new2")
    pinned = svc(version=2, state="updating", previous_version=1, order="start-first",
                 spec={"image": "busybox", "command": "sleep 600", "ports": ["8081:80"]})
    assert "slot 2 has 2 live tasks" in problems("service-slots", service_snap(three() + [second], [pinned]))[0]
    unpinned = svc(version=2, state="updating", previous_version=1, order="start-first")
    assert problems("service-slots", service_snap(three() + [second], [unpinned])) == []
    was_pinned = svc(version=2, state="updating", previous_version=1, order="start-first",
                     previous_spec={"image": "busybox", "command": "sleep 600", "ports": ["8081:80/tcp"]})
    assert problems("service-slots", service_snap(three() + [second], [was_pinned]))


def test_free_port_templates_resolve_once_per_name():
    picked = iter([20001, 20001, 20002, 20003])
    run = chaos_runner.Run.__new__(chaos_runner.Run)
    run.free_ports, run._lock, run.aliases = {}, threading.Lock(), {}
    run.script = types.SimpleNamespace(cluster=types.SimpleNamespace(workers=["w1"]))
    run.cluster = types.SimpleNamespace(_free_port=lambda: next(picked), token="xtok")
    assert run.resolve("${free_port.P}") == 20001  # a whole template keeps the type: an int
    assert run.resolve(["${free_port.P}:80", "${free_port.Q}:81"]) == ["20001:80", "20002:81"]  # Q skips P's number
    assert run.resolve({"80/tcp": "${free_port.P}"}) == {"80/tcp": 20001}
    assert chaos_steps._mismatch(run, {"reason": "no worker has host port 20001/tcp free"},
                                 {"reason": "~host port ${free_port.P}/tcp"}) == ""
    assert "does not contain" in chaos_steps._mismatch(run, {"reason": "placed"}, {"reason": "~host port"})
