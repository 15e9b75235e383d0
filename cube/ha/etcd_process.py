"""Throwaway etcd members on loopback, for tests and benchmarks (docs/ha.md, "Testing").

Debian's `etcd-server` package provides /usr/bin/etcd (3.4 on Debian 12); nothing is downloaded.
Each member gets free loopback ports and its own data dir under `root`; `stop()` kills every
member and removes nothing the caller did not give us (the caller owns `root`).

With `tls` (a TestPKI: `make_pki`, throwaway certificates made with the `openssl` CLI) members
serve clients on https only and ask each for a certificate signed by its CA (--client-cert-auth).

On the multi-host test bed (cube/testbed) member i listens on `ips[i]`, is started with the argv
prefix `prefixes[i]` (its host's network namespace), and is probed through `probe(i, fn)`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
# The flags Cube needs from any etcd it uses (docs/ha.md): a Manager's group commit and prune
# are transactions of up to a few thousand operations, and a request may approach 1.4 MiB once
# its values are base64-encoded by the gateway.
CUBE_FLAGS = ["--max-txn-ops", "10000", "--max-request-bytes", "10485760",
              "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000"]


@dataclass
class TestPKI:
    """A throwaway CA, a server certificate for `ip` and a client certificate (PEM files)."""
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client(self) -> Any:
        """The manager's side: an EtcdTLS (cube/store/etcd.py)."""
        from cube.store.etcd import EtcdTLS
        return EtcdTLS(self.ca, self.client_cert, self.client_key)

    def context(self) -> Any:
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_pki(root: str, ips: tuple[str, ...] = ("127.0.0.1",)) -> TestPKI:
    """Keys (P-256) and certificates valid for a day, under `root` (made, private)."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    f = lambda name: os.path.join(root, name)  # noqa: E731

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "1", "-subj", "/CN=cube-test-ca")
    for name, ext in (("server", f"subjectAltName={','.join('IP:' + ip for ip in ips)}\n"
                                 "extendedKeyUsage=serverAuth,clientAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(f(name + ".ext"), "w") as out:
            out.write(ext)
        run("req", "-new", *key, "-keyout", f(name + ".key"), "-out", f(name + ".csr"), "-subj", f"/CN=cube-{name}")
        run("x509", "-req", "-in", f(name + ".csr"), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial",
            "-out", f(name + ".crt"), "-days", "1", "-extfile", f(name + ".ext"))
    return TestPKI(f("ca.crt"), f("server.crt"), f("server.key"), f("client.crt"), f("client.key"))


def etcd_available() -> bool:
    return os.access(ETCD, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    ip: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    tls: TestPKI | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{self.peer_port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=0.5,
                                        context=self.tls.context() if self.tls else None) as r:
                return b'"true"' in r.read()
        except OSError:
            return False


@dataclass
class EtcdCluster:
    """`size` members forming one cluster (1 for store tests, 3 for HA tests)."""

    root: str
    size: int = 1
    members: list[Member] = field(default_factory=list)
    ips: list[str] | None = None  # member i's address (default loopback)
    prefixes: list[list[str]] | None = None  # member i's argv prefix (default none)
    probe: Callable[[int, Callable[[], Any]], Any] = lambda i, fn: fn()  # run fn where member i is reachable
    flags: list[str] = field(default_factory=lambda: list(CUBE_FLAGS))  # [] runs etcd with its own defaults
    tls: TestPKI | None = None  # clients on https with certificates (peers stay on plain http)

    def start(self, timeout: float = 30.0, tries: int = 2) -> "EtcdCluster":
        """Start the members and wait until they are healthy. A free port can be taken by another
        process between choosing it and etcd binding it (tests run side by side): a start whose
        member exited is tried again once on new ports, in a fresh data dir."""
        for attempt in range(tries):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                self.stop()
                if attempt == tries - 1 or "exited with" not in str(e):
                    raise
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "EtcdCluster":
        if not etcd_available():
            raise RuntimeError("etcd is not installed: apt-get install etcd-server (scripts/setup.sh does)")
        self.members = [Member(f"m{i}", free_port(), free_port(), os.path.join(self.root, f"etcd-m{i}"),
                               os.path.join(self.root, f"etcd-m{i}.log"),
                               ip=self.ips[i] if self.ips else "127.0.0.1",
                               prefix=list(self.prefixes[i]) if self.prefixes else [], tls=self.tls)
                        for i in range(self.size)]
        os.makedirs(self.root, exist_ok=True)
        for m in self.members:
            self._launch(m, "new")
        self.wait_healthy(timeout)
        return self

    def _launch(self, m: Member, state: str) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        cmd = [*m.prefix, ETCD, "--name", m.name, "--data-dir", m.data_dir,
               "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
               "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
               "--initial-cluster", initial, "--initial-cluster-state", state,
               "--initial-cluster-token", f"cube-test-{os.getpid()}-{id(self)}",
               "--heartbeat-interval", "100", "--election-timeout", "1000",
               "--logger", "zap", "--log-level", "warn", *self.flags]
        if self.tls is not None:
            cmd += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                    "--trusted-ca-file", self.tls.ca, "--client-cert-auth"]
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.probe(i, m.healthy) for i, m in enumerate(self.members) if m.proc is not None):
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited with {m.proc.returncode}: {self._tail(m)}")
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not become healthy in time: "
                                   + " | ".join(self._tail(m) for m in self.members))
            time.sleep(0.1)

    @staticmethod
    def _tail(m: Member) -> str:
        try:
            with open(m.log_path, "rb") as f:
                return f.read()[-600:].decode(errors="replace")
        except OSError:
            return "(no log)"

    @property
    def endpoints(self) -> str:
        """The `--etcd` value for cube-manager."""
        return ",".join(m.url for m in self.members)

    def kill(self, i: int) -> None:
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)
        m.proc = None

    def restart(self, i: int) -> None:
        self._launch(self.members[i], "existing")

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)
