"""Fixed host ports: the port grammar, the book's task files, and ports as a scheduled resource."""
from __future__ import annotations

import socket

import pytest

from cube.actors import metrics
from cube.actors.scheduler import SchedulerActor
from cube.model import ports
from cube.model.runspec import RunSpec, RunSpecError
from cube.model.task import TaskSpecError, task_from_spec
from cube.runtime.base import ContainerSpec, PortConflict
from cube.runtime.fake import FakeRuntime
from cube.scheduling import ClusterView, Demand
from cube.wire.envelope import Envelope

GiB = 1 << 30


# ---- the grammar -------------------------------------------------------------------------------
@pytest.mark.parametrize("item,expected", [
    (8080, "8080/tcp"), ("8080", "8080/tcp"), ("53/udp", "53/udp"), ("8081:80", "8081:80/tcp"),
    (" 8081:80/UDP ", "8081:80/udp"), ("65535:1", "65535:1/tcp"),
])
def test_port_entries(item, expected):
    assert str(ports.parse(item)) == expected


@pytest.mark.parametrize("item,says", [
    ("0:80", "host port"), ("8081:0", "container port"), ("70000:80", "host port"),
    ("127.0.0.1:8081:80", "worker's own"), ("8081:80/sctp", "protocol"), ("a:80", "host port"),
    (True, "not a port"), (8.5, "not a port"),
])
def test_bad_port_entries_say_why(item, says):
    with pytest.raises(ports.PortError, match=says):
        ports.parse(item)


def test_a_host_port_or_a_container_port_twice_is_refused():
    with pytest.raises(TaskSpecError, match="host port 8081/tcp is asked for twice"):
        task_from_spec({"image": "x", "ports": ["8081:80", "8081:90"]})
    with pytest.raises(TaskSpecError, match="container port 80/tcp is listed twice"):
        task_from_spec({"image": "x", "ports": ["8081:80", "80"]})
    # the same number over tcp and udp are two ports
    assert task_from_spec({"image": "x", "ports": ["53:53", "53:53/udp"]}).ports == ["53:53/tcp", "53:53/udp"]


def test_fixed_host_ports_and_container_keys():
    t = task_from_spec({"image": "x", "ports": ["8081:80", 9000, "5353:53/udp"]})
    assert t.fixed_ports == ["8081/tcp", "5353/udp"]
    assert [ports.container_key(p) for p in t.ports] == ["80/tcp", "9000/tcp", "53/udp"]


def test_a_health_check_on_a_fixed_port_probes_the_container_port():
    t = task_from_spec({"image": "x", "ports": ["8081:80"], "health": {"path": "/h", "port": 80}})
    assert t.health.port == "80/tcp"


def test_run_spec_checks_port_entries():
    good = {"task_id": "t", "name": "n", "image": "x", "ports": ["8081:80/tcp"]}
    assert RunSpec.from_dict(good).ports == ["8081:80/tcp"]
    with pytest.raises(RunSpecError, match="ports"):
        RunSpec.from_dict({**good, "ports": ["8081:80:90"]})


# ---- the book's task files ---------------------------------------------------------------------
BOOK_EVENT = {
    "ID": "a7aa1d44-08f6-443e-9378-f5884311019e", "State": 2,
    "Task": {"Name": "test-chapter-9.1", "Image": "cube-busybox:latest", "ExposedPorts": {"7777/tcp": {}},
             "PortBindings": {"7777/tcp": "7777"}, "HealthCheck": "/health", "RestartPolicy": ""},
}


def test_the_books_task_event_runs_with_its_port_binding_and_no_restart():
    t = task_from_spec(BOOK_EVENT)
    assert t.ports == ["7777:7777/tcp"] and t.fixed_ports == ["7777/tcp"]
    assert t.restart.name == "no"  # "" is Docker's and the book's default
    assert t.id == BOOK_EVENT["ID"]  # the Task has no ID of its own: the event's names it
    assert t.health.path == "/health"


@pytest.mark.parametrize("policy,expected", [("", "no"), ("unless-stopped", "always"), ("always", "always"),
                                             ("on-failure", "on-failure"), ("no", "no")])
def test_the_books_restart_policies(policy, expected):
    assert task_from_spec({"Image": "x", "RestartPolicy": policy}).restart.name == expected


def test_docker_portmap_bindings_and_an_unexposed_binding():
    t = task_from_spec({"Image": "x", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]}})
    assert t.ports == ["8081:80/tcp"]  # a binding exposes its port, as in Docker
    t = task_from_spec({"Image": "x", "ExposedPorts": {"80/tcp": {}}, "PortBindings": {"80/tcp": ""}})
    assert t.ports == ["80/tcp"]  # bound to no particular host port


@pytest.mark.parametrize("spec,says", [
    ({"PortBindings": {"80/tcp": [{"HostIp": "10.0.0.1", "HostPort": "8081"}]}}, "worker's own address"),
    ({"PortBindings": ["80"]}, "PortBindings must be a map"),
    ({"ports": ["8081:80"], "PortBindings": {"80/tcp": "8082"}}, "bound to host port 8081 and to 8082"),
    ({"ContainerID": "abc123"}, "'ContainerID' is what Cube reports"),
    ({"RestartCount": 2}, "'RestartCount' is what Cube reports"),
    ({"StartTime": "2024-01-01T00:00:00Z"}, "'StartTime' is what Cube reports"),
    ({"HostPorts": {"80/tcp": [{"HostPort": "1"}]}}, "'HostPorts' is what Cube reports"),
    ({"RestartPolicy": "sometimes"}, "'sometimes' is not one of"),
])
def test_book_fields_cube_would_not_honour_are_refused_with_a_reason(spec, says):
    with pytest.raises(TaskSpecError, match=says):
        task_from_spec({"Image": "x", **spec})


def test_the_books_output_fields_at_their_zero_values_are_accepted():
    t = task_from_spec({"Image": "x", "ContainerID": "", "HostPorts": None, "RestartCount": 0,
                        "StartTime": "0001-01-01T00:00:00Z", "FinishTime": "0001-01-01T00:00:00Z", "State": 3})
    assert t.image == "x"


def test_an_unknown_task_event_field_is_refused():
    with pytest.raises(TaskSpecError, match="unknown task event field 'Whatever'"):
        task_from_spec({**BOOK_EVENT, "Whatever": 1})


# ---- scheduling --------------------------------------------------------------------------------
def _view(**in_use: list[str]) -> ClusterView:
    v = ClusterView(clock=lambda: 1.0)
    for name, used in in_use.items():
        v.update({"name": name, "ts": 1, "seq": 1, "cpus": 2, "memory": 4 * GiB, "disk": GiB,
                  "ports_in_use": used}, now=0)
    return v


def test_a_fixed_port_listening_on_a_node_makes_it_infeasible():
    v = _view(w1=["8081/tcp"], w2=[])
    assert v.place("t1", Demand(ports=frozenset({"8081/tcp"})), now=1).node == "w2"
    assert v.place("t2", Demand(ports=frozenset({"8081/udp"})), now=1).node is not None  # udp is another port


def test_a_reservation_holds_the_port_until_the_sample_shows_the_task():
    v = _view(w1=[], w2=[])
    d = Demand(ports=frozenset({"8081/tcp"}))
    assert {v.place("a", d, now=1).node, v.place("b", d, now=1).node} == {"w1", "w2"}
    third = v.place("c", d, now=1)
    assert third.node is None
    assert third.reason == "no worker has host port 8081/tcp free: host port 8081/tcp is in use on w1, w2"
    v.release("a")  # the task on one of them ended
    assert v.place("c", d, now=1).node is not None


def test_the_workers_reserved_ports_hold_the_port_when_nothing_listens_yet():
    v = ClusterView()
    v.update({"name": "w1", "ts": 1, "seq": 1, "cpus": 1, "memory": GiB, "disk": GiB,
              "reserved": {"ports": ["8081/tcp"]}, "task_ids": ["a"]}, now=0)
    assert v.place("b", Demand(ports=frozenset({"8081/tcp"})), now=1).node is None


def test_a_reason_names_the_port_when_others_lack_resources():
    v = _view(w1=["8081/tcp"], w2=[])
    p = v.place("t", Demand(cpu=4, ports=frozenset({"8081/tcp"})), now=1)
    assert p.node is None
    assert p.reason.startswith("no worker has 4.0 cpu free; largest free is 2.0 on w2")
    assert "host port 8081/tcp is in use on w1" in p.reason


def test_several_ports_name_each_holder():
    v = _view(w1=["80/tcp"], w2=["443/tcp"])
    p = v.place("t", Demand(ports=frozenset({"80/tcp", "443/tcp"})), now=1)
    assert p.reason == ("no worker has host ports 443/tcp and 80/tcp free: host port 443/tcp is in use on w2; "
                        "host port 80/tcp is in use on w1")


def _scheduler(view: ClusterView) -> SchedulerActor:
    actor = SchedulerActor.__new__(SchedulerActor)  # the handler only, no sockets
    actor.view, actor.algorithm = view, __import__("cube.scheduling", fromlist=["make_scheduler"]).make_scheduler("epvm")
    return actor


def test_place_many_puts_at_most_one_replica_with_a_fixed_port_per_worker():
    actor = _scheduler(_view(w1=[], w2=[]))
    items = [{"task_id": f"web.{i}", "cpu": 0.0, "memory": 0, "disk": 0, "fixed_ports": ["8080/tcp"],
              "group": "web"} for i in range(1, 4)]
    out = actor.on_place_many(Envelope("sched.place_many", {"tasks": items}))["placements"]
    assert sorted(p["node"] for p in out[:2]) == ["w1", "w2"]
    assert out[2]["node"] is None and "8080/tcp" in out[2]["reason"]


def test_place_many_keeps_a_task_off_a_worker_where_its_port_was_taken():
    actor = _scheduler(_view(w1=[], w2=[]))
    item = {"task_id": "t", "cpu": 0.0, "memory": 0, "disk": 0, "fixed_ports": ["8080/tcp"], "exclude": ["w1"]}
    out = actor.on_place_many(Envelope("sched.place_many", {"tasks": [item]}))["placements"]
    assert out[0]["node"] == "w2"


def test_a_malformed_port_list_is_a_bad_request_not_a_crash():
    from cube.wire.errors import CubeError
    actor = _scheduler(_view(w1=[]))
    item = {"task_id": "t", "cpu": 0.0, "memory": 0, "disk": 0, "fixed_ports": "8080/tcp"}
    with pytest.raises(CubeError, match="bad demand"):
        actor.on_place_many(Envelope("sched.place_many", {"tasks": [item]}))


# ---- the worker's side ---------------------------------------------------------------------------
def test_ports_in_use_reads_the_kernels_listeners():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        metrics._LISTENERS[0] = 0.0  # no cached reading
        assert f"{port}/tcp" in metrics.ports_in_use("127.0.0.1")
        assert f"{port}/tcp" in metrics.ports_in_use("0.0.0.0")  # publishing everywhere: any listener
        metrics._LISTENERS[0] = 0.0
        assert f"{port}/tcp" not in metrics.ports_in_use("127.0.0.2")  # another address is free


def test_proc_net_addresses_decode():
    assert metrics._ip("0100007F", 4) == "127.0.0.1"
    assert metrics._ip("00000000000000000000000000000000", 6) == "::"
    assert metrics._ip("0000000000000000FFFF00000100007F", 6) == "::ffff:127.0.0.1"


def test_the_fake_runtime_refuses_a_taken_fixed_port_like_docker():
    rt = FakeRuntime()
    first = rt.run(ContainerSpec(task_id="a", attempt=1, name="a", image="x", ports=["8081:80/tcp"]))
    assert first.host_ports == {"80/tcp": 8081}
    with pytest.raises(PortConflict, match="8081/tcp"):
        rt.run(ContainerSpec(task_id="b", attempt=1, name="b", image="x", ports=["8081:90/tcp"]))
    rt.stop(first.container_id)
    assert rt.run(ContainerSpec(task_id="b", attempt=1, name="b", image="x", ports=["8081:90/tcp"])).host_ports == {
        "90/tcp": 8081}


def test_workers_sharing_an_address_share_its_ports_at_once():
    v = ClusterView(clock=lambda: 1.0)
    for name, address in (("w1", "10.0.0.1"), ("w2", "10.0.0.1"), ("w3", "10.0.0.2")):
        v.update({"name": name, "address": address, "ts": 1, "seq": 1, "cpus": 1, "memory": GiB, "disk": GiB}, now=0)
    d = Demand(ports=frozenset({"80/tcp"}))
    first = v.place("a", d, now=1).node
    second = v.place("b", d, now=1).node
    assert {first, second} == {"w3", "w1"} or {first, second} == {"w3", "w2"}  # one per address
    third = v.place("c", d, now=1)
    assert third.node is None and "w1" in third.reason and "w2" in third.reason and "w3" in third.reason


def test_the_cli_keeps_watching_a_task_that_moves_off_a_port_conflict():
    from cube.cli.submit import judge
    t = {"id": "abc", "state": "Failed", "desired": "running", "not_before": 5.0, "port_conflicts": {"w1": 1.0},
         "reason": "restart 1 of 3 in 1s", "error": "host port 8081/tcp is taken on this worker's host"}
    assert judge(t, final=False) is None
    outcome = judge(t, final=True)
    assert outcome.status == "waiting" and "host port on w1" in outcome.message


def test_a_reason_without_port_holders_has_no_empty_note():
    v = _view(w1=[])
    p = v.place("t", Demand(cpu=64, ports=frozenset({"8081/tcp"})), now=1)
    assert p.reason == "no worker has 64.0 cpu free; largest free is 2.0 on w1"


def test_a_forgotten_node_leaves_the_address_index_right():
    v = ClusterView(clock=lambda: 1.0)
    for name, address in (("w1", "a"), ("w2", "b"), ("w3", "a")):
        v.update({"name": name, "address": address, "ts": 1, "seq": 1, "cpus": 1, "memory": GiB, "disk": GiB,
                  "ports_in_use": ["80/tcp"] if name == "w3" else []}, now=0)
    v.forget("w1")  # w3 moves into w1's slot
    t = v.table()
    assert t.sharing == {"a": {t.index["w3"]}, "b": {t.index["w2"]}} and t.addresses[t.index["w3"]] == "a"
    d = Demand(ports=frozenset({"80/tcp"}))
    assert v.place("t", d, now=1).node == "w2"  # w3 holds it on address a
    v.forget("w3")
    v.update({"name": "w4", "address": "a", "ts": 1, "seq": 1, "cpus": 1, "memory": GiB, "disk": GiB}, now=0)
    assert v.place("u", d, now=1).node == "w4"  # address a is free again; w2 holds u's twin


@pytest.mark.parametrize("spec,says", [
    ({"Image": "a", "image": "b"}, "fields 'Image' and 'image' both give 'image'"),
    ({"image": "a", "ExposedPorts": {"80/tcp": {}}, "ports": ["8081:81"]}, "'ExposedPorts' and 'ports'"),
    ({"image": "a", "ID": "x", "id": "y"}, "'ID' and 'id' both give 'id'"),
])
def test_two_names_for_one_field_are_refused_not_one_dropped(spec, says):
    with pytest.raises(TaskSpecError, match=says):
        task_from_spec(spec)


@pytest.mark.parametrize("state,says", [(3, "use `cube task stop ID`"), ("Completed", "use `cube task stop ID`"),
                                        (4, "is not a start"), ("bogus", "is not a start")])
def test_a_task_event_that_is_not_a_start_is_refused(state, says):
    with pytest.raises(TaskSpecError, match=says):
        task_from_spec({**BOOK_EVENT, "State": state})


def test_a_book_file_without_a_restart_policy_takes_the_books_zero_value():
    task = {k: v for k, v in BOOK_EVENT["Task"].items() if k != "RestartPolicy"}
    assert task_from_spec(task).restart.name == "no"
    assert task_from_spec({"image": "x"}).restart.name == "on-failure"  # Cube's own format: Cube's default


def test_the_cli_flags_replace_a_book_files_fields():
    from cube.cli.submit import merge
    merged = merge(dict(BOOK_EVENT["Task"]), {"image": "other:1", "name": None})
    assert merged["image"] == "other:1" and "Image" not in merged
    assert task_from_spec(merged).image == "other:1"


def test_dockers_own_bindings_as_docker_inspect_prints_them():
    both = [{"HostIp": "0.0.0.0", "HostPort": "8081"}, {"HostIp": "::", "HostPort": "8081"}]
    assert task_from_spec({"Image": "x", "PortBindings": {"80/tcp": both}}).ports == ["8081:80/tcp"]
    with pytest.raises(TaskSpecError, match="binds host ports 8081, 8082"):
        task_from_spec({"Image": "x", "PortBindings": {"80/tcp": [both[0], {"HostIp": "::", "HostPort": "8082"}]}})


def test_an_empty_binding_keeps_a_fixed_port_given_elsewhere():
    t = task_from_spec({"image": "x", "ports": ["8081:80"], "PortBindings": {"80/tcp": ""}})
    assert t.ports == ["8081:80/tcp"]


def test_a_health_check_on_the_host_port_says_to_give_the_container_port():
    with pytest.raises(TaskSpecError, match="it is a host port: give the container port"):
        task_from_spec({"image": "x", "ports": ["8081:80"], "health": {"path": "/h", "port": 8081}})
