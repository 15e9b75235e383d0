"""A Docker engine of a bed host: its own dockerd (and the containerd it manages) in the host's
network namespace, with its own data-root, exec-root, pidfile, socket and cgroup parent.

Each dockerd has a mount namespace of its own (`unshare --mount`): its overlay mounts never show in
the machine's, and vanish with its last process. Its bridge (docker0) and iptables rules live in
the host's network namespace, so it coexists with the machine's own dockerd and other hosts'.
Containers go under the cgroup parent named after the host's namespace, which is how leftovers
are found and killed even when a dockerd died without cleaning up.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal as signals
import subprocess
import time

import docker
import docker.errors
import requests.exceptions

from cube.harness import ROOT, BUSYBOX, force_remove
from cube.testbed import netns

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
# dockerd uses the machine's containerd when its socket exists (a containerd service), and then
# every engine of the bed would share it, and its namespace; an empty /run/containerd in the
# engine's own mount namespace makes it start its own, as it does on this machine.
_OWN_CONTAINERD = ('[ -S /run/containerd/containerd.sock ] && mount -t tmpfs -o mode=0700 cube-bed /run/containerd; '
                   'exec "$@"')


class Engine:
    """dockerd for host `host` (namespace `ns`), with everything under `root`."""

    def __init__(self, host: str, ns: str, root: pathlib.Path, bip: str):
        self.host, self.ns, self.root, self.bip = host, ns, root, bip
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        """Launch dockerd; `wait` checks that it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._log = open(self.root / "dockerd.log", "ab")
        config = self.root / "daemon.json"  # not the machine's /etc/docker/daemon.json (hosts, data-root...)
        config.write_text("{}\n")
        argv = [*netns.prefix(self.ns), "unshare", "--mount", "--propagation", "slave",
                "sh", "-c", _OWN_CONTAINERD, "sh", "dockerd", "--config-file", str(config),
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "docker.pid"), "-H", self.url, "--bip", self.bip,
                "--cgroup-parent", self.ns, "--log-level", "warn"]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dockerd of {self.host} exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with contextlib.closing(self.client(timeout=2)) as c:
                    c.ping()
                return
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd of {self.host} did not answer within {timeout:g}s: {self.log_tail()}")
                time.sleep(0.1)

    def client(self, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def load_busybox(self) -> None:
        """Build the local test image into this engine (there is no registry to pull from)."""
        result = subprocess.run(["bash", str(ROOT / "scripts" / "busybox-image.sh")], capture_output=True, text=True,
                                timeout=300, env={**os.environ, "DOCKER_HOST": self.url})
        if result.returncode != 0:
            raise RuntimeError(f"loading {BUSYBOX} into {self.host}'s dockerd failed: "
                               f"{result.stderr.strip() or result.stdout.strip()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """Remove every container, stop dockerd (it stops its containerd), then kill whatever is
        left in this host's cgroups. Never raises: teardown must go on."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                with contextlib.closing(self.client(timeout=20)) as c:
                    force_remove(c.containers.list(all=True, sparse=True))
            except Exception:
                pass
            self.proc.send_signal(signals.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        kill_cgroup(self.ns)
        if self._log is not None:
            self._log.close()
            self._log = None


def cgroup_dirs(parent: str) -> list[pathlib.Path]:
    """Every cgroup directory named `parent`, in each v1 hierarchy (at any depth: the memory
    hierarchy may be nested under the caller's own) and in v2, deepest first."""
    found: list[pathlib.Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
        depth = len(pathlib.Path(dirpath).relative_to(CGROUP_ROOT).parts)
        if parent in dirnames:
            found.append(pathlib.Path(dirpath) / parent)
            dirnames.remove(parent)
        if depth >= 4:
            dirnames.clear()
    return found


def kill_cgroup(parent: str) -> int:
    """SIGKILL every process under cgroup `parent` (containers of a dockerd that is gone) and remove
    the cgroup directories; returns how many processes were killed."""
    killed = 0
    for top in cgroup_dirs(parent):
        for _ in range(20):
            procs = [int(p) for d in top.rglob("cgroup.procs") for p in _read(d).split()]
            if not procs:
                break
            for pid in procs:
                try:
                    os.kill(pid, signals.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            try:
                d.rmdir()
            except OSError:
                pass
    return killed


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
