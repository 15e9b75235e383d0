"""Services (docs/protocol.md, "Services"): a task template kept at N replicas, rolling updates."""
from cube.wire.schema import NUMBER, Field, opt, register

CREATE = "service.create"
LIST = "service.ls"
INSPECT = "service.inspect"
PS = "service.ps"
SCALE = "service.scale"
UPDATE = "service.update"
ROLLBACK = "service.rollback"
REMOVE = "service.rm"
EVENT = "service.event"  # PUB stream

_NAME = Field(str, max_len=63)
register(CREATE, {"name": _NAME, "replicas": opt(int), "task": Field(dict), "update": opt(dict)})
register(LIST, {"limit": opt(int), "continue": opt(str, max_len=1024)})
register(INSPECT, {"name": _NAME})
register(PS, {"name": _NAME})
register(SCALE, {"name": _NAME, "replicas": Field(int)})
register(UPDATE, {"name": _NAME, "task": opt(dict), "update": opt(dict), "force": opt(bool)})
register(ROLLBACK, {"name": _NAME})
register(REMOVE, {"name": _NAME})
register(EVENT, {"service": Field(str), "message": Field(str), "time": Field(NUMBER)})

API = {CREATE, LIST, INSPECT, PS, SCALE, UPDATE, ROLLBACK, REMOVE}
ADMIN_ONLY = {CREATE, SCALE, UPDATE, ROLLBACK, REMOVE}
