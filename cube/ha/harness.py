"""Several cube-managers on one etcd cluster, and workers that know them all (docs/ha.md).

For the HA end-to-end tests and bench/failover.py. Each manager is a `Cluster` of its own
(cube/harness.py: its ports, data dir, process, log) started with `--store etcd`; the workers
are started through the first one, with every manager's workers address. Requests go to the
leader, following `not_leader` answers as the CLI does.
"""
from __future__ import annotations

import signal as signals
import time
from typing import Any, Callable

from cube.harness import Cluster, wait_for
from cube.wire.client import Client
from cube.wire.errors import NOT_LEADER, CubeError, Unavailable, leader_in


class HACluster:
    def __init__(self, etcd: str, managers: int = 3, lease_ttl: float = 2.0, insecure: bool = True,
                 make: Callable[..., Cluster] | None = None, etcd_tls: Any = None, **cluster: Any):
        """`make(i, **kw)` builds manager i's Cluster (default: a Cluster on loopback; the test bed
        passes one on host i). `etcd_tls`: an EtcdTLS for https endpoints (cube/store/etcd.py).
        Plain http:// etcd off loopback (the test bed's private namespaces) is --etcd-plaintext."""
        self.etcd = etcd
        self.lease_ttl = lease_ttl
        make = make or (lambda i, **kw: Cluster(**kw))
        self.nodes = [make(i, store="etcd", insecure=insecure, **cluster) for i in range(managers)]
        from cube.config import is_loopback
        from cube.store.etcd import parse_endpoints
        transport: dict[str, str] = {}
        if etcd_tls is not None:
            transport = dict(CUBE_ETCD_CACERT=etcd_tls.cacert, CUBE_ETCD_CERT=etcd_tls.cert, CUBE_ETCD_KEY=etcd_tls.key)
        if any(s == "http" and not is_loopback(h) for s, h, _ in parse_endpoints(etcd)):
            transport["CUBE_ETCD_PLAINTEXT"] = "1"
        for n in self.nodes:
            n.env.update(CUBE_ETCD=etcd, CUBE_LEASE_TTL=str(lease_ttl), **transport)
        self.first = self.nodes[0]
        self.first.worker_managers = ",".join(f"{n.host}:{n.worker_port}" for n in self.nodes)
        self.leader_hint = 0

    # ---- processes -----------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "HACluster":
        """The first manager first: it leads and publishes the cluster's keys (cube/ha/security.py),
        which the others take."""
        self.first.start_manager(wait=False)
        self.wait_leader(timeout)
        for n in self.nodes[1:]:
            n.start_manager(wait=False)
        for i in range(1, len(self.nodes)):
            wait_for(lambda i=i: (self.ping(i) or {}).get("role") == "follower", timeout, f"manager {i} to follow")
        return self

    def start_worker(self, short: str, *flags: str, wait: bool = True, **where: Any) -> str:
        name = self.first.start_worker(short, *flags, wait=False, **where)
        if wait:
            wait_for(lambda: (self.nodes_view().get(name) or {}).get("state") == "ready", 30.0,
                     f"worker {name} to be ready")
        return name

    def kill(self, i: int, sig: int = signals.SIGKILL) -> None:
        """SIGKILL the whole cube-manager `i` (as a machine crash), or send another signal to its
        process group (SIGSTOP/SIGCONT: a frozen machine)."""
        n = self.nodes[i]
        n.signal("cube-manager", sig, wait=sig == signals.SIGKILL)

    def close(self) -> None:
        for n in reversed(self.nodes):  # the first one holds the workers and their containers
            try:
                n.signal("cube-manager", signals.SIGCONT, wait=False)
            except LookupError:
                pass
            n.close()

    # ---- who leads -----------------------------------------------------------------------------
    def ping(self, i: int, timeout: float = 1.0) -> dict[str, Any] | None:
        n = self.nodes[i]
        if not n.alive("cube-manager") or not (n.insecure or n.credentials_path.exists()):
            return None
        try:
            return self.nodes[i].call("manager.ping", timeout=timeout)
        except (CubeError, OSError):
            return None

    def leader(self) -> int | None:
        """The index of the manager that says it leads and is ready, if any."""
        for i in range(len(self.nodes)):
            p = self.ping(i)
            if p and p.get("role") == "leader" and p.get("state") == "ready":
                return i
        return None

    def wait_leader(self, timeout: float = 30.0, other_than: int | None = None) -> int:
        def found() -> tuple[int] | None:  # (index,): manager 0 leading is not "no leader"
            i = self.leader()
            return None if i is None or i == other_than else (i,)
        i = wait_for(found, timeout, "a manager to lead")[0]
        self.leader_hint = i
        return i

    # ---- requests, to the leader ---------------------------------------------------------------
    def call(self, msg_type: str, body: dict[str, Any] | None = None, timeout: float = 3.0,
             retry_for: float = 10.0) -> dict[str, Any]:
        """A request to the leader: a `not_leader` answer names it; a manager that does not answer
        is skipped. Retried for `retry_for` seconds while no manager leads."""
        deadline = time.monotonic() + retry_for
        i = self.leader_hint
        while True:
            n = self.nodes[i]
            creds = n.credentials()
            client = Client(n.endpoints["api"], name="harness", timeout=timeout, ctx=n.zmq_context,
                            curve=creds.curve() if creds else None)
            try:
                reply = client.call(msg_type, body or {})
                self.leader_hint = i
                return reply
            except Unavailable:
                i = self.leader_hint = (i + 1) % len(self.nodes)  # the next call starts there
                if time.monotonic() > deadline:
                    raise
            except CubeError as e:
                if e.code != NOT_LEADER:
                    raise
                named = leader_in(e.message)
                match = [j for j, m in enumerate(self.nodes) if named == f"{m.host}:{m.api_port}"]
                if match and match[0] != i:
                    i = self.leader_hint = match[0]
                elif time.monotonic() > deadline:
                    raise
                else:
                    time.sleep(0.1)
            finally:
                client.close()

    def tasks(self) -> dict[str, dict[str, Any]]:
        from cube.wire.client import all_pages
        rows = all_pages(lambda t, b: self.call(t, b), "task.ls", {"all": True, "limit": 5000}, "tasks")
        return {t["id"]: t for t in rows}

    def nodes_view(self) -> dict[str, dict[str, Any]]:
        from cube.wire.client import all_pages
        return {n["name"]: n for n in all_pages(lambda t, b: self.call(t, b), "node.ls", {}, "nodes")}

    def task(self, task_id: str) -> dict[str, Any]:
        return self.call("task.inspect", {"id": task_id})["task"]

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> Any:
        """`cube ARGS` with every manager's API address in CUBE_MANAGER (docs/ha.md), run where the
        last leader seen is (on the test bed: on the majority side of a partition)."""
        import subprocess
        via = self.nodes[self.leader_hint]
        env = {**via.env, "CUBE_MANAGER": ",".join(f"{n.host}:{n.api_port}" for n in self.nodes)}
        cmd = via._command("cube.cli.main", "cube", list(args))
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                cwd=via.tmp, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"cube {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"==== manager {i} ====\n{n.log_tail(lines)}" for i, n in enumerate(self.nodes))
