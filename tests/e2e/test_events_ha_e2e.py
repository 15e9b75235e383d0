"""`cube events` with several managers on etcd (issue 12 after review; docs/ha.md): the events
come from the leader even when CUBE_MANAGER names a follower first, and after the leader is
SIGKILLed the same command goes on with the new leader's events, no gap and no repeat. No workers:
every task stays Pending, one event each."""
from __future__ import annotations

import json
import subprocess
import threading

import pytest

from cube.ha.etcd_process import EtcdCluster, etcd_available
from cube.ha.harness import HACluster
from tests.support import started, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def ha(tmp_path, request):
    if not etcd_available():
        pytest.fail("etcd is not installed: these tests need Debian's etcd-server (scripts/setup.sh installs it)")
    etcd = EtcdCluster(str(tmp_path / "etcd"), 1).start()  # its own: a manager's keys are /cube/...
    try:
        with started(HACluster(etcd.endpoints, managers=2, lease_ttl=2, insecure=True), request) as cluster:
            yield cluster
    finally:
        etcd.stop()


class Events:
    """`cube events --since 0 --json` in the background, with the managers in the order given."""

    def __init__(self, ha: HACluster, order: list[int]):
        via = ha.nodes[order[0]]
        env = {**via.env, "CUBE_MANAGER": ",".join(f"{ha.nodes[i].host}:{ha.nodes[i].api_port}" for i in order)}
        self.proc = subprocess.Popen(via._command("cube.cli.main", "cube", ["events", "--since", "0", "--json"]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=via.tmp, stdin=subprocess.DEVNULL)
        self.lines: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def names(self) -> set[str]:
        return {e.get("name") for e in self.lines if e.get("type") == "task"}

    def stop(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err


def submit(ha: HACluster, name: str) -> str:
    return ha.call("task.start", {"task": {"name": name, "image": "cube-busybox:latest"}})["task"]["id"]


def stored(ha: HACluster) -> list[int]:
    out, after = [], 0
    while True:
        page = ha.call("events.since", {"seq": after})
        out += [e["seq"] for e in page["events"]]
        after = page["next"]
        if not page["more"]:
            return out


def test_events_follow_the_leader_named_second_and_a_new_leader_after_a_kill(ha):
    leader = ha.wait_leader()
    follower = 1 - leader
    submit(ha, "before")
    ev = Events(ha, [follower, leader])  # the follower first: it answers pings, not events
    try:
        wait_for(lambda: "before" in ev.names(), 30, "the stored event replayed")
        submit(ha, "live")
        wait_for(lambda: "live" in ev.names(), 30, "a live event from the leader")

        ha.kill(leader)  # a machine crash: the follower leads
        assert ha.wait_leader(30, other_than=leader) == follower
        submit(ha, "after")
        wait_for(lambda: "after" in ev.names(), 60, "the new leader's event, followed by the same command")
        assert ev.proc.poll() is None
    finally:
        err = ev.stop()
    seqs = [e["seq"] for e in ev.lines]
    assert seqs == sorted(set(seqs)), err  # no repeat, in order
    kept = stored(ha)
    assert seqs == [s for s in kept if s <= seqs[-1]], err  # no gap: every stored event printed
    assert "following the events of the manager" in err, err
