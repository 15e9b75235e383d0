"""Task requests from clients to the Manager, and the task events the Manager publishes."""
from cube.wire.schema import NUMBER, Field, opt, register

START = "task.start"
STOP = "task.stop"
RESTART = "task.restart"  # stop the current attempt (if any) and place the task again
LIST = "task.ls"
INSPECT = "task.inspect"
LOGS = "task.logs"
EVENT = "task.event"  # PUB stream

register(START, {"task": Field(dict)})
register(STOP, {"id": Field(str, max_len=64)})
register(RESTART, {"id": Field(str, max_len=64)})
_FILTER = opt((str, list), max_len=100)
register(LIST, {"all": opt(bool), "limit": opt(int), "continue": opt(str, max_len=1024),
                "state": _FILTER, "worker": _FILTER, "name": _FILTER})
register(INSPECT, {"id": Field(str, max_len=64)})
register(LOGS, {"id": Field(str, max_len=64), "tail": opt(int), "attempt": opt(int), "cursor": opt(str, max_len=64),
               "follow": opt(bool)})
register(EVENT, {"seq": Field(int), "task_id": Field(str), "state": Field(str), "time": Field(NUMBER),
                 "worker": opt(str), "reason": opt(str), "task": opt(dict)})

API = {START, STOP, RESTART, LIST, INSPECT, LOGS}
ADMIN_ONLY = {START, STOP, RESTART}  # read-only credentials may list, inspect (without env) and read logs
