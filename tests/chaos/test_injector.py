"""The fault-injection point and the script parser, without a cluster (fast).

The injector is driven with a stand-in actor whose `transmit` records what went out and whose
loop collects `call_later` callbacks, so delays and reorders can be released deterministically.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from collections import Counter
from dataclasses import dataclass, field

import pytest

from cube.chaos import script as chaos_script
from cube.chaos.injector import Injector
from cube.chaos.rules import Rule, RuleFile, read_rules
from cube.wire.actor import Actor
from cube.wire.envelope import Envelope


class FakeLoop:
    def __init__(self) -> None:
        self.later: list[tuple[float, object]] = []

    def call_later(self, delay: float, fn) -> None:
        self.later.append((delay, fn))

    def fire(self) -> None:
        later, self.later = self.later, []
        for _, fn in sorted(later, key=lambda x: x[0]):
            fn()


@dataclass
class FakeActor:
    name: str = "manager"
    loop: FakeLoop = field(default_factory=FakeLoop)
    stats: Counter = field(default_factory=Counter)
    sent: list[tuple[str, list[bytes]]] = field(default_factory=list)

    def transmit(self, sock, frames, env) -> bool:
        self.sent.append((env.type, frames))
        return True

    def peer_name(self, route) -> str:
        return route[0].decode() if route else ""


def rig(tmp_path, *rules: Rule) -> tuple[Injector, FakeActor]:
    rf = RuleFile(str(tmp_path / "rules.json"), list(rules))
    rf.write()
    inj = Injector(rf.path)
    return inj, FakeActor()


def send(inj: Injector, actor: FakeActor, msg_type: str, to: str = "", payload: bytes = b"p") -> None:
    env = Envelope(msg_type, {}, route=[to.encode()] if to else [])
    inj.send(actor, None, [*env.route, payload], env)


def test_drop_by_type_sender_and_peer_for_a_count(tmp_path):
    inj, actor = rig(tmp_path, Rule("r", "drop", sender="manager", type="ok", to="w1", count=2))
    for to in ("w1", "w2", "w1", "w1"):
        send(inj, actor, "ok", to)
    send(inj, actor, "worker.run", "w1")
    assert [f[0] for _, f in actor.sent] == [b"w2", b"w1", b"w1"]
    assert actor.stats["chaos.drop"] == 2


def test_other_senders_and_expired_rules_are_untouched(tmp_path):
    inj, actor = rig(tmp_path, Rule("a", "drop", sender="w*", type="*"),
                     Rule("b", "drop", sender="*", type="*", until=time.time() - 1))
    send(inj, actor, "task.status")
    assert len(actor.sent) == 1


def test_delay_is_released_by_the_loop_not_by_a_thread(tmp_path):
    inj, actor = rig(tmp_path, Rule("d", "delay", type="worker.heartbeat", delay=1.5))
    send(inj, actor, "worker.heartbeat")
    assert actor.sent == [] and actor.loop.later[0][0] == 1.5
    actor.loop.fire()
    assert [t for t, _ in actor.sent] == ["worker.heartbeat"]


def test_duplicate_and_corrupt(tmp_path):
    inj, actor = rig(tmp_path, Rule("d", "duplicate", type="worker.run", copies=3),
                     Rule("c", "corrupt", type="worker.stop", payload="c1c1"))
    send(inj, actor, "worker.run", "w1")
    send(inj, actor, "worker.stop", "w1")
    assert [t for t, _ in actor.sent] == ["worker.run"] * 3 + ["worker.stop"]
    assert actor.sent[-1][1] == [b"w1", b"\xc1\xc1"]  # the route survives, the payload does not


def test_reorder_sends_a_full_window_newest_first_and_flushes_a_partial_one(tmp_path):
    inj, actor = rig(tmp_path, Rule("o", "reorder", type="task.status", window=3, hold=0.5))
    for p in (b"1", b"2", b"3", b"4"):
        send(inj, actor, "task.status", payload=p)
    assert [f[-1] for _, f in actor.sent] == [b"3", b"2", b"1"]
    actor.loop.fire()  # the hold timer releases the partial window
    assert [f[-1] for _, f in actor.sent][-1] == b"4"


def test_rules_file_changes_are_picked_up_and_a_bad_file_keeps_the_old_rules(tmp_path):
    rf = RuleFile(str(tmp_path / "rules.json"))
    rf.write()
    inj, actor = Injector(rf.path), FakeActor()
    send(inj, actor, "ok")
    rf.add(Rule("x", "drop", type="ok"))
    inj._next_check = 0.0  # skip the 100 ms throttle
    send(inj, actor, "ok")
    assert len(actor.sent) == 1
    with open(rf.path, "w") as f:
        f.write("{not json")
    inj._next_check = 0.0
    send(inj, actor, "ok")
    assert len(actor.sent) == 1 and len(inj.rules) == 1
    os.remove(rf.path)
    inj._next_check = 0.0
    send(inj, actor, "ok")
    assert len(actor.sent) == 2 and inj.rules == []


def test_rule_round_trip_and_bad_action():
    r = Rule("r", "delay", sender="w1", type="ok", delay=0.2, count=3)
    assert Rule.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError):
        Rule("r", "explode")


def test_the_chaos_hook_is_inert_unless_chaos_mode_is_on():
    code = ("import sys, cube.wire.actor as a, cube.chaos.hook as h; x = a.Actor('x'); h.attach(x); "
            "print(x.outbox is None, 'cube.chaos.injector' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBE_CHAOS")}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    on = subprocess.run([sys.executable, "-c", code], env={**env, "CUBE_CHAOS": "1"},
                        capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["True", "False"]  # no outbox, and the injector never imported
    assert on.stdout.split() == ["False", "True"]


def test_without_an_outbox_a_send_goes_straight_to_transmit():
    actor = Actor("plain")
    sock = type("Sock", (), {"type": 5})()  # zmq.DEALER
    seen = []
    actor.transmit = lambda sock, frames, env: seen.append(env.type) or True  # type: ignore[method-assign]
    assert actor.send(sock, Envelope("x.y")) and seen == ["x.y"]
    actor.outbox = lambda a, sock, frames, env: seen.append("outbox") or True
    assert actor.send(sock, Envelope("x.z")) and seen == ["x.y", "outbox"]
    actor.loop.close()


# ---- scripts --------------------------------------------------------------------------------------

def test_every_script_in_the_suite_parses():
    scripts = sorted((__import__("pathlib").Path(__file__).parent / "scripts").glob("*.toml"))
    for path in scripts:
        s = chaos_script.load(str(path))
        assert s.steps and s.name, path


@pytest.mark.parametrize("text,needle", [
    ('[[step]]\ndo = "explode"', "unknown step"),
    ('[[step]]\ndo = "start"\ncuont = 3', "unknown key 'cuont'"),
    ('[[step]]\ndo = "kill"', "'target' is required"),
    ('[[step]]\ndo = "send"\nto = "api"', "give a message type"),
    ('[cluster]\nworkers = "two"', "workers must be"),
    ('[cluster]\nworkers = 1\nlater = ["w9"]', "later names a worker"),
    ('bogus = 1', "unknown top-level key"),
])
def test_malformed_scripts_are_refused_with_the_reason(tmp_path, text, needle):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(chaos_script.ScriptError) as e:
        chaos_script.load(str(path))
    assert needle in str(e.value)


def test_read_rules_matches_what_the_runner_writes(tmp_path):
    rf = RuleFile(str(tmp_path / "r.json"))
    rf.add(Rule("a", "drop"))
    rf.add(Rule("b", "delay", delay=1.0))
    rf.add(Rule("a", "duplicate"))  # same id replaces
    assert [(r.id, r.action) for r in read_rules(rf.path)] == [("b", "delay"), ("a", "duplicate")]
    assert rf.remove("b") == 1 and rf.remove() == 1 and read_rules(rf.path) == []
