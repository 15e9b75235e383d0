"""The Manager <-> Worker link: hello, heartbeats, status reports, and commands to workers.

Commands carry the task id and the attempt number: a repeated command is a no-op, and a
container of an older attempt is known to be stale. Hellos and status reports carry the worker's
report clock, [boot, n], which orders them (docs/protocol.md, "Ordering worker reports").
"""
from cube.wire.schema import NUMBER, Field, opt, register

HELLO = "worker.hello"
HEARTBEAT = "worker.heartbeat"
STATUS = "task.status"  # worker -> manager: what happened to a container
RUN = "worker.run"  # manager -> worker
STOP = "worker.stop"  # manager -> worker
LOGS = "worker.logs"  # manager -> worker
JOIN = "worker.join"  # a new worker's key proves the join token once (docs/security.md)

register(HELLO, {"name": Field(str, max_len=128), "address": Field(str, max_len=256),
                 "cpus": Field(NUMBER), "memory": Field(int), "disk": Field(int),
                 "tasks": Field(list, items=dict), "pid": opt(int), "clock": opt(list, items=int, max_len=2)})
register(JOIN, {"name": Field(str, max_len=128), "address": Field(str, max_len=256), "secret": Field(str, max_len=128)})
register(HEARTBEAT, {"name": Field(str, max_len=128), "tasks": opt(list, items=dict)})
register(STATUS, {"task_id": Field(str, max_len=64), "attempt": Field(int), "state": Field(str),
                  "container_id": opt(str), "host_ports": opt(dict), "exit_code": opt(int),
                  "error": opt(str), "time": opt(NUMBER), "clock": opt(list, items=int, max_len=2),
                  "output": opt(str, max_len=2048),  # the last lines of a failed attempt's output
                  "port_conflict": opt(bool)})  # a fixed host port was taken there: place it elsewhere
register(RUN, {"spec": Field(dict), "attempt": Field(int), "term": opt(int)})  # cube.model.runspec.RunSpec
register(STOP, {"task_id": Field(str, max_len=64), "attempt": opt(int), "reason": opt(str),
                 "term": opt(int)})  # the leader's term (docs/ha.md): a worker ignores older terms
# An attempt's output from its container, or once it is gone from the worker's retained copy; a
# page at a time from `cursor` (docs/protocol.md, "Logs").
register(LOGS, {"task_id": Field(str, max_len=64), "tail": opt(int), "attempt": opt(int),
                "cursor": opt(str, max_len=64)})

FROM_WORKER = {JOIN, HELLO, HEARTBEAT, STATUS}
TO_WORKER = {RUN, STOP, LOGS}
