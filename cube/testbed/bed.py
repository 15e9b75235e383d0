"""The Bed: hosts as network namespaces on a private switch, some with their own Docker engine.

See the package docstring (cube/testbed/__init__.py) for the API and docs/chaos.md, "Multi-host
test bed", for how tests use it.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal as signals
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import docker

from cube.harness import stop_process_groups
from cube.testbed import netns
from cube.testbed.engine import Engine, kill_cgroup

#: Everything of every bed lives under RUN_DIR/<id>; namespaces are named PREFIX<id>-<host>.
RUN_DIR = pathlib.Path("/run/cube-bed")
PREFIX = "cube-bed-"
SUBNET = "10.77.0"     # hosts: SUBNET.1, .2, ... (/24); each bed has its own switch, so beds never meet
BRIDGES = "10.78.{}.1/24"  # docker0 of the i-th host: distinct, to keep logs readable
_HOST = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # a switch port is named after its host (IFNAMSIZ)


def missing() -> str | None:
    """Why a bed cannot be made on this machine (None when it can)."""
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (network namespaces, its own dockerd per host)"
    for tool in ("ip", "nsenter", "unshare", "dockerd", "iptables"):
        if shutil.which(tool) is None:
            return f"the multi-host test bed needs `{tool}` (scripts/setup.sh installs it)"
    probe = f"{PREFIX}probe-{uuid.uuid4().hex[:6]}"
    try:
        netns.ip("netns", "add", probe)
    except RuntimeError as e:
        return f"cannot create a network namespace here: {e}"
    netns.ip("netns", "del", probe, check=False)
    return None


class Bed:
    """`hosts` in order get SUBNET.1, .2, ...; those in `docker` get a dockerd with the busybox image."""

    def __init__(self, hosts: tuple[str, ...] | list[str] = ("h1", "h2", "h3"),
                 docker: tuple[str, ...] | list[str] = ("h2", "h3"), manual: bool = False):
        bad = [h for h in hosts if not _HOST.match(h)]
        if bad or len(set(hosts)) != len(hosts) or not 0 < len(hosts) < 250:
            raise ValueError(f"hosts must be 1-249 distinct names like h1 (a-z then a-z0-9, at most 10): {list(hosts)}")
        if not set(docker) <= set(hosts):
            raise ValueError(f"docker hosts {sorted(set(docker) - set(hosts))} are not among the hosts")
        self.hosts = list(hosts)
        self.id = uuid.uuid4().hex[:6]
        self.root = RUN_DIR / self.id
        self.manual = manual  # a bed made by hand (scripts/testbed.sh): never reaped as stale
        self.switch = netns.Switch(f"{PREFIX}{self.id}-sw")
        self.engines = {h: Engine(h, self.netns(h), self.root / h, BRIDGES.format(i + 1))
                        for i, h in enumerate(self.hosts) if h in docker}
        self.timings: dict[str, float] = {}  # seconds: network, dockerd, image, up
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    # ---- where things are ------------------------------------------------------------------------
    def netns(self, host: str) -> str:
        self._check(host)
        return f"{PREFIX}{self.id}-{host}"

    def address(self, host: str) -> str:
        self._check(host)
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def docker_host(self, host: str) -> str:
        """DOCKER_HOST for `host`'s engine (a unix socket: reachable from any namespace)."""
        return self._engine(host).url

    def docker(self, host: str, timeout: int = 30) -> docker.DockerClient:
        """A client of `host`'s engine; close it (`with contextlib.closing(bed.docker(h)) as c`)."""
        return self._engine(host).client(timeout)

    def prefix(self, host: str) -> list[str]:
        """argv prefix running a command on `host` (in its network namespace)."""
        return netns.prefix(self.netns(host))

    def _check(self, host: str) -> None:
        if host not in self.hosts:
            raise KeyError(f"no host {host!r} in this bed (hosts: {', '.join(self.hosts)})")

    def _engine(self, host: str) -> Engine:
        self._check(host)
        if host not in self.engines:
            raise KeyError(f"host {host!r} has no Docker engine (those with one: {', '.join(self.engines)})")
        return self.engines[host]

    # ---- running things on hosts -------------------------------------------------------------------
    def popen(self, host: str, argv: list[str], log: str | pathlib.Path | None = None, **kw: Any) -> subprocess.Popen:
        """Start argv on `host`, in a session of its own; output to file `log` (default: discarded).
        The bed kills it at `down` if it still runs."""
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            p = subprocess.Popen([*self.prefix(host), *argv], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        finally:
            if log:
                out.close()
        with self._lock:
            self._procs.append(p)
        return p

    def run(self, host: str, argv: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
        """Run argv on `host` to completion (output captured as text)."""
        return subprocess.run([*self.prefix(host), *argv], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)

    def call_in(self, host: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in this process, in a thread inside `host`'s network namespace."""
        return netns.call_in(self.netns(host), fn, *args, **kwargs)

    # ---- partitions ------------------------------------------------------------------------------
    def partition(self, host: str, from_: str | None = None) -> None:
        """Cut `host` off the network (its switch port down), or only from host `from_`."""
        self._check(host)
        if from_ is not None:
            self._check(from_)
        self.switch.cut(host, from_)

    def heal(self, host: str | None = None, from_: str | None = None) -> None:
        """Undo `partition(host, from_)`; with no host, every cut."""
        self.switch.mend(host, from_)

    # ---- life ----------------------------------------------------------------------------------
    def up(self) -> "Bed":
        """Make the namespaces and links, start the engines in parallel, load the image into each.
        On any failure everything made so far is removed before the error is raised."""
        t0 = time.monotonic()
        try:
            self.root.mkdir(parents=True, exist_ok=False)
            self._write_state()
            self.switch.create()
            for h in self.hosts:
                self.switch.attach(h, self.netns(h), self.address(h), 24)
            t1 = time.monotonic()
            for e in self.engines.values():
                e.start()
            for h in self.hosts:  # while the engines start
                self.switch.wait_up(h)
            for e in self.engines.values():
                e.wait()
            t2 = time.monotonic()
            with ThreadPoolExecutor(max(1, len(self.engines))) as pool:
                list(pool.map(Engine.load_busybox, self.engines.values()))
            t3 = time.monotonic()
        except BaseException:
            self.down()
            raise
        self.timings = {"network": t1 - t0, "dockerd": t2 - t1, "image": t3 - t2, "up": t3 - t0}
        return self

    def down(self) -> None:
        """Remove everything of this bed: processes, containers, engines, namespaces, files.
        Never raises; safe to call twice."""
        with self._lock:
            procs, self._procs = self._procs, []
        stop_process_groups(procs, grace=5.0)
        with ThreadPoolExecutor(max(1, len(self.engines))) as pool:
            list(pool.map(Engine.stop, self.engines.values()))
        reap(self.id, stale_only=False)

    def __enter__(self) -> "Bed":
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.down()

    def _write_state(self) -> None:
        state = {"id": self.id, "owner": 0 if self.manual else os.getpid(), "hosts": self.hosts,
                 "addresses": {h: self.address(h) for h in self.hosts},
                 "netns": {h: self.netns(h) for h in self.hosts}, "switch": self.switch.ns,
                 "docker": {h: e.url for h, e in self.engines.items()}}
        (self.root / "bed.json").write_text(json.dumps(state, indent=1) + "\n")


# ---- leftovers ------------------------------------------------------------------------------------

def beds() -> dict[str, dict[str, Any]]:
    """Every bed on this machine by id: its state file, or {} for namespaces without one."""
    found: dict[str, dict[str, Any]] = {}
    if RUN_DIR.is_dir():
        for d in RUN_DIR.iterdir():
            try:
                found[d.name] = json.loads((d / "bed.json").read_text())
            except (OSError, ValueError):
                found[d.name] = {}
    for ns in netns.names(PREFIX):
        found.setdefault(ns[len(PREFIX):].split("-", 1)[0], {})
    return found


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stale(state: dict[str, Any]) -> bool:
    """A bed whose owning process is gone (a manual bed, owner 0, is never stale)."""
    owner = state.get("owner")
    return owner != 0 and (not isinstance(owner, int) or not _alive(owner))


def reap(bed_id: str | None = None, stale_only: bool = True) -> list[str]:
    """Remove bed `bed_id` (or every bed; with `stale_only`, only beds whose owner died): its
    dockerds, every process in its namespaces, its containers' cgroups, namespaces and files.
    Returns the ids removed. Found by name, so it also cleans up after a killed test run."""
    removed = []
    for bid, state in beds().items():
        if (bed_id is not None and bid != bed_id) or (stale_only and not stale(state)):
            continue
        root = RUN_DIR / bid
        spaces = netns.names(f"{PREFIX}{bid}-")
        for ns in spaces:  # containers first: a dockerd told to stop would wait for each to stop
            kill_cgroup(ns)
        for pidfile in root.glob("*/docker.pid"):
            _kill_pidfile(pidfile, str(root))
        for ns in spaces:
            for sig in (signals.SIGTERM, signals.SIGKILL):
                pids = netns.pids(ns)
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if pids and sig == signals.SIGTERM:
                    _wait_gone(pids, 5.0)
            kill_cgroup(ns)
        for ns in spaces:
            netns.ip("netns", "del", ns, check=False)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(bid)
    try:
        RUN_DIR.rmdir()  # only when empty
    except OSError:
        pass
    return removed


def _kill_pidfile(pidfile: pathlib.Path, root: str) -> None:
    """SIGTERM (then SIGKILL) the dockerd of a pidfile, if that pid is still that dockerd."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return
    if root not in cmdline:
        return  # the pid was reused by something else
    try:
        os.kill(pid, signals.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_gone([pid], 15.0):
        try:
            os.kill(pid, signals.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False
