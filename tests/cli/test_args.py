"""Issue 10, "Why": fire ran mistyped commands, kept the last of repeated flags, ate `-`, turned
a second id into --manager and strings into numbers. The command line is now checked against
the command's signature before anything is sent."""
from __future__ import annotations

import json

import pytest

from cube.cli import args


def test_a_mistyped_flag_is_refused_before_anything_is_sent(cube, manager):
    r = cube("task", "start", "--image", "cube-busybox:latest", "--nmae", "web1")
    assert r.status == 2 and manager.calls == []
    assert r.err == "cube: unknown flag --nmae for 'cube task start'; did you mean --name?\n"


def test_a_mistyped_flag_after_an_id_stops_nothing(cube, manager):
    t = manager.add(name="web")
    r = cube("task", "stop", t["id"], "--jsn")
    assert r.status == 2 and manager.calls == [] and "did you mean --json?" in r.err
    assert r.err.count("\n") == 1


@pytest.mark.parametrize("line", [["task", "ls", "extra"], ["node", "ls", "x"], ["task", "ls", "-x"],
                                  ["version", "now"], ["join-token", "yes"]])
def test_extra_arguments_are_usage_errors(cube, manager, line):
    r = cube(*line)
    assert r.status == 2 and manager.calls == [] and r.err.startswith("cube: ") and r.err.count("\n") == 1


def test_repeated_ports_and_env_accumulate(cube, manager):
    r = cube("task", "start", "--image", "cube-busybox:latest", "--port", "8080", "--port", "9090/udp",
             "--env", "A=1", "--env", "B=x=y", "--detach")
    assert r.status == 0, r.err
    spec = manager.sent("task.start")[0][1]["task"]
    assert spec["ports"] == ["8080", "9090/udp"] and spec["env"] == ["A=1", "B=x=y"]


@pytest.mark.parametrize("value", ["[A=1,B=2]", "A", "=1", "1A=2"])
def test_env_that_is_not_key_value_is_refused(cube, manager, value):
    r = cube("task", "start", "--image", "cube-busybox:latest", "--env", value)
    assert r.status == 1 and manager.calls == [] and "is not KEY=VALUE" in r.err


def test_a_single_valued_flag_given_twice_is_refused(cube, manager):
    r = cube("task", "start", "--image", "a", "--image", "b")
    assert r.status == 2 and "--image given twice" in r.err and manager.calls == []


@pytest.mark.parametrize("name", ["7e12", "1e5", "True", "False", "None", "1_000", "0x10", "[1]", "{}"])
def test_names_stay_strings(cube, manager, name):
    r = cube("task", "start", "--image", "cube-busybox:latest", "--name", name, "--detach")
    assert r.status == 0, r.err
    assert manager.sent("task.start")[0][1]["task"]["name"] == name


@pytest.mark.parametrize("prefix", ["7e12", "1e5", "1_000", "True"])
def test_ids_stay_strings(cube, manager, prefix):
    cube("task", "inspect", prefix)
    assert manager.sent("task.inspect")[0][1] == {"id": prefix}


def test_an_empty_name_is_refused_not_replaced(cube, manager):
    r = cube("task", "start", "--image", "cube-busybox:latest", "--name", "")
    assert r.status == 1 and "--name must not be empty" in r.err and manager.calls == []


def test_dash_reads_the_task_file_from_stdin(cube, manager):
    spec = json.dumps({"image": "cube-busybox:latest", "name": "from-stdin", "ports": [8080]})
    r = cube("task", "start", "-", "--detach", stdin=spec)
    assert r.status == 0, r.err
    assert manager.sent("task.start")[0][1]["task"]["name"] == "from-stdin"
    r = cube("task", "start", "--file", "-", "--name", "override", "--detach", stdin=spec)
    assert r.status == 0, r.err
    sent = manager.sent("task.start")[1][1]["task"]
    assert sent["name"] == "override" and sent["ports"] == [8080]


def test_stdin_that_is_not_a_task_says_so(cube, manager):
    r = cube("task", "start", "-", stdin="{oops")
    assert r.status == 1 and "task file stdin is not valid JSON" in r.err and manager.calls == []


def test_several_ids_are_each_stopped_and_reported(cube, manager):
    a, b = manager.add(name="a"), manager.add(name="b")
    r = cube("task", "stop", "a", "b", "--manager", "127.0.0.1:5555")
    assert r.status == 0 and r.out.split() == [a["id"], b["id"]]
    assert [body["id"] for _, body in manager.sent("task.stop")] == ["a", "b"]


def test_one_unknown_id_does_not_hide_the_others(cube, manager):
    a = manager.add(name="a")
    r = cube("task", "stop", "nosuch", "a")
    assert r.status == 1 and r.out.split() == [a["id"]]
    assert r.err == "cube: no task with id or name 'nosuch'\n"


def test_inspect_and_logs_take_several_ids(cube, manager):
    manager.add(name="a")
    manager.add(name="b")
    r = cube("task", "inspect", "a", "b", "--json")
    assert r.status == 0 and [x["task"]["name"] for x in json.loads(r.out)] == ["a", "b"]
    r = cube("task", "logs", "a", "b", "--tail", "1")
    assert r.status == 0 and r.out == "==> a <==\nline 2\n==> b <==\nline 2\n"


def test_bool_flags_take_explicit_values_and_never_eat_the_next_word(cube, manager):
    t = manager.add(name="web")
    r = cube("task", "inspect", "--json", "web")
    assert r.status == 0 and json.loads(r.out)["task"]["id"] == t["id"]
    r = cube("task", "inspect", "web", "--json=false")
    assert r.status == 0 and r.out.startswith("id:") and "{" not in r.out.splitlines()[0]
    r = cube("task", "ls", "--nojson")
    assert r.status == 0 and r.out.startswith("ID")
    r = cube("task", "ls", "--json=maybe")
    assert r.status == 2 and "not true or false" in r.err


def test_short_flags(cube, manager):
    live, done = manager.add(name="live"), manager.add(name="done", state="Completed")
    r = cube("task", "ls", "-aq")
    assert r.status == 0 and sorted(r.out.split()) == sorted([live["id"], done["id"]])
    r = cube("task", "ls", "-q")
    assert r.out.split() == [live["id"]]


def test_numbers_are_checked_where_numbers_are_wanted(cube, manager):
    for line in (["events", "--count", "ten"], ["task", "start", "--image", "x", "--cpu", "half"],
                 ["task", "start", "--image", "x", "--max-restarts", "1.5"]):
        r = cube(*line)
        assert r.status == 2 and r.err.count("\n") == 1, line
    assert manager.calls == []


def test_a_value_flag_without_its_value(cube, manager):
    r = cube("task", "start", "--image")
    assert r.status == 2 and r.err == "cube: --image needs a value (write --image=VALUE for a value starting with '-')\n"


def test_signature_reading():
    def fn(self, first: str, second: int = 1, *rest: str, flag: bool = False, many: list[str] | None = None):
        """Summary line.

        More words.

        Args:
            first: the first
              continued
            flag: a switch
        """
    cmd = args.describe(("x", "y"), fn)
    by = {p.name: p for p in cmd.params}
    assert [p.name for p in cmd.params] == ["first", "second", "rest", "flag", "many"]
    assert by["first"].required and by["first"].positional and by["second"].kind is int
    assert by["rest"].variadic and by["flag"].kind is bool and by["many"].kind is list
    assert not by["flag"].positional
    assert cmd.summary == "Summary line." and cmd.description == "More words."
    assert by["first"].help == "the first continued" and by["flag"].help == "a switch"
    call = args.parse(cmd, ["a", "2", "r1", "r2", "--many", "m1", "--flag", "--many=m2"])
    assert call.args == ["a", 2, "r1", "r2"] and call.kwargs == {"many": ["m1", "m2"], "flag": True}
    assert args.parse(cmd, ["--", "-a", "3", "--flag"]).args == ["-a", 3, "--flag"]
    assert args.usage(cmd) == "cube x y FIRST [SECOND] REST... [FLAGS]"
