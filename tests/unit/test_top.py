"""`cube top`'s parts alone: the event tail reads no more than it shows, however far behind it is;
the screen keeps node names whole at 60 and 80 columns, leaving out the least important columns."""
from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from cube.cli import top
from cube.wire.errors import BAD_REQUEST, UNKNOWN_TYPE, CubeError


class Log:
    """An event log answering `events.since` as the manager does (docs/protocol.md, "Events")."""

    def __init__(self, n: int, missing: set[int] = frozenset()):
        self.newest = n
        self.missing = set(missing)  # numbers never stored (refused writes)
        self.requests: list[dict] = []
        self.read = 0  # events sent back, all requests together

    def __call__(self, msg_type: str, body: dict) -> dict:
        assert msg_type == top.EVENTS_SINCE
        self.requests.append(dict(body))
        if body.get("seq") is None:
            return {"events": [], "next": self.newest, "more": False, "last": self.newest, "after": self.newest}
        if body["seq"] > self.newest:
            raise CubeError(BAD_REQUEST, f"there is no event #{body['seq']} yet")
        limit = body.get("limit") or 1000
        seqs = [s for s in range(body["seq"] + 1, self.newest + 1) if s not in self.missing]
        page = seqs[:limit]
        self.read += len(page)
        return {"events": [{"seq": s, "type": "node", "node": "w1", "action": "joined", "time": 0} for s in page],
                "next": page[-1] if page else body["seq"], "more": len(seqs) > limit, "last": self.newest}


def shown(tail: top.EventTail) -> list[int]:
    return [e["seq"] for e in tail.events]


def test_the_first_refresh_reads_only_the_newest_events():
    log = Log(50_000)
    tail = top.EventTail(10)
    tail.poll(log)
    assert shown(tail) == list(range(49_991, 50_001))
    assert log.read == 10 and len(log.requests) == 2


def test_far_behind_it_jumps_to_the_newest_instead_of_reading_what_it_would_not_show():
    log = Log(100)
    tail = top.EventTail(10)
    tail.poll(log)
    log.newest = 100 + 5_000  # 5,000 events since the last refresh
    before = log.read
    tail.poll(log)
    assert shown(tail) == list(range(5_091, 5_101))
    assert log.read - before <= 20 and len(log.requests) == 4  # two requests of at most 10 each


def test_a_few_new_events_are_appended_and_a_quiet_refresh_reads_nothing():
    log = Log(100)
    tail = top.EventTail(10)
    tail.poll(log)
    log.newest += 3
    tail.poll(log)
    assert shown(tail) == list(range(94, 104))
    log.newest += 12  # just more than a page: the rest read from the newest 10
    tail.poll(log)
    assert shown(tail) == list(range(106, 116))
    before = log.read
    tail.poll(log)
    assert log.read == before and shown(tail) == list(range(106, 116))


def test_numbers_never_stored_are_skipped():
    log = Log(30, missing={25, 27})
    tail = top.EventTail(5)
    tail.poll(log)
    assert shown(tail) == [26, 28, 29, 30]


def test_a_manager_without_an_event_log_is_not_asked_again_and_a_refused_number_starts_from_now():
    def old(msg_type, body):
        raise CubeError(UNKNOWN_TYPE, "unknown message type")
    tail = top.EventTail(10)
    tail.poll(old)
    assert tail.missing and not tail.events
    log = Log(100)
    tail = top.EventTail(10)
    tail.poll(log)
    log.newest = 40  # another manager, behind this one: our number is refused
    tail.poll(log)
    assert tail.last is None
    tail.poll(log)
    assert shown(tail)[-1] == 40


# ---- the screen at narrow widths ---------------------------------------------------------------

def node(name: str, state: str = "ready") -> dict:
    return {"name": name, "state": state, "availability": "active", "cpus": 4.0, "memory": 8 << 30, "tasks": 3,
            "metrics": {"cpu_free": 1.5, "memory_free": 3 << 30, "state": "alive", "cpu_usage": 0.42,
                        "memory_total": 16 << 30, "memory_used": 9 << 30}}


def screen(width: int, names: list[str]) -> str:
    snap = {"ping": {"name": "manager", "version": "1", "state": "ready", "workers": len(names), "tasks": 3,
                     "states": {"Running": 3}},
            "nodes": [node(n) for n in names], "missing": "", "time": time.time(),
            "events": [{"seq": 7, "type": "task", "time": 0, "task_id": "abcdef0123456789", "name": "web-1",
                        "state": "Running", "worker": names[0], "reason": "started"}]}
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(top.view(snap, "tcp://127.0.0.1:5555", 2.0))
    out = console.file.getvalue()
    assert all(len(line) <= width for line in out.splitlines()), out
    return out


NAMES = ["t00c1a2-w1", "t00c1a2-w2", "t00c1a2-worker-long-3"]


@pytest.mark.parametrize("width, hidden", [
    (60, ["MEMORY RESERVED", "HOST CPU", "HOST MEM"]),
    (80, ["HOST CPU", "HOST MEM"]),
    (120, []),
])
def test_node_names_stay_whole_and_the_least_important_columns_go_first(width, hidden):
    out = screen(width, NAMES)
    for name in NAMES:
        assert name in out, f"{name} cut at {width} columns:\n{out}"
    header = next(line for line in out.splitlines() if "NAME" in line)
    for column in top.NODE_COLUMNS:
        assert (column in header) == (column not in hidden), f"{column} at {width} columns:\n{out}"
    if hidden:
        assert "hidden" in out and all(h in out for h in hidden)


def test_a_very_narrow_terminal_still_shows_names_and_states():
    out = screen(40, NAMES[:2])
    assert all(n in out for n in NAMES[:2]) and "ready" in out
