"""Network namespaces for the test bed: hosts on a switch, link cuts, code run inside a host.

The switch is a Linux bridge in a namespace of its own; each host is a namespace joined to it by a
veth pair (`eth0` in the host, a port named after the host on the switch). No address of the bed
is ever configured in the root namespace, so nothing the bed does can reach the machine's own
networks. A full partition takes the host's switch port down (a cut cable); a partition between
two hosts drops the frames between their two ports in the switch (nftables, bridge family), or,
where `nft` is missing, drops their addresses in both hosts' iptables.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time
from typing import Any, Callable

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`ip [-n NS] ARGS`; raises with ip's own message when it fails and `check`."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def names(prefix: str) -> list[str]:
    """The named network namespaces whose name starts with `prefix`."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def prefix(ns: str) -> list[str]:
    """The argv prefix that runs a command in namespace `ns`. nsenter, not `ip netns exec`: the
    latter also remounts /sys in a new mount namespace, which hides the cgroup mounts dockerd
    needs. nsenter execs the command (no fork), so a Popen's pid is the command's own."""
    return ["nsenter", f"--net={os.path.join(NETNS_DIR, ns)}"]


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (`ip netns pids`)."""
    result = ip("netns", "pids", ns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def enter(ns: str) -> None:
    """Move the *calling thread* into namespace `ns` (setns(2) acts on one thread only)."""
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(ns: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn(*args, **kwargs) in a fresh thread inside namespace `ns` and return its result (or
    raise its exception). Sockets it creates belong to `ns` and stay there when used from other
    threads afterwards; so do threads it starts (a ZeroMQ context's I/O threads)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            enter(ns)
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            out["error"] = e
    t = threading.Thread(target=run, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _oper_up(dev: str, ns: str) -> bool:
    """Whether `dev` in `ns` is operationally up (`ip -o link` says "state UP")."""
    return " state UP " in ip("-o", "link", "show", "dev", dev, ns=ns, check=False).stdout


class Switch:
    """A bridge in namespace `ns` with one port per host, and the cuts made on it."""

    TABLE = "cubebed"

    def __init__(self, ns: str):
        self.ns = ns
        self.cut_links: set[str] = set()  # hosts whose port is down
        self.cut_pairs: set[frozenset[str]] = set()  # host pairs that cannot talk
        self._nft = shutil.which("nft") is not None
        self._addresses: dict[str, tuple[str, str]] = {}  # host -> (its netns, its address)

    def create(self) -> None:
        ip("netns", "add", self.ns)
        ip("link", "set", "lo", "up", ns=self.ns)
        ip("link", "add", "br0", "type", "bridge", ns=self.ns)
        ip("link", "set", "br0", "up", ns=self.ns)

    def attach(self, host: str, host_ns: str, address: str, prefixlen: int) -> None:
        """Create `host_ns` and wire it to the switch: its eth0 at `address`, the switch's port `host`.
        The veth pair is made inside the switch namespace, so it never appears in the root one."""
        ip("netns", "add", host_ns)
        ip("link", "set", "lo", "up", ns=host_ns)
        ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", host_ns, ns=self.ns)
        ip("link", "set", host, "master", "br0", "up", ns=self.ns)
        ip("addr", "add", f"{address}/{prefixlen}", "dev", "eth0", ns=host_ns)
        ip("link", "set", "eth0", "up", ns=host_ns)
        self._addresses[host] = (host_ns, address)

    # ---- cuts -------------------------------------------------------------------------------
    def cut(self, host: str, other: str | None = None) -> None:
        """Cut `host` off the switch, or only from `other`. Idempotent."""
        if other is None:
            ip("link", "set", host, "down", ns=self.ns)
            self.cut_links.add(host)
            return
        pair = frozenset((host, other))
        if pair in self.cut_pairs:
            return
        if self._nft:
            try:
                self._nft_pair(host, other, add=True)
            except subprocess.CalledProcessError:
                self._nft = False  # nft without the bridge family in this kernel: cut in the hosts
        if not self._nft:
            self._iptables_pair(host, other, add=True)
        self.cut_pairs.add(pair)

    def mend(self, host: str | None = None, other: str | None = None) -> None:
        """Undo cuts: `host`'s own (and, with `other`, only the one between them); everything
        when `host` is None."""
        if host is None:
            for h in list(self.cut_links):
                self.mend(h)
            for pair in list(self.cut_pairs):
                self.mend(*sorted(pair))
            return
        if other is None:
            if host in self.cut_links:
                ip("link", "set", host, "up", ns=self.ns)
                self.wait_up(host)
                self.cut_links.discard(host)
            return
        pair = frozenset((host, other))
        if pair in self.cut_pairs:
            if self._nft:
                self._nft_pair(host, other, add=False)
            else:
                self._iptables_pair(host, other, add=False)
            self.cut_pairs.discard(pair)

    def wait_up(self, host: str, timeout: float = 10.0) -> None:
        """Until both ends of `host`'s link carry traffic: the kernel applies a carrier change
        (and so unblocks the device's queue) up to a second after the link is set up."""
        host_ns, _ = self._addresses[host]
        deadline = time.monotonic() + timeout
        while not (_oper_up(host, self.ns) and _oper_up("eth0", host_ns)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the link of {host} is not up {timeout:g}s after it was set up")
            time.sleep(0.02)

    def _nft_pair(self, a: str, b: str, add: bool) -> None:
        """One chain per cut pair in the switch's bridge table, so healing is deleting it."""
        chain = f"cut_{min(a, b)}_{max(a, b)}"
        if add:
            script = (f"add table bridge {self.TABLE}\n"
                      f"add chain bridge {self.TABLE} {chain} {{ type filter hook forward priority 0; policy accept; }}\n"
                      f"add rule bridge {self.TABLE} {chain} iifname \"{a}\" oifname \"{b}\" drop\n"
                      f"add rule bridge {self.TABLE} {chain} iifname \"{b}\" oifname \"{a}\" drop\n")
        else:
            script = f"delete chain bridge {self.TABLE} {chain}\n"
        subprocess.run([*prefix(self.ns), "nft", "-f", "-"], input=script, text=True, check=True,
                       capture_output=True, timeout=30)

    def _iptables_pair(self, a: str, b: str, add: bool) -> None:
        """Fallback without nft: each host drops the other's address coming in and going out."""
        for me, them in ((a, b), (b, a)):
            ns, _ = self._addresses[me]
            _, addr = self._addresses[them]
            for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                subprocess.run([*prefix(ns), "iptables", "-I" if add else "-D", chain, flag, addr, "-j", "DROP"],
                               check=True, capture_output=True, timeout=30)
