"""task_from_spec (user input -> Task), Task.to_dict/from_dict and RestartPolicy."""
from __future__ import annotations

import json

import pytest

from cube.model.state import State
from cube.model.task import (DESIRED_RUNNING, HealthCheck, RestartPolicy, Task, TaskSpecError,
                             task_from_spec)
from cube.model.units import format_size, parse_size

MiB, GiB = 1 << 20, 1 << 30


# ---- happy paths -------------------------------------------------------------------------------

def test_flags_like_dict():
    t = task_from_spec({"name": "web", "image": " nginx:1.25 ", "cpu": "0.5", "memory": "64m",
                        "disk": "1.5g", "ports": [8080, "53/udp", " 9000/tcp "],
                        "env": ["A=1", "B=x=y"], "command": "sh -c 'echo hi'",
                        "restart": "always", "health": "/health"})
    assert t.name == "web" and t.image == "nginx:1.25"
    assert t.cpu == 0.5 and t.memory == 64 * MiB and t.disk == int(1.5 * GiB)
    assert t.ports == ["8080/tcp", "53/udp", "9000/tcp"]
    assert t.env == {"A": "1", "B": "x=y"}
    assert t.command == ["sh", "-c", "echo hi"]
    assert t.restart.name == "always" and t.restart.max_restarts == 3
    assert t.health == HealthCheck(path="/health")
    assert t.state is State.PENDING and t.desired == DESIRED_RUNNING
    assert t.attempt == 0 and t.worker == "" and t.restart_count == 0
    assert len(t.id) == 36 and t.created_at > 0 and t.updated_at == t.created_at


def test_minimal_spec_defaults():
    t = task_from_spec({"image": "registry.local:5000/team/redis:7"})
    # from the image, without registry, path and tag, and the start of the id: names are unique
    # among live tasks, so a task without one gets a name of its own (as Docker's containers do)
    assert t.name == f"redis-{t.id[:13]}"
    assert (t.cpu, t.memory, t.disk, t.ports, t.env, t.command) == (0.0, 0, 0, [], {}, None)
    assert t.restart == RestartPolicy()
    assert t.health is None


def test_two_specs_get_different_ids_and_an_explicit_id_is_kept():
    assert task_from_spec({"image": "a"}).id != task_from_spec({"image": "a"}).id
    assert task_from_spec({"image": "a", "id": "abc-123"}).id == "abc-123"
    assert task_from_spec({"image": "a", "id": "abc-123"}, task_id="forced").id == "forced"


def test_book_style_file_with_task_wrapper():
    spec = {"ID": "event-1", "State": 2, "Task": {
        "State": 1, "ID": "bb1d59ef-9fc1-4e4b-a44d-db571eeed203", "Name": "echo",
        "Image": "timboring/echo-server:latest", "Cpu": 0.25, "Memory": "128m", "Disk": 1024,
        "ExposedPorts": {"7777/tcp": {}}, "RestartPolicy": "on-failure", "HealthCheck": "/health",
        "Env": {"GREETING": "hi"}, "Cmd": ["serve", "--port", 7777]}}
    t = task_from_spec(spec)
    assert t.id == "bb1d59ef-9fc1-4e4b-a44d-db571eeed203"
    assert t.name == "echo" and t.image == "timboring/echo-server:latest"
    assert t.cpu == 0.25 and t.memory == 128 * MiB and t.disk == 1024
    assert t.ports == ["7777/tcp"]
    assert t.restart.name == "on-failure"
    assert t.health.path == "/health"
    assert t.env == {"GREETING": "hi"}
    assert t.command == ["serve", "--port", "7777"]
    assert t.state is State.PENDING  # the file's State is ignored: every task starts Pending


# Regression: the book's own task file used to be refused (unknown field 'PortBindings').
def test_the_books_task1_json_is_accepted():
    book_file = json.loads("""{
        "ID": "a7aa1d44-08f6-443e-9378-f5884311019e", "State": 2,
        "Task": {"State": 1, "ID": "bb1d59ef-9fc1-4e4b-a44d-db571eeed203",
                 "Name": "test-chapter-9.1", "Image": "timboring/echo-server:latest",
                 "ExposedPorts": {"7777/tcp": {}}, "PortBindings": {"7777/tcp": "7777"},
                 "HealthCheck": "/health"}}""")
    t = task_from_spec(book_file)
    assert t.ports == ["7777:7777/tcp"] and t.health.path == "/health"  # PortBindings pins host port 7777


@pytest.mark.parametrize("text,expected", [
    (0, 0), (1234, 1234), ("1234", 1234), ("64m", 64 * MiB), ("64M", 64 * MiB), ("64MiB", 64 * MiB),
    ("512k", 512 * 1024), ("1g", GiB), ("1.5g", int(1.5 * GiB)), ("2t", 2 << 40), (" 10 mb ", 10 * MiB), ("m", None), ("1.2.3m", None),
])
def test_sizes(text, expected):
    # disk: memory has a floor (Docker's minimum, tests/unit/test_task_spec_security.py)
    if expected is None:
        with pytest.raises(TaskSpecError, match="'disk'"):
            task_from_spec({"image": "x", "disk": text})
    else:
        assert task_from_spec({"image": "x", "disk": text}).disk == expected
        assert parse_size(text) == expected


def test_format_size():
    assert format_size(0) == "0"
    assert format_size(64 * MiB) == "64"
    assert format_size(3 * MiB // 2) == "1.5"
    assert format_size(5 * GiB, "GiB") == "5.0"


@pytest.mark.parametrize("ports,expected", [
    (8080, ["8080/tcp"]), ("53/udp", ["53/udp"]), ([80, "443/tcp", "53/udp"], ["80/tcp", "443/tcp", "53/udp"]),
    ({"80/tcp": {}}, ["80/tcp"]), (None, []), ([], []), ("65535", ["65535/tcp"]), (1, ["1/tcp"]),
])
def test_ports(ports, expected):
    assert task_from_spec({"image": "x", "ports": ports}).ports == expected


def test_port_alias():
    assert task_from_spec({"image": "x", "port": 8080}).ports == ["8080/tcp"]


@pytest.mark.parametrize("env,expected", [
    (["A=1", "B="], {"A": "1", "B": ""}),
    ({"A": 1, "B": "two"}, {"A": "1", "B": "two"}),
    ("ONLY=one", {"ONLY": "one"}),
    (None, {}),
])
def test_env_forms(env, expected):
    assert task_from_spec({"image": "x", "env": env}).env == expected


@pytest.mark.parametrize("restart,max_restarts,expected", [
    ("no", None, RestartPolicy("no")),
    ("always", 5, RestartPolicy("always", 5)),
    ({"name": "on-failure", "max_restarts": 0}, None, RestartPolicy("on-failure", 0)),
    ({"name": "always", "backoff": 0.1, "backoff_max": 2}, 7, RestartPolicy("always", 7, 0.1, 2.0)),
    ({"max_restarts": 1}, None, RestartPolicy("on-failure", 1)),
    (None, 2, RestartPolicy("on-failure", 2)),
])
def test_restart_forms(restart, max_restarts, expected):
    spec = {"image": "x", "restart": restart}
    if max_restarts is not None:
        spec["max_restarts"] = max_restarts
    assert task_from_spec(spec).restart == expected


def test_restart_policy_alias():
    assert task_from_spec({"image": "x", "restart_policy": "no"}).restart.name == "no"


@pytest.mark.parametrize("health,expected", [
    ("/health", HealthCheck("/health")),
    ({"path": "/ready", "port": 8080, "interval": 1, "timeout": 0.5, "threshold": 2},
     HealthCheck("/ready", "8080/tcp", 1.0, 0.5, 2)),
    ({"path": "/h", "interval": 0}, HealthCheck("/h", interval=0.1)),  # clamped, never a busy loop
    (None, None), ("", None),
])
def test_health_forms(health, expected):
    assert task_from_spec({"image": "x", "health": health, "ports": [80, 8080]}).health == expected


def test_a_health_check_port_must_be_one_of_the_tasks_ports():
    with pytest.raises(TaskSpecError, match="port 9090/tcp is not one of the task's ports"):
        task_from_spec({"image": "x", "health": {"path": "/", "port": 9090}, "ports": [80]})


def test_a_health_check_needs_a_port():
    with pytest.raises(TaskSpecError, match="field 'health': a health check needs a port"):
        task_from_spec({"image": "x", "health": "/health"})


@pytest.mark.parametrize("image", ["Bad Image", "UPPER", "a:b:c", "x:", "-x", "x@sha256:short"])
def test_an_invalid_image_reference_is_refused(image):
    with pytest.raises(TaskSpecError, match="field 'image': .* is not a valid image reference"):
        task_from_spec({"image": image})


@pytest.mark.parametrize("name", ["-rf", "a\x1b[31mb", "x" * 129, " lead"])
def test_a_name_must_be_printable_and_not_an_option(name):
    with pytest.raises(TaskSpecError, match="field 'name'"):
        task_from_spec({"image": "x", "name": name})


def test_command_forms():
    assert task_from_spec({"image": "x", "command": ["a", 1, 2.5]}).command == ["a", "1", "2.5"]
    assert task_from_spec({"image": "x", "cmd": "echo 'a b'"}).command == ["echo", "a b"]
    assert task_from_spec({"image": "x", "Command": []}).command is None


# ---- errors name the field -----------------------------------------------------------------------

@pytest.mark.parametrize("spec,field", [
    ({}, "image"),
    ({"image": ""}, "image"),
    ({"image": "   "}, "image"),
    ({"image": 5}, "image"),
    ({"image": "x", "name": 5}, "name"),
    ({"image": "x", "ports": ["http"]}, "ports"),
    ({"image": "x", "ports": [0]}, "ports"),
    ({"image": "x", "ports": [65536]}, "ports"),
    ({"image": "x", "ports": ["53/sctp"]}, "ports"),
    ({"image": "x", "ports": [-1]}, "ports"),
    ({"image": "x", "ports": 8.5}, "ports"),
    ({"image": "x", "cpu": -1}, "cpu"),
    ({"image": "x", "cpu": "lots"}, "cpu"),
    ({"image": "x", "cpu": True}, "cpu"),
    ({"image": "x", "cpu": [1]}, "cpu"),
    ({"image": "x", "cpu": float("nan")}, "cpu"),
    ({"image": "x", "memory": "64q"}, "memory"),
    ({"image": "x", "memory": -5}, "memory"),
    ({"image": "x", "memory": "-5m"}, "memory"),
    ({"image": "x", "memory": True}, "memory"),
    ({"image": "x", "disk": "big"}, "disk"),
    ({"image": "x", "disk": "m"}, "disk"),
    ({"image": "x", "colour": "red"}, "colour"),
    ({"image": "x", "PortBinding": {}}, "PortBinding"),
    ({"image": "x", "restart": "sometimes"}, "restart"),
    ({"image": "x", "restart": 3}, "restart"),
    ({"image": "x", "restart": {"name": "no", "retries": 3}}, "restart"),
    ({"image": "x", "restart": {"name": "always", "backoff": -1}}, "backoff"),
    ({"image": "x", "max_restarts": -1}, "max_restarts"),
    ({"image": "x", "max_restarts": 1.5}, "max_restarts"),
    ({"image": "x", "max_restarts": True}, "max_restarts"),
    ({"image": "x", "env": ["NOEQUALS"]}, "env"),
    ({"image": "x", "env": [1]}, "env"),
    ({"image": "x", "env": 5}, "env"),
    ({"image": "x", "command": {"a": 1}}, "command"),
    ({"image": "x", "command": "echo 'unclosed"}, "command"),
    ({"image": "x", "command": [None]}, "command"),
    ({"image": "x", "health": "health"}, "health.path"),
    ({"image": "x", "health": 5}, "health"),
    ({"image": "x", "health": {"path": "/h", "every": 1}}, "health"),
    ({"image": "x", "health": {"port": 80}}, "health.path"),
    ({"image": "x", "health": {"path": "/h", "port": "x"}}, "ports"),
    ({"image": "x", "health": {"path": "/h", "threshold": 0}}, "health.threshold"),
    ({"image": "x", "health": {"path": "/h", "interval": -1}}, "interval"),
])
def test_errors_name_the_field(spec, field):
    with pytest.raises(TaskSpecError) as err:
        task_from_spec(spec)
    assert repr(field) in str(err.value) or f"'{field}" in str(err.value)


@pytest.mark.parametrize("spec", [[], "image: x", None, 5])
def test_not_a_map(spec):
    with pytest.raises(TaskSpecError, match="JSON object"):
        task_from_spec(spec)


# Input that used to make task_from_spec raise something other than TaskSpecError (OverflowError,
# IndexError, ValueError) or accept a task that can never be placed or stored: the Manager catches
# only TaskSpecError, so the client got `internal` instead of `bad_request` naming the field.
@pytest.mark.parametrize("spec,field", [
    ({"image": "x", "memory": "1e400"}, "memory"),
    ({"image": "x", "memory": float("inf")}, "memory"),
    ({"image": "x", "memory": "20000000t"}, "memory"),  # > 2**64 bytes: msgpack cannot carry it
    ({"image": "x", "disk": 2**64}, "disk"),
    ({"image": "x", "health": {"path": "/h", "port": []}}, "health"),
    ({"image": "x", "health": {"path": "/h", "port": [80, 81]}}, "health"),
    ({"image": "x", "ports": ["\u00b2"]}, "ports"),
    ({"image": "x", "ports": ["\u0663"]}, "ports"),  # Arabic-Indic digit three
    ({"image": "x", "cpu": "inf"}, "cpu"),
    ({"image": "x", "cpu": float("-inf")}, "cpu"),
    ({"image": "x", b"bytes-key": 1, "other": 2}, "field names"),
])
def test_hostile_values_are_spec_errors(spec, field):
    with pytest.raises(TaskSpecError, match=field):
        task_from_spec(spec)


# ---- to_dict / from_dict ---------------------------------------------------------------------------

def test_round_trip_through_dict_and_msgpack():
    from cube.wire.codec import pack, unpack
    t = task_from_spec({"name": "web", "image": "nginx", "cpu": 1, "memory": "1g", "ports": [80],
                        "env": {"A": "b"}, "command": "run it", "restart": {"name": "always", "backoff": 0.5},
                        "health": {"path": "/h", "port": 80, "threshold": 4}})
    t.transition(State.SCHEDULED)
    t.worker, t.attempt, t.host_ports, t.exit_code = "w1", 2, {"80/tcp": 31000}, 137
    d = t.to_dict()
    assert d["state"] == "Scheduled" and isinstance(d["restart"], dict) and isinstance(d["health"], dict)
    back = Task.from_dict(unpack(pack(d)))
    assert back == t
    assert isinstance(back.state, State) and isinstance(back.restart, RestartPolicy)
    assert isinstance(back.health, HealthCheck)


def test_from_dict_ignores_unknown_keys_and_fills_defaults():
    t = Task.from_dict({"id": "i", "name": "n", "image": "img", "from_the_future": 1, "restart": None})
    assert t.state is State.PENDING and t.restart == RestartPolicy() and t.health is None


# ---- RestartPolicy --------------------------------------------------------------------------------

def test_delay_doubles_and_is_capped():
    p = RestartPolicy(backoff=1.0, backoff_max=5.0)
    assert [p.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert p.delay(-3) == 1.0
    assert RestartPolicy(backoff=0.0).delay(10) == 0.0


@pytest.mark.parametrize("name,exit_code,count,allowed", [
    ("on-failure", 1, 0, True), ("on-failure", 0, 0, False), ("on-failure", None, 0, True),
    ("on-failure", 137, 2, True), ("on-failure", 137, 3, False), ("on-failure", 1, 99, False),
    ("always", 0, 0, True), ("always", 1, 2, True), ("always", 0, 3, False),
    ("no", 1, 0, False), ("no", None, 0, False), ("no", 0, 0, False),
])
def test_allows(name, exit_code, count, allowed):
    assert RestartPolicy(name, max_restarts=3).allows(exit_code, count) is allowed


def test_max_restarts_zero_never_restarts():
    assert not RestartPolicy("always", max_restarts=0).allows(1, 0)
