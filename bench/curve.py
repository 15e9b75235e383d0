"""What CURVE costs: ZeroMQ ROUTER (server, bind) <-> DEALER (client, connect) on 127.0.0.1, plain and CURVE.

The server is a separate process (its own GIL): two ROUTERs, one plain and one CURVE (curve_server,
a ZAP domain, and a ZAP handler from zmq.auth.thread.ThreadAuthenticator whose credentials
provider allows a set of client public keys). It echoes every frame back unchanged, so what is
measured is ZeroMQ, CURVE and one Python hop per side, not Cube's handlers. Frames are real
Cube envelopes (msgpack), padded to --payload bytes.

Measured, each for --seconds in total, plain and CURVE taking turns (--rounds turns each):
  rtt        one client, sequential round trips (send, wait for the reply, repeat)
  pipelined  one client keeping --window requests in flight
  connect    new DEALER, connect, one round trip, close, repeat (the CURVE handshake and the
             ZAP round trip to the authenticator are paid on every connection)
CPU is the client's and the server's process CPU time (all threads, ZeroMQ's I/O threads too)
per message or per connection.

    .venv/bin/python bench/curve.py
    .venv/bin/python bench/curve.py --seconds 5 --payload 1000

Prints a table and ends with one line:
    RESULT rtt_plain_per_s=… rtt_curve_per_s=… pipelined_plain_per_s=… pipelined_curve_per_s=…
           connect_plain_per_s=… connect_curve_per_s=… curve_cost_per_msg_pct=… handshake_cost_x=…
curve_cost_per_msg_pct is the extra time per message with CURVE in the pipelined run
(plain/curve - 1, in %); handshake_cost_x is connect_plain_per_s / connect_curve_per_s.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import pathlib
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

import msgpack
import psutil
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cube.wire.envelope import Envelope

HOST = "127.0.0.1"
ZAP_DOMAIN = "cube"
STOP = b"\x00stop"  # never a Cube frame: an envelope is a msgpack map, which never starts with 0x00
TIMEOUT_MS = 5000  # a client waiting longer for a reply means the server is gone or refused it


# ---------------------------------------------------------------- server (its own process)

class AllowedKeys:
    """ZAP credentials provider: a client may connect if its public key (z85) is in the set."""

    def __init__(self, keys: set[bytes]):
        self.keys = keys
        self.allowed = 0
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = domain == ZAP_DOMAIN and key in self.keys
        if ok:
            self.allowed += 1
        else:
            self.denied += 1
        return ok


def serve(conn, server_public: bytes, server_secret: bytes, allowed: set[bytes]) -> None:
    """Bind a plain and a CURVE ROUTER, send their ports on `conn`, echo until STOP arrives."""
    logging.getLogger("zmq.auth").setLevel(logging.CRITICAL)  # a denied key is expected, once
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    provider = AllowedKeys(allowed)
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=provider)

    def router(curve: bool) -> tuple[zmq.Socket, int]:
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if curve:  # all of it before bind
            sock.curve_server = True
            sock.curve_secretkey = server_secret
            sock.curve_publickey = server_public
            sock.zap_domain = ZAP_DOMAIN.encode()
        return sock, sock.bind_to_random_port(f"tcp://{HOST}")

    plain, plain_port = router(curve=False)
    curve, curve_port = router(curve=True)
    conn.send((plain_port, curve_port))
    poller = zmq.Poller()
    poller.register(plain, zmq.POLLIN)
    poller.register(curve, zmq.POLLIN)
    echoed = 0
    try:
        while True:
            for sock, _ in poller.poll():
                while True:  # drain: a pipelined client has many waiting
                    try:
                        route, frame = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if frame == STOP:
                        sock.send_multipart([route, msgpack.packb(
                            {"echoed": echoed, "zap_allowed": provider.allowed, "zap_denied": provider.denied})])
                        return
                    sock.send_multipart([route, frame])
                    echoed += 1
    finally:
        plain.close(linger=0)
        curve.close(linger=0)
        auth.stop()
        ctx.term()


# ---------------------------------------------------------------- client (this process)

@dataclass
class Keys:
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def new(cls) -> Keys:
        return cls(*zmq.curve_keypair(), *zmq.curve_keypair())


@dataclass
class Figure:
    name: str
    count: int
    seconds: float
    cpu_s: float
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Figure) -> Figure:
        return Figure(self.name, self.count + other.count, self.seconds + other.seconds,
                      self.cpu_s + other.cpu_s, self.latencies + other.latencies)

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_us_each(self) -> float:
        return self.cpu_s / self.count * 1e6


class CPU:
    """CPU seconds used by this process and the server process together, all threads."""

    def __init__(self, server_pid: int):
        self.server = psutil.Process(server_pid)

    def now(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        theirs = self.server.cpu_times()
        return me.ru_utime + me.ru_stime + theirs.user + theirs.system


def frame_of(size: int) -> bytes:
    """A real Cube request envelope, padded (in a body field) to at least `size` bytes."""
    body = {"task": {"id": "t-0f3c2a9b7e5d4c1a", "image": "busybox", "name": "bench", "cpu": 0.5,
                     "memory": 64 << 20, "command": ["sleep", "600"]}, "pad": ""}
    frame = Envelope("task.start", body, sender="bench-curve").encode()
    while len(frame) < size:
        body["pad"] += "x" * (size - len(frame))
        frame = Envelope("task.start", body, sender="bench-curve").encode()
    return frame


def dealer(ctx: zmq.Context, endpoint: str, keys: Keys | None,
           client_public: bytes | None = None, client_secret: bytes | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = TIMEOUT_MS
    sock.sndtimeo = TIMEOUT_MS
    if keys is not None:  # all of it before connect
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = client_public or keys.client_public
        sock.curve_secretkey = client_secret or keys.client_secret
    sock.connect(endpoint)
    return sock


def round_trip(sock: zmq.Socket, frame: bytes) -> None:
    sock.send(frame)
    if sock.recv() != frame:
        raise SystemExit("the server's echo differs from the request")


def rtt(ctx, endpoint, keys, frame, seconds, cpu, name) -> Figure:
    sock = dealer(ctx, endpoint, keys)
    try:
        for _ in range(200):  # connect (and handshake) and warm up outside the timing
            round_trip(sock, frame)
        latencies = []
        c0 = cpu.now()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        t = t0
        while t < deadline:
            sock.send(frame)
            sock.recv()
            t1 = time.perf_counter()
            latencies.append(t1 - t)
            t = t1
        return Figure(name, len(latencies), t - t0, cpu.now() - c0, latencies)
    finally:
        sock.close(linger=0)


def pipelined(ctx, endpoint, keys, frame, seconds, window, cpu, name) -> Figure:
    sock = dealer(ctx, endpoint, keys)
    try:
        for _ in range(200):
            round_trip(sock, frame)
        c0 = cpu.now()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        for _ in range(window):
            sock.send(frame)
        n = 0
        while True:
            for _ in range(256):  # one reply in, one request out: `window` stay in flight
                sock.recv()
                sock.send(frame)
            n += 256
            if time.perf_counter() >= deadline:
                break
        for _ in range(window):
            sock.recv()
        n += window
        return Figure(name, n, time.perf_counter() - t0, cpu.now() - c0)
    finally:
        sock.close(linger=0)


def connects(ctx, endpoint, keys, frame, seconds, cpu, name) -> Figure:
    for _ in range(20):  # warm up
        sock = dealer(ctx, endpoint, keys)
        round_trip(sock, frame)
        sock.close(linger=0)
    n = 0
    c0 = cpu.now()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    t = t0
    while t < deadline:
        sock = dealer(ctx, endpoint, keys)
        try:
            round_trip(sock, frame)
        except zmq.Again:
            raise SystemExit(f"{name}: connection {n + 1} got no reply in {TIMEOUT_MS} ms") from None
        finally:
            sock.close(linger=0)
        n += 1
        t = time.perf_counter()
    return Figure(name, n, t - t0, cpu.now() - c0)


def unknown_key_refused(ctx: zmq.Context, endpoint: str, keys: Keys, frame: bytes) -> str:
    """Connect with a key the server does not allow: the handshake must fail and nothing come back."""
    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        sock.connect(endpoint)
        sock.send(frame)
        if not monitor.poll(TIMEOUT_MS):
            return "no handshake event"
        event = recv_monitor_message(monitor)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return "ACCEPTED (the ZAP handler is not in effect)"
        replied = sock.poll(200)
        return f"refused (handshake failed, ZAP status {event['value']})" + (", but a reply came!" if replied else "")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def stop_server(ctx: zmq.Context, endpoint: str) -> dict | None:
    sock = dealer(ctx, endpoint, None)
    try:
        sock.send(STOP)
        return msgpack.unpackb(sock.recv())
    except zmq.Again:
        return None
    finally:
        sock.close(linger=0)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement (6 of them)")
    p.add_argument("--payload", type=int, default=200, help="request size in bytes (a padded Cube envelope)")
    p.add_argument("--window", type=int, default=100, help="requests in flight in the pipelined run")
    p.add_argument("--rounds", type=int, default=3, help="each measurement is split into this many turns, "
                                                          "plain and CURVE alternating")
    a = p.parse_args()
    if not zmq.has("curve"):
        raise SystemExit(f"libzmq {zmq.zmq_version()} was built without CURVE")

    keys = Keys.new()
    frame = frame_of(a.payload)
    mp = multiprocessing.get_context("spawn")  # the child builds its own ZeroMQ context, nothing inherited
    parent_end, child_end = mp.Pipe()
    server = mp.Process(target=serve, name="curve-bench-server", daemon=True,
                        args=(child_end, keys.server_public, keys.server_secret, {keys.client_public}))
    server.start()
    ctx = None
    plain_ep = None
    stats = None
    try:
        if not parent_end.poll(30):
            raise SystemExit("the server process did not start")
        plain_port, curve_port = parent_end.recv()
        plain_ep, curve_ep = f"tcp://{HOST}:{plain_port}", f"tcp://{HOST}:{curve_port}"
        ctx = zmq.Context()
        ctx.set(zmq.MAX_SOCKETS, 4096)
        cpu = CPU(server.pid)
        print(f"libzmq {zmq.zmq_version()}, pyzmq {zmq.__version__}, {psutil.cpu_count()} CPUs; "
              f"frame {len(frame)} bytes (Cube envelope), {a.seconds:g} s per measurement; "
              f"server pid {server.pid}, echo only")
        refusal = unknown_key_refused(ctx, curve_ep, keys, frame)

        figs: dict[str, Figure] = {}
        slice_s = a.seconds / a.rounds
        runs = (("rtt", lambda ep, k, name: rtt(ctx, ep, k, frame, slice_s, cpu, name)),
                ("pipelined", lambda ep, k, name: pipelined(ctx, ep, k, frame, slice_s, a.window, cpu, name)),
                ("connect", lambda ep, k, name: connects(ctx, ep, k, frame, slice_s, cpu, name)))
        for kind, run in runs:
            for _ in range(a.rounds):  # plain and CURVE take turns: a change in background load hits both
                for mode, ep, k in (("plain", plain_ep, None), ("curve", curve_ep, keys)):
                    f = run(ep, k, f"{kind} {mode}")
                    figs[f"{kind}_{mode}"] = figs[f"{kind}_{mode}"].add(f) if f"{kind}_{mode}" in figs else f
        stats = stop_server(ctx, plain_ep)

        print(f"{'measurement':<22}{'per s':>10}{'count':>10}{'CPU us each':>13}   notes")
        for key, f in figs.items():
            unit = "connections" if key.startswith("connect") else "round trips" if key.startswith("rtt") else "messages"
            note = unit
            if f.latencies:
                note += (f"; p50 {statistics.median(f.latencies) * 1e6:.0f} us, "
                         f"p99 {pct(f.latencies, 0.99) * 1e6:.0f} us")
            if key.startswith("pipelined"):
                note += f"; {a.window} in flight"
            print(f"{f.name:<22}{f.per_s:>10.0f}{f.count:>10}{f.cpu_us_each:>13.1f}   {note}")

        def ratio(kind: str) -> float:
            return figs[f"{kind}_plain"].per_s / figs[f"{kind}_curve"].per_s

        cost_pct = (ratio("pipelined") - 1) * 100
        handshake_x = ratio("connect")
        cpu_extra_msg = figs["pipelined_curve"].cpu_us_each - figs["pipelined_plain"].cpu_us_each
        cpu_extra_conn = figs["connect_curve"].cpu_us_each - figs["connect_plain"].cpu_us_each
        print(f"CURVE per message: {cost_pct:+.1f}% time pipelined, {(ratio('rtt') - 1) * 100:+.1f}% sequential; "
              f"{cpu_extra_msg:+.1f} us CPU (client+server)")
        print(f"CURVE per new connection: {handshake_x:.1f}x slower to connect and answer once; "
              f"{cpu_extra_conn:+.0f} us CPU (handshake, ZAP round trip)")
        print(f"unknown client key: {refusal}")
        if stats is not None:
            # timed and warm-up connections, and one connection per rtt and pipelined turn
            expected = figs["connect_curve"].count + a.rounds * (20 + 2)
            print(f"server: {stats['echoed']} frames echoed; ZAP allowed {stats['zap_allowed']} "
                  f"(connections with CURVE: {expected}), denied {stats['zap_denied']}")
        print(f"RESULT rtt_plain_per_s={figs['rtt_plain'].per_s:.0f} rtt_curve_per_s={figs['rtt_curve'].per_s:.0f} "
              f"pipelined_plain_per_s={figs['pipelined_plain'].per_s:.0f} "
              f"pipelined_curve_per_s={figs['pipelined_curve'].per_s:.0f} "
              f"connect_plain_per_s={figs['connect_plain'].per_s:.0f} "
              f"connect_curve_per_s={figs['connect_curve'].per_s:.0f} "
              f"curve_cost_per_msg_pct={cost_pct:.1f} handshake_cost_x={handshake_x:.1f}")
    finally:
        if ctx is not None:
            if stats is None and plain_ep is not None and server.is_alive():
                stop_server(ctx, plain_ep)  # after an error: let the server close its sockets itself
            ctx.term()
        server.join(5)
        if server.is_alive():
            server.terminate()
            server.join(5)
        if server.is_alive():
            server.kill()
            server.join()
        parent_end.close()


if __name__ == "__main__":
    main()
