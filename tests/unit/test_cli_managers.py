"""The CLI with several managers (docs/ha.md): it follows `not_leader` to the leader, moves on from
a manager nothing listens at, and asks the leader when a follower answers its ping."""
from __future__ import annotations

import threading

import pytest
import zmq

from cube.cli import session
from cube.ha.etcd_process import free_port
from cube.wire.envelope import decode


class Manager:
    """A ROUTER answering every request with `answer(type)`: a reply body, or (code, message)."""

    def __init__(self, answer):
        self.port = free_port()
        self.answer = answer
        self.seen: list[str] = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            m = decode(frames[-1])
            self.seen.append(m.type)
            out = self.answer(m.type)
            reply = m.error(*out, "fake") if isinstance(out, tuple) else m.reply(out, "fake")
            self.sock.send_multipart([*frames[:-1], reply.encode()])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def managers():
    made: list[Manager] = []

    def make(answer) -> Manager:
        made.append(Manager(answer))
        return made[-1]
    yield make
    session.close()
    session._current.clear()
    for m in made:
        m.close()


def test_not_leader_is_followed_to_the_leader(managers):
    leader = managers(lambda t: {"tasks": [], "continue": ""})
    follower = managers(lambda t: ("not_leader", f"not leader: the leader is {leader.address}"))
    conn = session.Conn(session.address(f"{follower.address},{leader.address}", "--manager"), None)
    assert session.call(conn, "task.ls", {}) == {"tasks": [], "continue": ""}
    assert follower.seen == ["task.ls"] and leader.seen == ["task.ls"]
    assert conn.shown == leader.address  # later requests (and events) go to the leader
    session.call(conn, "task.ls", {})
    assert follower.seen == ["task.ls"]


def test_a_manager_nothing_listens_at_is_skipped(managers):
    leader = managers(lambda t: {"ok": 1})
    conn = session.Conn(session.address(f"127.0.0.1:{free_port()},{leader.address}", "CUBE_MANAGER"), None)
    assert session.call(conn, "task.ls", {}) == {"ok": 1}


def test_a_followers_ping_is_asked_of_the_leader(managers):
    leader = managers(lambda t: {"role": "leader", "events_port": 2})
    follower = managers(lambda t: {"role": "follower", "leader": leader.address, "events_port": 1})
    conn = session.Conn(session.address(f"{follower.address},{leader.address}", "--manager"), None)
    assert session.call(conn, "manager.ping", {})["events_port"] == 2


def test_several_addresses_are_checked_each():
    with pytest.raises(session.CliError, match="has no port"):
        session.address("127.0.0.1:5555,otherhost", "CUBE_MANAGER")
    assert session.address("a:1, b:2", "--manager") == "tcp://a:1,tcp://b:2"
