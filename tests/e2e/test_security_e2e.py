"""Security end to end: real cube-manager and cube-worker processes, the real CLI, real Docker.

What an operator sees when something is not allowed: private files on disk, one clear line from
the CLI without (or with the wrong) credentials, a worker that exits with a reason when its token
is wrong, read-only credentials that cannot start tasks, and a token rotation that disturbs no
worker that already joined.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import time

import pytest

from cube.security.credentials import Credentials
from cube.security.keys import Keypair

pytestmark = pytest.mark.timeout(120)

ZERO_TOKEN = "CUBETKN-1-" + "0" * 64 + "-" + "0" * 32


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cli(c, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cube ARGS` against cluster `c`, with `env` (default: the cluster's, admin credentials)."""
    return subprocess.run(c.cli_command(*args), check=False, capture_output=True, text=True, timeout=30,
                          env=env if env is not None else c.env, cwd=c.tmp, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cube: "), lines[0]
    return lines[0]


def spawn_worker(c, short: str, token: str, data_dir: str = ""):
    """cube-worker `short` joining with `token` (the harness always passes the current one)."""
    proc = c._spawn(f"worker-{short}", "cube.actors.worker", "cube-worker", [
        "--manager", f"127.0.0.1:{c.worker_port}", "--name", c.worker_name(short), "--address", "127.0.0.1",
        "--data-dir", data_dir or str(c.tmp / f"worker-{short}"), "--join", token])
    c.workers[short] = proc  # stopped by the cluster's close()
    return proc


def exits(proc, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_manager_files_are_private_and_the_cli_needs_valid_credentials(make_cluster, tmp_path):
    c = make_cluster()
    admin = c.credentials()
    data = c.data_dir
    assert mode(data) == 0o700
    assert mode(data / "curve") == 0o700
    for name in ("admin.credentials", "join-token", "keyring.json", "curve/manager.key_secret", "curve/manager.key"):
        assert mode(data / name) == 0o600, f"{name} is {oct(mode(data / name))}"

    # no credentials at all (no flag, no CUBE_CREDENTIALS, no ~/.config/cube/credentials)
    home = tmp_path / "home"
    home.mkdir()
    bare = {k: v for k, v in c.env.items() if k != "CUBE_CREDENTIALS"}
    bare["HOME"] = str(home)
    line = one_line_error(cli(c, "task", "ls", env=bare))
    assert "credentials" in line and "CUBE_CREDENTIALS" in line

    # credentials for another manager (another server key): refused, said so
    other = Keypair.generate()
    foreign = Credentials(manager=admin.manager, events=admin.events, server_key=Keypair.generate().public_text,
                          public=other.public_text, secret=other.secret.decode(), name="admin", role="admin")
    foreign.save(str(tmp_path / "foreign.credentials"))
    t0 = time.monotonic()
    line = one_line_error(cli(c, "task", "ls", "--credentials", str(tmp_path / "foreign.credentials"), env=bare))
    assert "refused these credentials" in line
    # a client key this manager never issued, with its right server key: refused too
    stranger = Credentials(manager=admin.manager, events=admin.events, server_key=admin.server_key,
                           public=other.public_text, secret=other.secret.decode(), name="admin", role="admin")
    stranger.save(str(tmp_path / "stranger.credentials"))
    line = one_line_error(cli(c, "task", "ls", "--credentials", str(tmp_path / "stranger.credentials"), env=bare))
    assert "refused these credentials" in line
    assert time.monotonic() - t0 < 10, "a refusal should not wait for the request timeout"
    # a file that is not credentials: named
    (tmp_path / "junk").write_text("{}")
    line = one_line_error(cli(c, "task", "ls", "--credentials", str(tmp_path / "junk"), env=bare))
    assert "junk" in line and "credentials" in line
    # the admin's own file still works
    assert cli(c, "task", "ls", "--credentials", str(c.credentials_path), env=bare).returncode == 0


def test_a_worker_with_a_wrong_join_secret_exits_with_a_clear_message(make_cluster):
    c = make_cluster()
    token = c.join_token()
    wrong = token[: -32] + "0" * 32  # this manager's key, but not its secret
    proc = spawn_worker(c, "x", wrong)
    assert exits(proc, 15) not in (None, 0), "the worker should give up with a non-zero status"
    log = c.log("worker-x")
    assert "refused to let this worker join" in log and "wrong join token" in log, log
    assert c.worker_name("x") not in c.nodes()


def test_a_worker_with_a_token_for_another_manager_exits_with_a_clear_message(make_cluster):
    c = make_cluster()
    proc = spawn_worker(c, "x", ZERO_TOKEN)
    code = exits(proc, 6)
    log = c.log("worker-x")
    assert code not in (None, 0), f"the worker is still retrying after 6s:\n{log}"
    assert "token" in log or "refused" in log, log


def test_read_only_cli_credentials_and_a_token_rotation(make_cluster, busybox, tmp_path):
    c = make_cluster()
    w1 = c.start_worker("w1")
    old_token = c.join_token()

    ro_file = tmp_path / "ro.credentials"
    out = cli(c, "credentials", "create", "ro", "--role", "read-only", "--output", str(ro_file))
    assert out.returncode == 0, out.stderr
    assert "read-only" in out.stdout and str(ro_file) in out.stdout
    assert mode(ro_file) == 0o600
    ro = ["--credentials", str(ro_file)]
    line = one_line_error(cli(c, "task", "start", "--image", busybox, "--name", "nope", *ro))
    assert "read-only" in line and "may not" in line
    for args in (("node", "rm", w1), ("join-token",), ("credentials", "create", "more", "--role", "admin")):
        line = one_line_error(cli(c, *args, *ro))
        assert "read-only" in line and "may not" in line, args
    assert cli(c, "task", "ls", "--all", "--json", *ro).stdout.strip() == "[]"  # nothing was started
    assert w1 in cli(c, "node", "ls", "--json", *ro).stdout

    out = cli(c, "join-token", "--rotate")
    assert out.returncode == 0, out.stderr
    command = out.stdout.strip()
    new_token = c.join_token()
    # the token in the environment, not in the process list (docs/security.md)
    assert new_token != old_token
    assert command == f"CUBE_WORKER_JOIN={new_token} cube-worker --manager 127.0.0.1:{c.worker_port}"

    # a worker that joined before is not disturbed, even restarted with the rotated-away token
    time.sleep(c.grace)
    assert c.nodes()[w1]["state"] == "ready"
    c.signal("w1", signal.SIGTERM, wait=True)
    spawn_worker(c, "w1", old_token)
    c.wait_worker_ready("w1", timeout=20)
    # a new worker with the old token is refused, and says why
    late = spawn_worker(c, "late", old_token)
    assert exits(late, 15) not in (None, 0)
    assert "rotated" in c.log("worker-late")
    # the admin can still start a task that runs on the worker that joined before the rotation
    task_id = c.start_task("--image", busybox, "--cmd", "sleep 30")
    assert c.wait_state(task_id, "Running", timeout=20)["worker"] == w1
