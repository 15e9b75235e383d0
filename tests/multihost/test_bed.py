"""The test bed itself (cube/testbed): cuts are real and selective, and a bed whose owner died is
removed whole by name (what `scripts/testbed.sh down` does after a killed test run)."""
from __future__ import annotations

import contextlib
import json
import pathlib
import socket
import time
import subprocess

import pytest

from cube.harness import BUSYBOX
from cube.testbed import netns
from cube.testbed.bed import PREFIX, Bed, missing, reap
from cube.testbed.engine import cgroup_dirs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _needs_a_bed():
    why = missing()
    if why:
        pytest.skip(why)


def reaches(bed: Bed, src: str, dst: str) -> bool:
    """A TCP connect from `src` to port 9 of `dst`: refused (nothing listens) means the packets got
    there and back; a timeout means they did not."""
    def connect() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((bed.address(dst), 9))
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            return True
    return bed.call_in(src, connect)


def test_partitions_cut_exactly_what_they_say_and_heal():
    with Bed(hosts=("h1", "h2", "h3"), docker=()) as bed:
        pairs = [(a, b) for a in bed.hosts for b in bed.hosts if a != b]
        assert all(reaches_soon(bed, a, b) for a, b in pairs)
        bed.partition("h1", from_="h2")
        assert not reaches(bed, "h1", "h2") and not reaches(bed, "h2", "h1")
        assert all(reaches(bed, a, b) for a, b in pairs if {a, b} != {"h1", "h2"})
        bed.partition("h3")
        assert not any(reaches(bed, a, b) for a, b in pairs if "h3" in (a, b))
        bed.heal("h3")
        assert reaches_soon(bed, "h3", "h1") and not reaches(bed, "h1", "h2")
        bed.heal()
        assert all(reaches_soon(bed, a, b) for a, b in pairs)


def reaches_soon(bed: Bed, src: str, dst: str, within: float = 5.0) -> bool:
    """Reaches within a few seconds: a link just brought up may drop a first packet or two."""
    deadline = time.monotonic() + within
    while not reaches(bed, src, dst):
        if time.monotonic() > deadline:
            return False
    return True


def _gone(pid: int) -> bool:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_a_bed_whose_owner_died_is_reaped_whole():
    bed = Bed(hosts=("h1", "h2"), docker=("h1",)).up()
    try:
        with contextlib.closing(bed.docker("h1")) as d:
            c = d.containers.run(BUSYBOX, ["sleep", "600"], detach=True, labels={"cube.task_id": "bed-test"})
            c.reload()
            pids = [c.attrs["State"]["Pid"]]
        sleeper = bed.popen("h2", ["sleep", "600"])
        pids += [sleeper.pid, bed.engines["h1"].proc.pid, *netns.pids(bed.netns("h1"))]  # + containerd, shim
        dead = subprocess.Popen(["true"])
        dead.wait()
        state_file = bed.root / "bed.json"
        state = json.loads(state_file.read_text())
        state_file.write_text(json.dumps({**state, "owner": dead.pid}))  # as if the test run had been killed

        assert bed.id in reap()  # stale beds only, as `scripts/testbed.sh down` with no ids
        sleeper.poll()
        bed.engines["h1"].proc.poll()
        assert [p for p in pids if not _gone(p)] == []
        assert netns.names(f"{PREFIX}{bed.id}-") == []
        assert not bed.root.exists()
        assert [d for h in bed.hosts for d in cgroup_dirs(bed.netns(h))] == []
    finally:
        bed.down()
