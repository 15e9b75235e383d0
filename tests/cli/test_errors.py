"""Issue 10, "Why" (Tracebacks, wrong or silent outcomes): every failure is one line on stderr and
a non-zero status; a reader that goes away is not an error; "cannot reach" is said only when
nothing answered, and an oversized request says it is too large."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from cube.cli import session, tasks
from cube.harness import free_ports
from tests.cli.conftest import PYTHON, ROOT, run_bin


def one_line(err: str) -> bool:
    return err.startswith("cube: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("tail", ["abc", "-1", "1.5", ""])
def test_a_bad_tail_is_a_usage_error(cube, manager, tail):
    manager.add(name="web")
    r = cube("task", "logs", "web", f"--tail={tail}")
    assert r.status == 2 and one_line(r.err) and "--tail" in r.err and manager.calls == []


def test_tail_all_and_tail_zero(cube, manager):
    manager.add(name="web")
    r = cube("task", "logs", "web", "--tail", "all")
    assert r.status == 0 and r.out == "line 1\nline 2\n"
    assert manager.sent("task.logs")[0][1]["tail"] == tasks.ALL_LINES
    r = cube("task", "logs", "web", "--tail", "0")
    assert r.status == 0 and r.out == ""
    r = cube("task", "logs", "nosuch", "--tail", "0")  # an unknown id is still an error
    assert r.status == 1 and one_line(r.err)


def test_logs_keep_newlines_and_tabs_and_drop_escapes(cube, manager):
    manager.add(name="web")
    manager.logs = "ok\tone\n\x1b[31mred\x1b[0m\x1b]0;title\x07 \x07bell\r\nlast\n"
    assert cube("task", "logs", "web").out == "ok\tone\nred bell\nlast\n"


@pytest.mark.parametrize("variable,value,says", [
    ("CUBE_MANAGER", "localhost", "has no port; use HOST:PORT, e.g. localhost:5555"),
    ("CUBE_MANAGER", "http://127.0.0.1:5555", "is not HOST:PORT"),
    ("CUBE_MANAGER", "127.0.0.1:99999", "not between 1 and 65535"),
])
def test_a_bad_manager_address_is_one_line(cube, monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    r = cube("task", "ls")
    assert r.status == 1 and one_line(r.err) and says in r.err and variable in r.err


@pytest.mark.parametrize("value", ["http://x:1", "tcp://", "a b:1", "ipc:///tmp/x"])
def test_a_bad_manager_flag_is_one_line(cube, value):
    r = cube("node", "ls", "--manager", value)
    assert r.status == 1 and one_line(r.err) and "--manager" in r.err


def test_a_missing_credentials_file_is_one_line(cube, tmp_path):
    r = cube("task", "ls", "--credentials", str(tmp_path / "nope"))
    assert r.status == 1 and one_line(r.err) and "does not exist" in r.err


def test_an_oversized_task_file_is_too_large_not_unreachable(cube, manager, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"image": "cube-busybox:latest", "env": {"X": "x" * (2 << 20)}}))
    r = cube("task", "start", str(big))
    assert r.status == 1 and one_line(r.err) and "too large" in r.err and "reach" not in r.err
    assert manager.calls == []


def test_a_bug_is_still_one_line(cube, manager):
    manager.replies["task.ls"] = lambda body: {"tasks": [{"nothing": "expected"}]}
    r = cube("task", "ls")
    assert r.status == 1 and one_line(r.err) and "internal error" in r.err


def test_ctrl_c_is_quiet(cube, manager):
    def interrupted(body):
        raise KeyboardInterrupt
    manager.replies["task.ls"] = interrupted
    r = cube("task", "ls")
    assert r.status == 130 and r.err == ""


def test_an_unknown_message_type_is_one_line(cube, manager):
    from cube.wire.errors import UNKNOWN_TYPE, CubeError

    def old_manager(body):
        raise CubeError(UNKNOWN_TYPE, "manager does not handle 'task.restart'")
    manager.add(name="web")
    manager.replies["task.restart"] = old_manager
    r = cube("task", "restart", "web")
    assert r.status == 1 and one_line(r.err) and "older than this cube" in r.err


def test_messages_from_the_manager_cannot_forge_lines(cube, manager):
    from cube.wire.errors import CONFLICT, CubeError

    def conflict(body):
        raise CubeError(CONFLICT, "task x exists\n\x1b[2Jcube: fake second line")
    manager.replies["task.start"] = conflict
    r = cube("task", "start", "--image", "cube-busybox:latest")
    assert r.status == 1 and one_line(r.err) and "\x1b" not in r.err


def test_a_refused_connection_says_so_quickly():
    port = free_ports(1)[0]  # nothing listens there
    t0 = time.monotonic()
    r = run_bin("task", "ls", "--manager", f"127.0.0.1:{port}")
    assert r.returncode == 1 and one_line(r.stderr) and "cannot reach the manager" in r.stderr
    assert time.monotonic() - t0 < 6


def test_a_reader_that_goes_away_is_not_an_error():
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from cube.cli import session, main\n"
            "rows = [{'id': str(i), 'name': 'n', 'state': 'Running', 'image': 'i' * 200} for i in range(5000)]\n"
            "session.call = lambda *a, **k: {'tasks': rows, 'continue': ''}\n"
            "main.main(['task', 'ls', '--json'])\n")
    p = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={k: v for k, v in os.environ.items() if not k.startswith("CUBE_")})
    assert p.stdout.readline()
    p.stdout.close()  # `| head -1`
    err = p.stderr.read().decode()
    p.wait(timeout=20)
    assert p.returncode in (0, 141) and err == ""


def test_bin_cube_outside_the_virtualenv_says_which_python_to_use():
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import zmq"], capture_output=True, check=False).returncode == 0:
        pytest.skip("no system python3 without the virtualenv's modules")
    r = run_bin("task", "ls", python=system)
    assert r.returncode == 1 and one_line(r.stderr)
    assert ".venv/bin/python" in r.stderr and "scripts/setup.sh" in r.stderr
    assert run_bin("--help", python=system).returncode == 0  # help needs nothing outside the stdlib


def test_bin_cube_on_an_old_python_says_so():
    launcher = str(ROOT / "bin" / "cube")
    code = ("import sys; sys.version_info = (3, 9, 0, 'final', 0)\n"
            f"exec(compile(open({launcher!r}).read(), {launcher!r}, 'exec'), "
            f"{{'__file__': {launcher!r}, '__name__': '__main__'}})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False)
    assert r.returncode == 1 and one_line(r.stderr) and "too old" in r.stderr and "scripts/setup.sh" in r.stderr


def test_not_reached_says_whether_the_request_may_have_arrived():
    from cube.wire.client import Unreachable
    from cube.wire.errors import Unavailable
    conn = session.Conn("tcp://127.0.0.1:1", None)
    timeout = session.unreachable(conn, Unavailable("no answer"), 3.0)
    assert timeout.sent and "no answer within 3s" in str(timeout)
    refused = session.unreachable(conn, Unreachable("connection refused"), 3.0)
    assert not refused.sent and "connection refused" in str(refused) and "within" not in str(refused)
