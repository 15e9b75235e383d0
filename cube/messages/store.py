"""Requests to the Store actor; namespaces keep tasks, events and nodes apart."""
from cube.wire.schema import Field, opt, register

PUT = "store.put"
GET = "store.get"
DELETE = "store.delete"
LIST = "store.list"
COUNT = "store.count"
BATCH = "store.batch"

NAMESPACES = ("tasks", "events", "nodes", "meta")

_NS = Field(str, max_len=32)
_KEY = Field(str, max_len=256)
register(PUT, {"ns": _NS, "key": _KEY, "value": Field(object)})
register(GET, {"ns": _NS, "key": _KEY})
register(DELETE, {"ns": _NS, "key": _KEY})
register(LIST, {"ns": _NS, "prefix": opt(str), "after": opt(str), "limit": opt(int)})
register(COUNT, {"ns": _NS})
register(BATCH, {"ops": Field(list, items=dict)})

ALL = {PUT, GET, DELETE, LIST, COUNT, BATCH}
