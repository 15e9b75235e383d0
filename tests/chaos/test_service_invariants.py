"""The chaos invariants about services, as pure functions of a Snapshot (docs/chaos.md, "Services").

Service tasks are created by the manager, not by the script: these tests check the
`service-slots` invariant, how desired-state, restarts, nothing-lost and store-matches judge
tasks the script never started, how the runner records service requests (acknowledged,
refused, unanswered), and the `service` step and the service forms of `wait`, `assert`,
`allow` and `container`, without a cluster.
"""
from __future__ import annotations

from typing import Any

import pytest

from cube.chaos import invariants as inv
from cube.chaos import runner as chaos_runner
from cube.chaos import script as chaos_script
from cube.chaos import steps as chaos_steps
from cube.chaos.invariants import (
    ACKED,
    REFUSED,
    UNANSWERED,
    Expect,
    ServiceExpect,
    Snapshot,
    Window,
)
from cube.wire.errors import CubeError, Unavailable
from tests.chaos.test_invariants import (
    W1,
    W2,
    C,
    FakeClient,
    FakeTarget,
    ev,
    fake_run,
    node_rows,
    task,
)

ALL = {"manager": "", "store": "", "scheduler": ""}


def rep(name: str, slot: int, version: int = 1, state: str = "Running", desired: str = "running",
        worker: str = W1, created: float = 1.0, **kw: Any) -> dict[str, Any]:
    """A service's task, as task.ls shows it."""
    tid = kw.pop("tid", f"{name}{slot}v{version}{'x' if desired == 'stopped' else ''}")
    t = task(tid, state=state, desired=desired, worker=worker, service=name, slot=slot, version=version,
             created_at=created, restart={"name": "always", "max_restarts": 10}, **kw)
    t["name"] = f"{name}.{slot}.{tid[:8]}"
    return t


def svc(name: str = "web", replicas: int = 3, version: int = 1, state: str = "", previous_version: int = 0,
        order: str = "stop-first", **kw: Any) -> dict[str, Any]:
    """A service.ls row (the manager's view: the record plus `running`)."""
    row = {"name": name, "spec": {"image": "busybox", "command": "sleep 600", "env": {"V": "<hidden>"}},
           "replicas": replicas, "version": version, "previous_spec": None, "previous_version": previous_version,
           "update": {"parallelism": 1, "delay": 0.0, "monitor": 5.0, "failure_action": "rollback",
                      "max_failure_ratio": 0.0, "order": order},
           "rollout": {"state": state, "from_version": 0, "to_version": 0, "failed": [], "done": [], "message": "",
                       "started_at": 0.0, "updated_at": 0.0, "batches": 0, "settled_at": 0.0},
           "created_at": 1.0, "updated_at": 1.0, "running": replicas}
    row.update(kw)
    return row


def stored_record(row: dict[str, Any], env: str = "1") -> dict[str, Any]:
    """The Store's record of a service: unredacted spec, its events, no `running`."""
    rec = {k: v for k, v in row.items() if k != "running"}
    rec["spec"] = {**row["spec"], "env": {"V": env}}
    rec["events"] = [{"time": 1.0, "message": "created"}]
    return rec


def service_snap(tasks: list[dict[str, Any]], rows: list[dict[str, Any]], expect: dict[str, ServiceExpect] | None = None,
                 plain: list[dict[str, Any]] = (), containers: list[C] | None = None, **kw: Any) -> Snapshot:
    """A snapshot of service tasks (not started by the script) and plain tasks (the script's)."""
    everything = list(tasks) + list(plain)
    by_id = {t["id"]: t for t in everything}
    if containers is None:
        containers = [C(t["container_id"], t["id"], t["attempt"], t["worker"]) for t in everything
                      if t["state"] == "Running"]
    services = {r["name"]: r for r in rows}
    s = Snapshot(by_id, containers, {t["id"]: Expect() for t in plain}, stored={tid: dict(t) for tid, t in by_id.items()},
                 services=services, stored_services={n: stored_record(r) for n, r in services.items()},
                 service_ps={n: {t["id"] for t in tasks if t.get("service") == n} for n in services},
                 service_expect=expect if expect is not None else {r["name"]: ServiceExpect(
                     replicas=r["replicas"], version=r["version"]) for r in rows})
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def problems(name: str, s: Snapshot) -> list[str]:
    return inv.CHECKS[name](s)[0]


def three() -> list[dict[str, Any]]:
    return [rep("web", k, worker=(W1, W2)[k % 2]) for k in (1, 2, 3)]


# ---- service-slots ----------------------------------------------------------------------------------

def test_a_converged_service_passes_every_check():
    tasks = three()
    old = rep("web", 2, state="Completed", desired="stopped", created=0.5, tid="old2")  # replaced long ago
    plain = [task("p", worker=W2)]
    nodes, sched = node_rows({W1: ["web2v1"], W2: ["web1v1", "web3v1", "p"]}, {})
    s = service_snap(tasks + [old], [svc()], plain=plain, workers=[W1, W2], nodes=nodes, sched=sched, pings=ALL)
    s.watched = {c.id for c in s.containers}
    results = inv.evaluate(s)
    assert {n: p for n, (p, _) in results.items() if p} == {}
    assert "1 service: at most one live task per slot" in results["service-slots"][1]
    assert "1 converged (3 slots Running at their version)" in results["service-slots"][1]
    assert "4 service tasks at theirs" in results["desired-state"][1]  # the stopped one too


def test_two_live_tasks_in_one_slot_are_caught():
    tasks = three() + [rep("web", 2, state="Pending", worker="", created=2.0, tid="dup2")]
    got = problems("service-slots", service_snap(tasks, [svc()]))
    assert len(got) == 1 and got[0].startswith("service web: slot 2 has 2 live tasks: ") and "dup2" in got[0]
    # a task that failed for good, or was stopped, does not hold the slot any more
    for gone in (rep("web", 2, state="Failed", created=2.0, tid="dead2", restart_count=10, exit_code=1),
                 rep("web", 2, state="Running", desired="stopped", created=2.0, tid="stop2")):
        assert problems("service-slots", service_snap(three() + [gone], [svc()])) == []


def test_a_second_live_task_is_excused_only_by_start_first_or_a_drain_and_never_a_third():
    second = rep("web", 2, version=2, state="Scheduled", worker=W2, created=2.0, tid="new2")
    tasks = three() + [second]
    updating = svc(version=2, state="updating", previous_version=1, order="start-first")
    assert problems("service-slots", service_snap(tasks, [updating])) == []
    stop_first = svc(version=2, state="updating", previous_version=1)
    assert "slot 2 has 2 live tasks" in problems("service-slots", service_snap(tasks, [stop_first]))[0]
    nodes = {W1: {"name": W1, "state": "ready", "availability": "drain"}, W2: {"name": W2, "state": "ready"}}
    drained = service_snap([*three()[:1], rep("web", 2, worker=W1), three()[2],
                            rep("web", 2, state="Pending", worker="", created=2.0, tid="new2")], [svc()], nodes=nodes)
    assert problems("service-slots", drained) == []  # the old one waits for its replacement elsewhere
    third = rep("web", 2, version=2, state="Pending", worker="", created=3.0, tid="new2b")
    assert "slot 2 has 3 live tasks" in problems("service-slots", service_snap(tasks + [third], [updating]))[0]


def test_a_live_task_above_the_replicas_is_caught():
    tasks = three() + [rep("web", 4, worker=W2)]
    got = problems("service-slots", service_snap(tasks, [svc(replicas=3)]))
    assert got == [f"service web: slot 4 is above its 3 replicas but has 1 live task(s): web4v1 v1 Running on {W2}, "
                   "desired running"]
    stopped = rep("web", 4, state="Completed", desired="stopped", worker=W2)  # scaled down: fine
    assert problems("service-slots", service_snap(three() + [stopped], [svc(replicas=3)])) == []


def test_without_an_active_rollout_every_slot_runs_the_services_version():
    behind = [rep("web", 1), rep("web", 2, version=2), rep("web", 3, version=2)]
    got = problems("service-slots", service_snap(behind, [svc(version=2, state="completed", previous_version=1)],
                                                 expect={"web": ServiceExpect(replicas=3, version=2)}))
    assert got == [f"service web (rollout completed): 2 of 3 slots Running at version 2; slot 1: web1v1 v1 Running "
                   f"on {W1}, desired running (-)"]
    # while the update runs that is expected; a paused one is not converged
    assert problems("service-slots", service_snap(behind, [svc(version=2, state="updating", previous_version=1)],
                                                  expect={"web": ServiceExpect(replicas=3, version=2)})) == []
    paused = problems("service-slots", service_snap(behind, [svc(version=2, state="paused", previous_version=1)],
                                                    expect={"web": ServiceExpect(replicas=3, version=2)}))
    assert len(paused) == 1 and "(rollout paused): 2 of 3 slots" in paused[0]
    pending = [rep("web", 1), rep("web", 2), rep("web", 3, state="Pending", worker="", reason="no room")]
    got = problems("service-slots", service_snap(pending, [svc()]))
    assert got == ["service web (rollout none): 2 of 3 slots Running at version 1; slot 3: web3v1 v1 Pending, "
                   "desired running (no room)"]
    empty = problems("service-slots", service_snap([], [svc(replicas=2)]))
    assert empty == ["service web (rollout none): 0 of 2 slots Running at version 1; slot 1: no task; slot 2: no task"]


def test_the_replicas_and_version_must_be_what_the_manager_acknowledged():
    s = service_snap(three(), [svc()], expect={"web": ServiceExpect(replicas=5)})
    assert problems("service-slots", s) == ["service web: 3 replicas, but the manager acknowledged 5"]
    s.service_expect["web"].replicas_doubt = {3}  # a scale to 3 that got no answer may have been applied
    assert problems("service-slots", s) == []
    v2 = ServiceExpect(replicas=3, version=2, previous_version=1)
    s = service_snap(three(), [svc(version=1, state="completed", previous_version=2)], expect={"web": v2})
    assert problems("service-slots", s) == [
        "service web: version 1 (rollout completed), but the manager acknowledged version 2"]
    # an automatic rollback goes back to the version before the acknowledged one: the rollout says so
    for state in ("rollback_started", "rollback_completed"):
        s = service_snap(three(), [svc(version=1, state=state, previous_version=2)], expect={"web": v2})
        assert problems("service-slots", s) == []


def test_services_nobody_asked_for_and_acknowledged_ones_that_vanished():
    s = service_snap(three(), [svc()], expect={})
    assert problems("service-slots", s) == ["service web: listed by the manager, but the script never asked for it"]
    gone = service_snap([], [], expect={"api": ServiceExpect(replicas=2)})
    assert problems("service-slots", gone) == ["service api: acknowledged but not in service.ls: its slots cannot be checked"]
    assert problems("nothing-lost", gone) == ["service api: acknowledged but missing from service.ls",
                                              "service api: acknowledged but not in the Store"]
    unread = service_snap(three(), [svc()])
    unread.services = None
    assert problems("service-slots", unread) == ["service.ls could not be read"]


def test_service_ps_must_list_the_services_tasks_that_task_ls_has():
    s = service_snap(three(), [svc()])
    s.service_ps["web"] = {"web1v1", "web2v1", "ghost"}
    assert problems("service-slots", s) == ["service web: service.ps and task.ls disagree: only service.ps lists "
                                            "ghost; service.ps misses web3v1"]


# ---- the task invariants and tasks the script never started ------------------------------------------

def test_service_tasks_must_reach_the_desired_state_the_manager_gave_them():
    stuck = three() + [rep("web", 2, state="Running", desired="stopped", created=0.5, tid="old2")]
    got = problems("desired-state", service_snap(stuck, [svc()]))
    assert got == ["old2 (web.2.old2, service web slot 2): Running, desired stopped ()"]
    pending = [rep("web", 1, state="Pending", worker="", reason="no worker")]
    assert problems("desired-state", service_snap(pending, [svc(replicas=1)])) == [
        "web1v1 (web.1.web1v1, service web slot 1): Pending, desired running (no worker)"]
    restarting = [rep("web", 1, state="Failed", restart_count=1, exit_code=137)]  # its restart is still to come
    assert problems("desired-state", service_snap(restarting, [svc(replicas=1)]))


def test_service_tasks_fail_only_as_often_as_the_script_caused():
    moved = rep("web", 1, worker=W2, attempt=2, restart_count=1)
    events = {"web1v1": [ev(1, "Scheduled", 100.0), ev(2, "Running", 101.0), ev(3, "Failed", 103.0),
                         ev(4, "Scheduled", 104.0, W2), ev(5, "Running", 105.0, W2)]}
    s = service_snap([moved], [svc(replicas=1)], events=events, at=200.0, slack=5.0)
    got = problems("restarts", s)
    assert len(got) == 2 and "1 failures (restart_count 1" in got[0] and "placed 2 times" in got[1]
    s.windows = [Window(W1, "rule r1", 102.0, 104.0)]  # w1 was cut off while the replica ran there
    assert problems("restarts", s) == []
    s.windows = []
    s.allowance = {"web1v1": 1}  # a container step killed it
    assert problems("restarts", s) == []
    s.allowance = {}
    s.service_expect["web"].allowance = {2: 1}  # `allow service = "web" version = 2`: not this version
    assert problems("restarts", s)
    s.service_expect["web"].allowance = {1: 1}
    assert problems("restarts", s) == []
    s.service_expect["web"].allowance = {0: 1}  # any version
    assert problems("restarts", s) == []
    # replaced, scaled down, removed: stopped tasks are not failures
    assert problems("restarts", service_snap([rep("web", 1, state="Completed", desired="stopped")], [svc()])) == []


def test_a_failure_stopped_before_its_restart_still_counts():
    # A rollout's replacement failed (Failed, restart to come), then the rollback stopped it: no
    # restart_count was left behind, and before, nothing was counted at all.
    t = rep("web", 1, version=2, state="Failed", desired="stopped", exit_code=3, reason="stopped; will not be restarted")
    events = {t["id"]: [ev(1, "Pending", 1.0, ""), ev(2, "Scheduled", 2.0), ev(3, "Running", 3.0),
                        ev(4, "Failed", 4.0), ev(5, "Failed", 5.0)]}  # the stop: an event, no new entry
    assert inv.failures(t) == 0 and inv.failures(t, events[t["id"]]) == 1
    s = service_snap([t], [svc(replicas=1, version=1, previous_version=2, state="rollback_completed")],
                     expect={"web": ServiceExpect(replicas=1, version=2)}, events=events)
    assert problems("restarts", s) == [
        f"{t['id']} (web.1.{t['id'][:8]}): 1 failures (restart_count 0, Failed, desired stopped, Failed 1 times in its "
        "events) but the script caused 0 (stopped; will not be restarted)"]
    s.service_expect["web"].allowance = {2: 1}  # `allow service = "web" version = 2 restarts = 1`
    assert problems("restarts", s) == []
    again = [ev(1, "Running", 1.0), ev(2, "Failed", 2.0), ev(3, "Scheduled", 3.0), ev(4, "Running", 4.0),
             ev(5, "Failed", 5.0)]
    assert inv.failed_entries(again) == 2
    full = [ev(i, "Failed", float(i)) for i in range(1, inv.INSPECT_EVENTS + 1)]
    assert inv.failed_entries(full) == 0  # the newest 200: the entry is older than the first of them


def test_every_task_was_asked_for_by_the_script_or_a_service():
    stranger = task("zz", worker=W2)
    s = service_snap(three() + [stranger], [svc()])
    assert problems("nothing-lost", s) == ["zz (n-zz): in task.ls, but the script never started it and no service owns it"]
    s.asked = {"zz"}  # its start is in flight: the reply is not recorded yet
    assert problems("nothing-lost", s) == []
    s.asked, s.unnamed_starts = set(), 1  # a start without an id got no answer: its task may be this one
    assert problems("nothing-lost", s) == []
    orphan = rep("api", 1)
    got = problems("nothing-lost", service_snap(three() + [orphan], [svc()]))
    assert got == ["api1v1 (api.1.api1v1): a task of service 'api', which no one created and the manager does not list"]
    removed = service_snap(three() + [rep("api", 1, state="Completed", desired="stopped")], [svc()],
                           expect={"web": ServiceExpect(replicas=3), "api": ServiceExpect(removed=ACKED)})
    assert problems("nothing-lost", removed) == []  # the script removed it: its tasks stay, stopped


def test_refused_and_removed_services_must_be_nowhere():
    s = service_snap(three(), [svc()], expect={"web": ServiceExpect(start=REFUSED)})
    assert problems("nothing-lost", s) == ["service web: refused but persisted (in service.ls and the Store)"]
    s.service_expect = {"web": ServiceExpect(removed=ACKED)}
    s.services = {}
    assert problems("nothing-lost", s) == ["service web: removed but still there (in the Store)"]
    s.service_expect = {"web": ServiceExpect(removed=UNANSWERED)}  # an rm that got no answer: either way
    assert problems("nothing-lost", s) == []
    s.service_expect = {"web": ServiceExpect(start=UNANSWERED)}  # a create that got no answer: either way
    assert problems("nothing-lost", s) == []
    s.stored_services = {}
    s.service_expect = {"web": ServiceExpect()}
    assert problems("nothing-lost", s) == ["service web: acknowledged but missing from service.ls",
                                           "service web: acknowledged but not in the Store"]


def test_the_stores_service_record_must_be_the_managers():
    s = service_snap(three(), [svc()])
    assert problems("store-matches", s) == []  # env values are hidden in service.ls, not in the Store
    s.stored_services["web"]["replicas"] = 2
    s.stored_services["web"]["rollout"] = {**s.stored_services["web"]["rollout"], "state": "updating"}
    got = problems("store-matches", s)
    assert len(got) == 1 and got[0].startswith("service web: the Store and service.ls differ in replicas, rollout")
    s.stored_services = {}
    assert problems("store-matches", s) == ["service web: in service.ls only"]


# ---- snapshots ----------------------------------------------------------------------------------------

def test_a_snapshot_reads_services_and_inspects_service_tasks_that_failed(monkeypatch):
    monkeypatch.setattr(inv.time, "sleep", lambda s: None)
    fine, moved = rep("web", 1), rep("web", 2, attempt=2, restart_count=1)
    row = svc(replicas=2)

    class Services(FakeTarget):
        def call(self, msg_type, body=None, timeout=3.0, endpoint="api"):
            if msg_type == "service.ls":
                self.calls.append(msg_type)
                return {"services": [row], "continue": ""}
            if msg_type == "service.ps":
                self.calls.append(f"service.ps {body['name']}")
                return {"service": row, "tasks": [fine, moved]}
            if msg_type == "store.list" and body["ns"] == "services":
                self.calls.append("store.list services")
                return {"items": [["web", stored_record(row)]], "more": False}
            if msg_type == "task.inspect":
                self.calls.append(f"task.inspect {body['id']}")
                return {"task": moved, "events": [ev(1, "Scheduled", 1.0)]}
            return super().call(msg_type, body, timeout, endpoint)
    target = Services([[fine, moved]])
    s = inv.snapshot(target, {}, [], service_expect={"web": ServiceExpect(replicas=2)}, allowance={"x": 1})
    assert s.errors == [] and s.services == {"web": row} and s.service_ps == {"web": {fine["id"], moved["id"]}}
    assert set(s.stored_services) == {"web"} and s.allowance == {"x": 1}
    assert f"task.inspect {moved['id']}" in target.calls and f"task.inspect {fine['id']}" not in target.calls
    assert set(s.events) == {moved["id"]}


# ---- the runner's record of service requests ------------------------------------------------------------

def view(replicas: int, version: int = 1, previous_version: int = 0, state: str = "") -> dict[str, Any]:
    return {"service": {"name": "web", "replicas": replicas, "version": version,
                        "previous_version": previous_version, "rollout": {"state": state}}}


def test_service_requests_are_recorded_by_outcome():
    run = fake_run()
    assert run.record_service("create", {"name": "web", "replicas": 3}, ["ok"], view(3)) == ACKED
    assert run.record_service("scale", {"name": "web", "replicas": 5}, ["none"], None) == UNANSWERED
    assert run.record_service("scale", {"name": "web", "replicas": 7}, ["error"], None) == REFUSED
    e = run.service_expectations()["web"]
    assert e.replicas_ok() == {3, 5} and e.must_exist()
    run.record_service("scale", {"name": "web", "replicas": 4}, ["none", "ok"], view(4))
    assert run.service_expectations()["web"].replicas_ok() == {4}  # a later acknowledgement settles it
    run.record_service("update", {"name": "web", "task": {"env": {"V": "2"}}}, ["none"], None)
    assert run.service_expectations()["web"].versions_ok() == {1, 2}
    run.record_service("update", {"name": "web", "task": {"env": {"V": "2"}}}, ["ok"], view(4, 2, 1, "updating"))
    run.record_service("rollback", {"name": "web"}, ["none"], None)
    assert run.service_expectations()["web"].versions_ok() == {2, 1}
    run.record_service("rm", {"name": "web"}, ["none"], None)
    assert run.service_expectations()["web"].removed == UNANSWERED
    run.record_service("rm", {"name": "web"}, ["ok"], {"name": "web", "stopped": 4})
    assert run.service_expectations()["web"].removed == ACKED and not run.service_expectations()["web"].must_exist()
    assert run.record_service("create", {"name": "web", "replicas": 2}, ["ok"], view(2)) == ACKED  # created again
    assert run.service_expectations()["web"].must_exist() and run.service_expectations()["web"].replicas == 2
    assert run.record_service("create", {"name": "api"}, ["error"], None) == REFUSED
    assert run.record_service("create", {"name": "api"}, ["error", "ok"], view(1)) == ACKED
    run.record_service("create", {"name": "api"}, ["error"], None)  # a refusal later does not undo it
    assert run.service_expectations()["api"].start == ACKED


def test_the_service_step_sends_the_body_retries_idempotent_requests_and_records_them(monkeypatch):
    monkeypatch.setattr(chaos_runner, "Client", FakeClient)
    monkeypatch.setattr(chaos_runner.time, "sleep", lambda s: None)
    sent: list[tuple[str, dict[str, Any]]] = []
    real_call = FakeClient.call

    def call(self, msg_type, body):
        sent.append((msg_type, body))
        return real_call(self, msg_type, body)
    monkeypatch.setattr(FakeClient, "call", call)
    run = fake_run()
    FakeClient.script = [Unavailable("no answer"), view(3)]
    said = chaos_steps.service(run, step("service", action="create", name="web", replicas=3,
                                         update={"monitor": 1.0}))
    assert "acknowledged: 3 replicas, version 1" in said
    assert sent[0] == ("service.create", {"name": "web", "replicas": 3, "update": {"monitor": 1.0},
                                          "task": {"image": "cube-busybox:latest", "command": "sleep 600"}})
    assert len(sent) == 2 and run.service_expectations()["web"].start == ACKED  # re-sent: idempotent
    sent.clear()
    FakeClient.script = [view(3, 2, 1, "updating")]
    chaos_steps.service(run, step("service", action="update", name="web", task={"env": {"V": "2"}}))
    FakeClient.script = [Unavailable("no answer"), view(3, 1, 2, "rollback_started")]
    with pytest.raises(chaos_steps.StepFailed) as e:  # a rollback is sent once: twice would undo it
        chaos_steps.service(run, step("service", action="rollback", name="web"))
    assert "unanswered" in str(e.value) and [t for t, _ in sent] == ["service.update", "service.rollback"]
    assert run.service_expectations()["web"].versions_ok() == {2, 1}
    FakeClient.script = [CubeError("unavailable", "the store did not answer")]
    said = chaos_steps.service(run, step("service", action="scale", name="web", replicas=9, expect="any", retries=0))
    assert "refused: unavailable" in said and run.service_expectations()["web"].replicas_ok() == {3}
    FakeClient.script = [CubeError("not_found", "no service named 'x'")]
    chaos_steps.service(run, step("service", action="rm", name="x", expect="error", code="not_found"))
    FakeClient.script = [view(3)]
    with pytest.raises(chaos_steps.StepFailed):
        chaos_steps.service(run, step("service", action="scale", name="web", replicas=3, expect="error"))


def test_a_service_request_sent_by_hand_is_recorded_too():
    run = fake_run()
    ok = type("R", (), {"type": "ok", "body": view(2)})()
    chaos_steps._record_api(run, {"type": "service.create", "body": {"name": "web", "replicas": 2, "task": {}}},
                            [ok], 1)
    chaos_steps._record_api(run, {"type": "service.scale", "body": {"name": "web", "replicas": 6}}, [], 1)
    e = run.service_expectations()["web"]
    assert e.start == ACKED and e.replicas_ok() == {2, 6}


# ---- parsing, waiting, asserting --------------------------------------------------------------------------

def step(do: str, **args: Any) -> chaos_script.Step:
    return chaos_script.parse({"cluster": {"workers": 2}, "step": [{"do": do, **args}]}).steps[0]


@pytest.mark.parametrize("raw,needle", [
    ({"do": "service", "name": "web"}, "'action' is required"),
    ({"do": "service", "action": "grow", "name": "web"}, "action 'grow'"),
    ({"do": "service", "action": "create"}, "'name' is required"),
    ({"do": "service", "action": "scale", "name": "web"}, "'replicas' is required"),
    ({"do": "service", "action": "rm", "name": "web", "replicas": 2}, "'replicas' is not for rm"),
    ({"do": "service", "action": "create", "name": "web", "task": "busybox"}, "'task' must be a table"),
    ({"do": "service", "action": "create", "name": "web", "image": "x"}, "unknown key 'image'"),
    ({"do": "wait", "running": 3}, "give service = NAME"),
    ({"do": "assert", "rollout": "completed"}, "give service = NAME"),
    ({"do": "wait", "service": "web"}, "no condition"),
    ({"do": "allow", "service": "web", "task": "a", "restarts": 1}, "not both"),
    ({"do": "allow", "version": 2, "task": "a", "restarts": 1}, "give service = NAME"),
    ({"do": "container", "slot": 2, "task": "a"}, "give service = NAME"),
    ({"do": "container", "action": "kill"}, "'task' is required (or 'service')"),
])
def test_service_steps_are_parsed_strictly(raw, needle):
    with pytest.raises(chaos_script.ScriptError) as e:
        chaos_script.parse({"step": [raw]})
    assert needle in str(e.value)


def ps_run(states: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> chaos_runner.Run:
    """A Run whose service.ps answers come from `states` (the last one repeats)."""
    run = fake_run()
    answers = list(states)

    def call(msg_type, body=None, timeout=3.0, endpoint="api"):
        if msg_type == "service.inspect":
            return {"service": answers[0][0], "events": [{"message": "update failed on 1 of 3 slots: rolling back"}]}
        row, tasks = answers.pop(0) if len(answers) > 1 else answers[0]
        return {"service": row, "tasks": tasks}
    run.cluster.call = call
    return run


def test_wait_for_a_service_polls_until_its_slots_run_the_version(monkeypatch):
    monkeypatch.setattr(chaos_steps.time, "sleep", lambda s: None)
    half = [rep("web", 1, version=2), rep("web", 2), rep("web", 3)]
    done = [rep("web", k, version=2) for k in (1, 2, 3)]
    run = ps_run([(svc(version=2, state="updating", rollout={"state": "updating", "done": [1]}), half),
                  (svc(version=2, state="completed"), done)])
    said = chaos_steps.wait(run, step("wait", service="web", version=2, running=3, rollout="completed", timeout=5))
    assert "matched" in said and "3 of 3 slots Running at version 2 (3 Running tasks), rollout completed" in said
    run = ps_run([(svc(version=2, state="updating", rollout={"state": "updating", "done": [1]}), half)])
    assert "matched" in chaos_steps.wait(run, step("wait", service="web", updated=">=1", running=1, tasks=3))
    with pytest.raises(chaos_steps.StepFailed) as e:
        chaos_steps.wait(run, step("wait", service="web", running=3, timeout=0.05))
    assert "1 of 3 slots Running at version 2, expected 3" in str(e.value)


def test_waiting_for_a_completed_update_fails_at_once_when_it_rolls_back(monkeypatch):
    monkeypatch.setattr(chaos_steps.time, "sleep", lambda s: None)
    back = svc(version=1, previous_version=2, rollout={"state": "rollback_started", "message": "rolling back"})
    run = ps_run([(back, three())])
    with pytest.raises(chaos_steps.StepFailed) as e:
        chaos_steps.wait(run, step("wait", service="web", rollout="completed", timeout=600))
    assert "rollout is rollback_started, not completed" in str(e.value) and "will not change by itself" in str(e.value)
    assert "rolling back" in str(e.value)
    # waiting for the rollback to end is fine
    run = ps_run([(back, three()), (svc(version=1, previous_version=2, state="rollback_completed"), three())])
    assert "matched" in chaos_steps.wait(run, step("wait", service="web", rollout="rollback_completed", timeout=5))


def test_assert_a_service_checks_now():
    run = ps_run([(svc(), three())])
    assert "3 tasks" in chaos_steps.check_assert(run, step("assert", service="web", running=3, tasks=3, replicas=3))
    with pytest.raises(chaos_steps.StepFailed) as e:
        chaos_steps.check_assert(run, step("assert", service="web", tasks=4))
    assert "the service has 3 tasks, expected 4" in str(e.value)
    with pytest.raises(chaos_steps.StepFailed):
        chaos_steps.check_assert(run, step("assert", service="web", version=2))


def test_allow_for_a_service_needs_a_service_the_script_created():
    run = fake_run()
    with pytest.raises(chaos_steps.StepFailed):
        chaos_steps.allow(run, step("allow", service="web", restarts=1))
    run.record_service("create", {"name": "web"}, ["ok"], view(1))
    assert "at version 2 may fail 2" in chaos_steps.allow(run, step("allow", service="web", version=2, restarts=2))
    chaos_steps.allow(run, step("allow", service="web", restarts=1))
    e = run.service_expectations()["web"]
    assert e.allowed(2) == 3 and e.allowed(1) == 1


def test_container_steps_find_a_services_running_tasks_by_slot():
    run = ps_run([(svc(), three() + [rep("web", 2, state="Completed", desired="stopped", tid="old2")])])
    assert chaos_steps._service_task_ids(run, step("container", service="web", slot=2)) == ["web2v1"]
    assert len(chaos_steps._service_task_ids(run, step("container", service="web"))) == 3
