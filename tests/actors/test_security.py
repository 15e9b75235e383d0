"""Attacks on a secure cluster, in one process over real ZeroMQ sockets: each one must fail.

A secure Manager (CURVE on every socket, the ZAP gate, the keyring), its own secure Scheduler on
the same data dir where metrics matter, and secure Worker actors that join with the token. The
attackers are raw sockets: plaintext, unknown CURVE keys, keys that joined under another name.
"""
from __future__ import annotations

import os
import time

import pytest
import zmq
import zmq.auth

from cube.actors.metrics import Capacity
from cube.actors.scheduler import SchedulerActor
from cube.actors.worker import Worker, WorkerConfig
from cube.messages import node as node_msg
from cube.messages import task as task_msg
from cube.messages import worker as worker_msg
from cube.runtime.fake import FakeRuntime
from cube.security.authority import Addresses, Authority
from cube.security.curve import CurveClient
from cube.security.keys import Keypair
from cube.store.memory import MemoryStore
from cube.wire.client import Client, Refused
from cube.wire.envelope import Envelope, decode
from cube.wire.errors import CubeError
from tests.actors.helpers import GiB, free_ports, metrics_sample, tcp, wait_for

SECRET_ENV = {"DB_PASSWORD": "hunter2", "API_TOKEN": "s3cr3t"}
HIDDEN = {"DB_PASSWORD": "<hidden>", "API_TOKEN": "<hidden>"}


# ---- a secure cluster in one process ------------------------------------------------------------

class Secure:
    """A secure Manager (+ Scheduler on its data dir), admin credentials, and helpers to make
    secure workers and attacking sockets."""

    def __init__(self, actors, tmp_path, scheduler: bool = True):
        self.actors, self.tmp_path = actors, tmp_path
        self.data_dir = str(tmp_path / "manager")
        self.sched = None
        overrides = {}
        if scheduler:
            api, metrics = (tcp(p) for p in free_ports(2))
            self.sched = SchedulerActor(api, metrics, algorithm="roundrobin", stale_after=2.0,
                                        data_dir=self.data_dir)
            actors.start(self.sched)
            overrides = {"scheduler_endpoint": api, "metrics_port": int(metrics.rsplit(":", 1)[1])}
        self.manager = actors.manager(insecure=False, grace=2.0, **overrides)
        self.config = self.manager.config
        self.authority = self.manager.authority
        self.admin_creds = self.authority.issue("admin", "admin")
        self.api_endpoint = tcp(self.config.api_port)
        self.workers_endpoint = tcp(self.config.worker_port)
        self.events_endpoint = tcp(self.config.events_port)
        self.admin = self.client(self.admin_creds.curve())

    @property
    def server_key(self) -> bytes:
        return self.authority.keypair.public

    def client(self, curve=None, timeout: float = 3.0, endpoint: str = "") -> Client:
        c = Client(endpoint or self.api_endpoint, name="test", timeout=timeout, ctx=self.actors.ctx, curve=curve)
        self.actors._clients.append(c)
        return c

    def stranger(self) -> CurveClient:
        """A well-formed CURVE client with the right server key, but a key nobody issued."""
        return CurveClient(Keypair.generate(), self.server_key)

    def dealer(self, curve=None, endpoint: str = "", identity: bytes | None = None) -> zmq.Socket:
        s = self.actors.socket(zmq.DEALER)
        if curve is not None:
            curve.apply(s)
        if identity:
            s.setsockopt(zmq.IDENTITY, identity)
        s.connect(endpoint or self.workers_endpoint)
        return s

    def worker(self, name: str, runtime: FakeRuntime | None = None, token: str | None = None,
               data_dir: str = "", start: bool = True) -> Worker:
        data_dir = data_dir or str(self.tmp_path / f"worker-{name}")
        os.makedirs(data_dir, exist_ok=True)
        config = WorkerConfig(manager=f"127.0.0.1:{self.config.worker_port}", name=name, address="127.0.0.1",
                              data_dir=data_dir, metrics_interval=0.2, stop_timeout=0.5,
                              join=str(self.authority.token) if token is None else token, insecure=False)
        w = Worker(config, runtime or FakeRuntime(), MemoryStore(), Capacity(2.0, 2 * GiB, 16 * GiB))
        if start:
            self.actors.start(w, w.run)
        return w

    def wait_ready(self, *names: str) -> None:
        def ready():
            nodes = {n["name"]: n for n in self.admin.call("node.ls")["nodes"]}
            return all(nodes.get(n, {}).get("state") == "ready" and nodes[n].get("metrics") for n in names)
        wait_for(ready, timeout=10, what=f"workers {names} ready with metrics")

    def start_task(self, client: Client | None = None, **spec) -> dict:
        return (client or self.admin).call("task.start", {"task": {"image": "img:1", **spec}})["task"]

    def task(self, task_id: str, client: Client | None = None) -> dict:
        return (client or self.admin).call("task.inspect", {"id": task_id})["task"]

    def wait_state(self, task_id: str, state: str, timeout: float = 10.0, **fields) -> dict:
        def check():
            t = self.task(task_id)
            return t if t["state"] == state and all(t.get(k) == v for k, v in fields.items()) else None
        return wait_for(check, timeout=timeout, what=f"task {task_id[:8]} {state} {fields or ''}")


@pytest.fixture
def secure(actors, tmp_path):
    return Secure(actors, tmp_path, scheduler=False)


@pytest.fixture
def secure_sched(actors, tmp_path):
    return Secure(actors, tmp_path, scheduler=True)


def request(sock: zmq.Socket, msg_type: str, body: dict) -> Envelope:
    """Send a request without blocking: a socket whose handshake was refused has no pipe to queue
    on (ZeroMQ dropped it), which for the attacker is the same as never being answered."""
    env = Envelope(msg_type, body, sender="attacker")
    try:
        sock.send(env.encode(), zmq.NOBLOCK)
    except zmq.Again:
        pass
    return env


def reply_to(sock: zmq.Socket, env: Envelope, timeout: float = 3.0) -> Envelope | None:
    """The reply to `env` on `sock`, or None if none came within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000, zmq.POLLIN):
            return None
        got = decode(sock.recv_multipart()[-1])
        if got.re == env.id:
            return got


def drain(sock: zmq.Socket, seconds: float) -> list[Envelope]:
    """Everything `sock` receives during `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        if sock.poll(left * 1000, zmq.POLLIN):
            out.append(decode(sock.recv_multipart()[-1]))


def hello_body(name: str) -> dict:
    return {"name": name, "address": "127.0.0.1", "cpus": 64.0, "memory": 256 * GiB, "disk": 1024 * GiB,
            "tasks": [], "clock": [time.time_ns(), 1]}


def auth_stats(actor, label: str) -> dict[str, int]:
    return {k: v for k, v in dict(actor.stats).items() if k.startswith(f"auth.{label}.")}


# ---- 1, 2: clients that are not who the API admits --------------------------------------------

def test_a_plaintext_client_gets_no_reply_and_is_counted(secure):
    sock = secure.dealer(endpoint=secure.api_endpoint)  # no CURVE at all
    ping = request(sock, node_msg.PING, {})
    assert reply_to(sock, ping, timeout=1.0) is None
    wait_for(lambda: auth_stats(secure.manager, "api"), timeout=5,
             what="the manager to count a failed handshake on the API")


def test_the_client_says_refused_for_plaintext_or_another_managers_key(secure):
    """Refused at once, and never "cannot reach": the server is there. A plaintext peer's or a
    wrong server key's handshake is cut short with a protocol error or without detail (then
    retried): each outcome is a race, so try fresh clients a number of times."""
    for label, curve in (("plaintext", None),
                         ("another manager's key", CurveClient(Keypair.generate(), Keypair.generate().public))):
        for attempt in range(15):
            client = secure.client(curve=curve, timeout=5.0)
            t0 = time.monotonic()
            with pytest.raises(CubeError) as e:
                client.call(node_msg.PING)
            client.close()
            assert isinstance(e.value, Refused), f"{label}, attempt {attempt}: {type(e.value).__name__}: {e.value}"
            assert time.monotonic() - t0 < 2.0, f"{label}: Refused should come from the handshake, not the timeout"
            assert "refused these credentials" in e.value.message


def test_an_unknown_client_key_gets_no_reply_and_refused(secure):
    stranger = secure.stranger()
    sock = secure.dealer(curve=stranger, endpoint=secure.api_endpoint)
    listing = request(sock, task_msg.LIST, {})
    assert reply_to(sock, listing, timeout=1.0) is None
    client = secure.client(curve=secure.stranger(), timeout=5.0)
    t0 = time.monotonic()
    with pytest.raises(Refused):
        client.call(task_msg.LIST, {})
    assert time.monotonic() - t0 < 2.0
    wait_for(lambda: auth_stats(secure.manager, "api").get("auth.api.refused_key"), timeout=5,
             what="the refused key to be counted")
    assert secure.manager.gate.refused.get("api", 0) >= 2
    # a key issued for a client does not open the workers' socket for commands either: the
    # manager ignores every message of a key not bound to a worker name (not even an error)
    admin_on_workers = secure.dealer(curve=secure.admin_creds.curve())
    hb = request(admin_on_workers, worker_msg.HEARTBEAT, {"name": "w1"})
    assert reply_to(admin_on_workers, hb, timeout=1.0) is None
    assert secure.manager.stats["ignored.a key that has not joined"] >= 1
    # ... and the admin's key is still good where it belongs
    assert secure.admin.call(node_msg.PING)["state"] == "ready"


# ---- 3: read-only credentials -----------------------------------------------------------------

def test_read_only_credentials_can_look_but_not_touch(secure):
    task = secure.start_task(name="web")
    ro_creds = secure.authority.issue("ro", "read-only")
    ro = secure.client(curve=ro_creds.curve(), timeout=3.0)
    assert [t["id"] for t in ro.call(task_msg.LIST, {})["tasks"]] == [task["id"]]
    assert ro.call(node_msg.LIST, {})["nodes"] == []
    assert ro.call(task_msg.INSPECT, {"id": task["id"]})["task"]["id"] == task["id"]
    for msg_type, body in ((task_msg.START, {"task": {"image": "img:1", "name": "evil"}}),
                           (task_msg.STOP, {"id": task["id"]}),
                           (node_msg.REMOVE, {"name": "w1"}),
                           (node_msg.JOIN_TOKEN, {}),
                           (node_msg.JOIN_TOKEN, {"rotate": True}),
                           (node_msg.CREDENTIALS, {"name": "escalate", "role": "admin"})):
        with pytest.raises(CubeError) as e:
            ro.call(msg_type, body)
        assert e.value.code == "forbidden", (msg_type, e.value.code, e.value.message)
    # nothing happened: one task, still wanted; no admin credentials were issued to it
    [t] = secure.admin.call(task_msg.LIST, {"all": True})["tasks"]
    assert t["id"] == task["id"] and t["desired"] == "running"
    assert [c["name"] for c in secure.authority.keyring.clients.values()] == ["admin", "ro"]


# ---- 4: a rogue worker ------------------------------------------------------------------------

def test_a_rogue_worker_key_cannot_register_nor_join_without_the_secret(secure):
    rogue = secure.dealer(curve=secure.stranger())  # the workers socket admits its handshake
    for msg_type, body in ((worker_msg.HELLO, hello_body("rogue")), (worker_msg.HEARTBEAT, {"name": "rogue"}),
                           (worker_msg.STATUS, {"task_id": "t" * 32, "attempt": 1, "state": "running"})):
        env = request(rogue, msg_type, body)
        assert reply_to(rogue, env, timeout=1.0) is None, msg_type  # ignored: a stranger learns nothing
    wrong = request(rogue, worker_msg.JOIN, {"name": "rogue", "address": "127.0.0.1", "secret": "0" * 32})
    reply = reply_to(rogue, wrong)
    assert reply is not None and reply.body["code"] == "forbidden", reply
    assert "token" in reply.body["message"]
    assert secure.manager.stats["joins_refused"] == 1
    # still a stranger: its hello is ignored again, and nobody was registered or bound
    hello = request(rogue, worker_msg.HELLO, hello_body("rogue"))
    assert reply_to(rogue, hello, timeout=1.0) is None
    assert secure.manager.registry.get("rogue") is None
    assert secure.admin.call(node_msg.LIST, {})["nodes"] == []
    assert secure.authority.keyring.workers == {}


# ---- 5: taking over a joined worker's name ----------------------------------------------------

def test_a_hijacker_never_receives_a_joined_workers_commands(secure_sched):
    s = secure_sched
    runtime = FakeRuntime()
    s.worker("w1", runtime)
    s.wait_ready("w1")
    # A: another key, its connection named after the worker (ROUTER identity "w1")
    a = s.dealer(curve=s.stranger(), identity=b"w1")
    hb = request(a, worker_msg.HEARTBEAT, {"name": "w1"})
    assert reply_to(a, hb, timeout=1.0) is None
    # B: joins honestly (it has the token) as "evil", then speaks for w1
    b = s.dealer(curve=s.stranger(), identity=b"w1-b")
    join = request(b, worker_msg.JOIN, {"name": "evil", "address": "127.0.0.1", "secret": s.authority.token.secret})
    assert reply_to(b, join).type == "ok"
    hello = request(b, worker_msg.HELLO, hello_body("w1"))
    reply = reply_to(b, hello)
    assert reply.type == "error" and reply.body["code"] == "bad_request" and "evil" in reply.body["message"]
    hb = request(b, worker_msg.HEARTBEAT, {"name": "w1"})  # counted for "evil", who never said hello
    assert reply_to(b, hb).body["code"] == "not_found"
    assert s.manager.registry.get("evil") is None

    tasks = [s.start_task(name=f"web{i}") for i in range(3)]
    for t in tasks:
        running = s.wait_state(t["id"], "Running", worker="w1")
        assert [c.task_id for c in runtime.list() if c.container_id == running["container_id"]] == [t["id"]]
    s.admin.call(task_msg.STOP, {"id": tasks[0]["id"]})
    s.wait_state(tasks[0]["id"], "Completed")
    got = drain(a, 0.5) + drain(b, 0.5)
    assert not [e for e in got if e.type in worker_msg.TO_WORKER], [e.type for e in got]
    assert s.manager.registry.get("w1").route != [b"w1"]

    # B registers as itself ("evil"), then reports on w1's task: a report counts for the worker
    # its key is bound to, and the task is not evil's
    victim = s.task(tasks[1]["id"])
    reply = reply_to(b, request(b, worker_msg.HELLO, {**hello_body("evil"), "cpus": 0.1}))
    assert reply.type == "ok", reply
    forged = request(b, worker_msg.STATUS, {"task_id": victim["id"], "attempt": victim["attempt"],
                                            "state": "exited", "exit_code": 1, "container_id": victim["container_id"],
                                            "clock": [time.time_ns(), 99]})
    reply = reply_to(b, forged)
    assert reply.type == "ok" and reply.body.get("ignored") == "stale", reply
    time.sleep(0.3)
    after = s.task(victim["id"])
    assert (after["state"], after["worker"], after["attempt"]) == ("Running", "w1", victim["attempt"])
    assert not [e for e in drain(b, 0.3) if e.type == worker_msg.RUN]


# ---- 6: a second worker under a taken name ----------------------------------------------------

def test_a_second_worker_under_a_taken_name_is_refused(secure_sched):
    s = secure_sched
    s.worker("w1")
    s.wait_ready("w1")
    w1_key = s.authority.keyring.workers["w1"]
    impostor = s.worker("w1", data_dir=str(s.tmp_path / "impostor"))  # the token, but another key
    wait_for(lambda: impostor.fatal, timeout=10, what="the impostor to give up")
    assert "w1" in impostor.fatal and "already joined with another key" in impostor.fatal
    assert not impostor.registered
    # the same through a raw socket: the refusal names the conflict
    raw = s.dealer(curve=s.stranger())
    join = request(raw, worker_msg.JOIN, {"name": "w1", "address": "127.0.0.1", "secret": s.authority.token.secret})
    reply = reply_to(raw, join)
    assert reply.body["code"] == "forbidden" and "'w1' already joined" in reply.body["message"]
    # the real w1 is untouched
    assert s.authority.keyring.workers == {"w1": w1_key}
    s.wait_ready("w1")


# ---- 7: a revoked worker ----------------------------------------------------------------------

def test_a_removed_worker_is_revoked_gives_up_and_its_tasks_move(secure_sched):
    s = secure_sched
    runtimes = {"w1": FakeRuntime(port_base=31000), "w2": FakeRuntime(port_base=32000)}
    workers = {name: s.worker(name, rt) for name, rt in runtimes.items()}
    s.wait_ready("w1", "w2")
    t = s.start_task(name="web")
    victim = s.wait_state(t["id"], "Running")["worker"]
    other = "w2" if victim == "w1" else "w1"
    key = s.authority.keyring.workers[victim]
    secret_file = os.path.join(str(s.tmp_path / f"worker-{victim}"), "curve", "worker.key_secret")
    public, secret = zmq.auth.load_certificate(secret_file)
    assert public.decode() == key

    reply = s.admin.call(node_msg.REMOVE, {"name": victim})
    assert reply == {"name": victim, "revoked": True}
    assert s.authority.keyring.revoked == {key: victim} and victim not in s.authority.keyring.workers

    # the removed worker learns it on its next heartbeat, and gives up with a reason
    wait_for(lambda: workers[victim].fatal, timeout=10, what=f"{victim} to give up")
    assert "revoked" in workers[victim].fatal
    assert s.manager.stats["refused.not_joined"] >= 1  # its heartbeat on the connection it still had
    # its tasks move to the other worker
    moved = s.wait_state(t["id"], "Running", worker=other, timeout=15)
    assert moved["attempt"] > 1

    # its key, from a new connection, cannot even complete a handshake
    stolen = s.dealer(curve=CurveClient(Keypair(public, secret), s.server_key))
    for msg_type, body in ((worker_msg.HELLO, hello_body(victim)), (worker_msg.HEARTBEAT, {"name": victim})):
        env = request(stolen, msg_type, body)
        assert reply_to(stolen, env, timeout=1.0) is None, msg_type
    wait_for(lambda: auth_stats(s.manager, "workers").get("auth.workers.refused_key"), timeout=5,
             what="the revoked key's handshake to be counted")


# ---- 8: forged metrics ------------------------------------------------------------------------

@pytest.fixture
def metrics(actors, tmp_path):
    """A secure Scheduler on a manager data dir (keypair + keyring made by an Authority) where
    w1 and w3 joined; a client to its API."""
    data_dir = str(tmp_path / "manager")
    authority = Authority(data_dir, Addresses(api="127.0.0.1:1", events="127.0.0.1:2", workers="127.0.0.1:3"))
    keys = {name: Keypair.generate() for name in ("w1", "w3")}
    for name, pair in keys.items():
        authority.keyring.bind_worker(name, pair.public_text, f"10.0.0.{name[1]}")
    api, metrics_ep = (tcp(p) for p in free_ports(2))
    sched = SchedulerActor(api, metrics_ep, algorithm="roundrobin", data_dir=data_dir)
    actors.start(sched)

    class M:
        pass
    m = M()
    m.sched, m.endpoint, m.keys, m.authority = sched, metrics_ep, keys, authority
    m.client = actors.client(api)

    def publisher(curve):
        pub = actors.socket(zmq.PUB)
        if curve is not None:
            curve.apply(pub)
        pub.connect(metrics_ep)
        return pub
    m.publisher = publisher
    m.as_worker = lambda name: CurveClient(keys[name], authority.keypair.public)
    return m


def publish(pub: zmq.Socket, sample: dict) -> None:
    pub.send_multipart([node_msg.METRICS.encode(), Envelope(node_msg.METRICS, sample).encode()])


def nodes(m) -> dict[str, dict]:
    return {n["name"]: n for n in m.client.call("sched.nodes")["nodes"]}


def test_metrics_from_unknown_keys_never_reach_the_view(metrics):
    m = metrics
    stranger = m.publisher(CurveClient(Keypair.generate(), m.authority.keypair.public))
    plain = m.publisher(None)
    honest = m.publisher(m.as_worker("w1"))
    for seq in range(1, 40):  # until the honest one is seen: the strangers had as long
        publish(stranger, metrics_sample("evil", seq, cpus=64.0))
        publish(plain, metrics_sample("evil2", seq, cpus=64.0))
        publish(plain, metrics_sample("w1", seq, cpus=64.0))
        publish(honest, metrics_sample("w1", seq))
        time.sleep(0.05)
        if "w1" in nodes(m) and seq > 10:
            break
    view = nodes(m)
    assert set(view) == {"w1"} and view["w1"]["cpus"] == 2.0
    stats = auth_stats(m.sched, "metrics")
    # the stranger's key refused by ZAP; the plaintext peer cut off at handshake (counted as a
    # protocol error, or as a failed handshake when the server's reply met a closed connection)
    assert stats.get("auth.metrics.refused_key") and sum(stats.values()) >= 2, stats
    assert m.sched.gate.refused.get("metrics", 0) >= 1


def test_a_joined_worker_cannot_publish_for_another_name(metrics):
    m = metrics
    w1 = m.publisher(m.as_worker("w1"))
    for seq in range(1, 60):
        publish(w1, metrics_sample("victim", seq, cpus=32.0, address="6.6.6.6"))
        time.sleep(0.05)
        if nodes(m):
            break
    view = nodes(m)
    assert set(view) == {"w1"}, view
    assert view["w1"]["cpus"] == 32.0 and view["w1"]["address"] == "10.0.0.1"


def test_a_sample_from_the_far_future_is_dropped_and_counted(metrics):
    m = metrics
    w3 = m.publisher(m.as_worker("w3"))
    ten_years = 10 * 365 * 86400
    wait_for(lambda: publish(w3, metrics_sample("w3", 1, ts=time.time() + ten_years))
             or m.sched.stats["samples_from_future"], timeout=5, interval=0.05,
             what="a sample from the future to be dropped")
    assert "w3" not in nodes(m)
    # a normal one from the same key is taken: the key is fine, the date was not
    wait_for(lambda: publish(w3, metrics_sample("w3", 2)) or "w3" in nodes(m), timeout=5, interval=0.05,
             what="a sample dated now to be taken")


# ---- 9: the event stream ----------------------------------------------------------------------

def test_events_reach_only_credentialed_subscribers_without_env_values(secure):
    def sub(curve):
        s = secure.actors.socket(zmq.SUB)
        if curve is not None:
            curve.apply(s)
        s.setsockopt(zmq.SUBSCRIBE, task_msg.EVENT.encode())
        s.connect(secure.events_endpoint)
        return s
    plain, stranger = sub(None), sub(secure.stranger())
    ro = sub(secure.authority.issue("ro", "read-only").curve())
    admin = sub(secure.admin_creds.curve())
    got: list[Envelope] = []
    for i in range(50):  # a SUB only receives what is published after it joined
        secure.start_task(name=f"t{i}", env=SECRET_ENV)
        got += drain(admin, 0.1)
        if got:
            break
    assert got, "the admin subscriber received no event"
    last = secure.start_task(name="last", env=SECRET_ENV)
    got += drain(admin, 0.5)
    mine = [e for e in got if e.body["task_id"] == last["id"]]
    assert mine and mine[0].type == task_msg.EVENT
    for e in got:  # an event names the task; its record (and env) is `task.inspect`'s
        assert "task" not in e.body and "env" not in e.body and "hunter2" not in str(e.body), e.body
    assert [e.body["task_id"] for e in drain(ro, 0.3)]  # a read-only client may follow events too
    assert drain(plain, 0.3) == [] and drain(stranger, 0.3) == []
    assert auth_stats(secure.manager, "events"), dict(secure.manager.stats)


# ---- 10: env values -----------------------------------------------------------------------------

def test_env_values_only_in_an_admins_inspect(secure):
    t = secure.start_task(name="db", env=SECRET_ENV)
    [listed] = secure.admin.call(task_msg.LIST, {})["tasks"]
    assert listed["env"] == HIDDEN
    assert secure.task(t["id"])["env"] == SECRET_ENV
    ro = secure.client(curve=secure.authority.issue("ro", "read-only").curve())
    assert secure.task(t["id"], ro)["env"] == HIDDEN
    [listed] = ro.call(task_msg.LIST, {})["tasks"]
    assert listed["env"] == HIDDEN
    assert t["env"] == SECRET_ENV  # the admin who started it gets its own spec back
