"""`cube events`: follow the manager's live stream of task events."""
from __future__ import annotations

import sys
import time

from cube.cli import api, render, session
from cube.cli.args import command


@command(example="cube events --count 10")
def events(*, count: int = 0, timeout: float = 0.0, events_port: int = 0, manager: str | None = None,
           credentials: str | None = None, json: bool = False) -> int:
    """Follow the live stream of task events (until Ctrl-C, --count or --timeout).

    Args:
        count: stop after this many events
        timeout: stop after this many seconds
        events_port: the manager's event port (default: the credentials', else 5558)
        json: one JSON object a line
    """
    import json as jsonlib

    import zmq

    from cube.wire import sockets
    from cube.wire.envelope import decode
    from cube.wire.errors import CubeError
    conn = session.connect(manager, credentials)
    if not events_port:
        events_port = int(conn.creds.events.rsplit(":", 1)[1]) if conn.creds else session.EVENTS_PORT
    sub = sockets.subscriber(zmq.Context.instance(), connect=f"tcp://{conn.host}:{events_port}",
                             topics=(api.TASK_EVENT.encode(),), curve=conn.curve)
    seen, last_seq = 0, None
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while not count or seen < count:
            wait = 1000 if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            if deadline is not None and wait == 0:
                break
            if not sub.poll(wait):
                continue
            try:
                ev = decode(sub.recv_multipart()[-1]).body
            except CubeError:
                continue
            if last_seq is not None and ev["seq"] > last_seq + 1:
                print(f"# missed {ev['seq'] - last_seq - 1} events; `cube task ls` shows the current state",
                      file=sys.stderr)
            last_seq = ev["seq"]
            seen += 1
            if json:
                print(jsonlib.dumps({k: v for k, v in ev.items() if k != "task"}), flush=True)
            else:
                name = (ev.get("task") or {}).get("name", "")
                print(" ".join(render.clean(x) for x in (
                    time.strftime("%H:%M:%S", time.localtime(ev["time"])), f"#{ev['seq']}", ev["task_id"][:12],
                    name, ev["state"], ev.get("worker") or "-", ev.get("reason", ""))), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(linger=0)
    return 0
