"""Issue 10, "Why" (Help), in a real terminal (tmux): every help opened `less`, which a pipe never
shows. Help must print and return, and tables must fit the terminal's width."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.cli.conftest import PYTHON, ROOT

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def terminal():
    """run(command, width) -> the screen once the command has exited (in a tmux of our own)."""
    server = f"cube-test-{uuid.uuid4().hex[:8]}"

    def run(command: str, width: int = 100) -> str:
        window = uuid.uuid4().hex[:6]
        env = " ".join(f"{k}={v}" for k, v in (("PAGER", "less"), ("TERM", "xterm")))
        line = f"cd {ROOT} && env {env} {command}; echo CUBE-EXIT-$?; sleep 60"
        subprocess.run(["tmux", "-L", server, "new-session", "-d", "-s", window, "-x", str(width), "-y", "60",
                        line], check=True, env={k: v for k, v in os.environ.items() if not k.startswith(("CUBE_", "TMUX"))})
        deadline = time.monotonic() + 15
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "-L", server, "capture-pane", "-p", "-t", window, "-S", "-200"],
                                    capture_output=True, text=True, check=False).stdout
            if "CUBE-EXIT-" in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"the command did not return (a pager waiting?); screen:\n{screen}")
    yield run
    subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False)


@pytest.mark.parametrize("words", ["--help", "-h", "task start --help", "task ls -h", "help node rm"])
def test_help_prints_in_a_terminal_without_a_pager(terminal, words):
    screen = terminal(f"{PYTHON} bin/cube {words}")
    assert "CUBE-EXIT-0" in screen and "Usage: cube" in screen
    assert "(END)" not in screen and "lines 1-" not in screen


def test_a_table_fits_the_terminal(terminal):
    code = ("from cube.cli import session, main; "
            "from tests.cli.conftest import make_task; "
            "rows = [make_task(name='n' * 150, reason='r' * 300), make_task(name='short')]; "
            "session.call = lambda *a, **k: {'tasks': rows, 'continue': ''}; "
            "main.main(['task', 'ls'])")
    screen = terminal(f"{PYTHON} -c \"{code}\"", width=90)
    table = screen.split("CUBE-EXIT-")[0].rstrip().splitlines()
    assert "CUBE-EXIT-0" in screen and table[-3].startswith("ID"), table
    assert all(len(line) <= 90 for line in table) and "…" in table[-2] and "short" in table[-1]
