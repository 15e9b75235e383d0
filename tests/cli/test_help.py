"""Issue 10, "Why" (Help): `cube --help` listed no commands, went to stderr and through `less`,
`-h` meant --health, and --completion printed an empty script."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from cube import __version__
from cube.cli import commands
from tests.cli.conftest import run_bin

EVERY = [c.name for c in commands.every()]


@pytest.mark.parametrize("line", [["--help"], ["-h"], ["help"], []])
def test_top_help_lists_every_command_with_a_line_and_an_example(cube, line):
    r = cube(*line)
    assert r.status == 0 and r.err == ""
    for cmd in commands.every():
        row = next((x for x in r.out.splitlines() if x.strip().startswith(cmd.name + " ")), None)
        assert row is not None and cmd.summary in row, cmd.name
        assert f"e.g. {cmd.example}" in r.out
    assert len(EVERY) >= 16 and "task restart" in EVERY


@pytest.mark.parametrize("name", EVERY)
def test_dash_h_is_help_for_every_command(cube, manager, name):
    r = cube(*name.split(), "-h")
    assert r.status == 0 and r.err == "" and r.out.startswith(f"Usage: cube {name}")
    assert manager.calls == []
    assert cube(*name.split(), "--help").out == r.out == cube("help", *name.split()).out


def test_command_help_lists_its_flags(cube):
    out = cube("task", "start", "--help").out
    for flag in ("--image IMAGE", "--env KEY=VALUE", "--port PORT", "--health PATH", "--detach",
                 "--manager HOST:PORT", "--credentials FILE", "--json", "-h, --help"):
        assert flag in out
    assert "-h, --health" not in out and "repeat the flag" in out


def test_group_help(cube):
    r = cube("task")
    assert r.status == 0 and all(f"  {c}" in r.out for c in ("start", "stop", "restart", "ls", "inspect", "logs"))
    r = cube("service")
    assert r.status == 0 and all(f"  {c}" in r.out
                                 for c in ("create", "ls", "ps", "inspect", "scale", "update", "rollback", "rm"))
    assert all(f"  {c}" in cube("node").out for c in ("ls", "drain", "activate", "rm"))


def test_services_have_their_section_and_the_task_flags(cube):
    top = cube("--help").out
    assert "\nServices:\n  service create" in top and "  node drain" in top and "  node activate" in top
    task = {p.flag for p in commands.group_command("task", "start").params} - {"--name", "--file"}
    for word in ("create", "update"):
        cmd = commands.group_command("service", word)
        flags = {p.flag for p in cmd.params}
        assert task <= flags, task - flags
        assert {"--update-parallelism", "--update-delay", "--update-monitor", "--update-failure-action",
                "--update-max-failure-ratio", "--update-order", "--timeout", "--detach"} <= flags
    out = cube("service", "update", "--help").out
    assert "--update-delay DURATION" in out and "--force" in out and "(default 300s)" in out


def test_every_manager_command_takes_manager_and_credentials():
    for cmd in commands.every():
        if cmd.path[0] in ("chaos", "version", "completion", "help"):
            continue
        assert cmd.param("manager") and cmd.param("credentials"), cmd.name


def test_version(cube):
    assert cube("version").out == f"cube {__version__}\n"
    assert cube("--version").out == f"cube {__version__}\n"


def test_unknown_commands_suggest(cube):
    r = cube("tsak", "ls")
    assert r.status == 2 and "did you mean 'task'?" in r.err
    r = cube("task", "strat")
    assert r.status == 2 and "did you mean 'start'?" in r.err
    r = cube("help", "nothing")
    assert r.status == 2


def test_help_needs_neither_fire_nor_zeromq():
    code = ("import sys; from cube.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['task', 'start', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('fire', 'zmq', 'msgpack', 'docker', 'cube.chaos', 'asyncio') if m in sys.modules)\n"
            "print(heavy, file=sys.stderr)")
    r = subprocess.run([sys_python(), "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert r.stderr.strip() == "[]"


def sys_python() -> str:
    from tests.cli.conftest import PYTHON
    return PYTHON


# ---- completion ----------------------------------------------------------------------------

def bash_complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _cube; printf "%s\\n" "${{COMPREPLY[@]}}"'
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


def zsh_complete(script: str, words: list[str]) -> list[str]:
    """_cube with compadd/_files/compdef stubbed: what it would offer."""
    line = " ".join(f"'{w}'" for w in words)
    program = ("compadd() { [[ $1 == -- ]] && shift; print -rl -- \"$@\" }\n_files() { print -r -- FILES }\n"
               f"compdef() {{ : }}\n{script}\nwords=({line}); CURRENT={len(words)}; _cube")
    r = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.parametrize("complete,shell", [(bash_complete, "bash"), (zsh_complete, "zsh")])
def test_completion_completes_groups_commands_flags_and_values(cube, complete, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    r = cube("completion", shell)
    assert r.status == 0 and "_cube" in r.out
    script = r.out

    def offered(*words: str) -> list[str]:
        return [w for w in complete(script, ["cube", *words]) if w.startswith(words[-1])]
    assert offered("ta") == ["task"]
    assert set(offered("")) >= {"task", "node", "events", "join-token", "credentials", "version", "completion"}
    assert set(offered("task", "")) >= {"start", "stop", "restart", "ls", "inspect", "logs"}
    assert "--image" in offered("task", "start", "--i") and "--json" not in offered("task", "start", "--i")
    assert set(offered("task", "ls", "-")) >= {"-a", "--all", "-q", "--state", "--sort", "--manager"}
    assert "--state" not in offered("node", "ls", "--")  # `ls` of node, not of task
    assert offered("task", "start", "--restart", "") == ["no", "on-failure", "always"]
    assert offered("task", "ls", "--state", "ru") == ["running"]
    assert offered("completion", "") == ["bash", "zsh"]
    assert offered("task", "start", "--image", "") == []  # free text: nothing to offer
    assert set(offered("service", "")) >= {"create", "ls", "ps", "inspect", "scale", "update", "rollback", "rm"}
    assert "--update-order" in offered("service", "update", "--update-o")
    assert offered("service", "create", "--update-order", "") == ["stop-first", "start-first"]
    assert offered("service", "update", "--update-failure-action", "") == ["rollback", "pause", "continue"]
    assert set(offered("service", "ps", "-")) >= {"-a", "--all", "-q", "--json"}
    assert set(offered("node", "")) >= {"drain", "activate"}


def test_bash_completion_of_files(cube, tmp_path, monkeypatch):
    (tmp_path / "web.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    script = cube("completion", "bash").out
    assert bash_complete(script, ["cube", "task", "start", "we"]) == ["web.json"]
    assert bash_complete(script, ["cube", "task", "ls", "--credentials", "w"]) == ["web.json"]


def test_completion_through_bin_cube_has_no_pager_and_no_empty_script():
    r = run_bin("completion", "bash", env={"PAGER": "false"})
    assert r.returncode == 0 and "complete -F _cube cube" in r.stdout
