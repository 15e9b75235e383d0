"""Every chaos script in tests/chaos/scripts, each played by `cube chaos run` against its own cluster.

The scripts run as subprocesses of the real CLI (the same runner code as `cube chaos run`), a few
at a time (CUBE_CHAOS_JOBS, default 3): each cluster is mostly idle processes waiting on
timers, so overlapping them keeps the suite short. A test waits for its own script and shows
the script's full output (steps, invariants, log tails) if it failed.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = sorted((pathlib.Path(__file__).parent / "scripts").glob("*.toml"))
JOBS = int(os.environ.get("CUBE_CHAOS_JOBS", "3"))
PER_SCRIPT = 150.0  # seconds; a script normally takes 3-15 s

pytestmark = pytest.mark.timeout(600)


@dataclass
class Done:
    rc: int
    output: str
    seconds: float


class ScriptPool:
    """Runs scripts as `cube chaos run` subprocesses, JOBS at a time, in the order given."""

    def __init__(self, scripts: list[pathlib.Path], jobs: int):
        self.queue = list(scripts)
        self.jobs = max(1, jobs)
        self.running: dict[pathlib.Path, tuple[subprocess.Popen, object, float]] = {}
        self.done: dict[pathlib.Path, Done] = {}

    def _fill(self) -> None:
        while self.queue and len(self.running) < self.jobs:
            script = self.queue.pop(0)
            out = tempfile.TemporaryFile()
            proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "cube"), "chaos", "run", str(script)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
            self.running[script] = (proc, out, time.monotonic())

    def _reap(self) -> None:
        for script, (proc, out, t0) in list(self.running.items()):
            late = time.monotonic() - t0 > PER_SCRIPT
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.terminate()  # the runner tears its cluster down on SIGTERM... or at least tries
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            out.seek(0)
            text = out.read().decode(errors="replace")
            out.close()
            if late:
                text += f"\n(killed: ran longer than {PER_SCRIPT:g}s)"
            self.done[script] = Done(proc.returncode if not late else -1, text, time.monotonic() - t0)
            del self.running[script]

    def result(self, script: pathlib.Path) -> Done:
        if script not in self.done and script not in self.running and script not in self.queue:
            self.queue.insert(0, script)
        while script not in self.done:
            self._reap()
            self._fill()
            time.sleep(0.1)
        return self.done[script]

    def close(self) -> None:
        for proc, out, _ in self.running.values():
            proc.terminate()
        for proc, out, _ in self.running.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            out.close()


@pytest.fixture(scope="module")
def pool(request, busybox):
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "callspec", None) and "script" in item.callspec.params
                and item.module is request.module]
    p = ScriptPool(selected, JOBS)
    yield p
    p.close()


def test_there_are_enough_scripts():
    assert len(SCRIPTS) >= 12, [s.name for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script(pool, script):
    done = pool.result(script)
    print(done.output)
    assert done.rc == 0, f"{script.name} failed (exit {done.rc}) after {done.seconds:.1f}s:\n{done.output[-6000:]}"
    assert "\nPASS " in done.output
