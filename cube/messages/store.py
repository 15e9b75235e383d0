"""Requests to the Store actor; namespaces keep tasks, events and nodes apart.

Writes (put, delete, batch) may carry a `deadline` (wall-clock seconds, time.time(); the Store and
its clients share a host): a write the Store gets to after its deadline is refused with code
`unavailable` and not applied. The client gave up on it by then, so it must not happen later.
"""
from cube.wire.schema import NUMBER, Field, opt, register

PUT = "store.put"
GET = "store.get"
DELETE = "store.delete"
LIST = "store.list"
COUNT = "store.count"
BATCH = "store.batch"

NAMESPACES = ("tasks", "events", "nodes", "services", "meta")  # what the Manager keeps (documentation)

_NS = Field(str, max_len=32)
_KEY = Field(str, max_len=256)
_DEADLINE = opt(NUMBER)
_TERM = opt(int)  # the writing leader's term: refused `not_leader` once another leads (docs/ha.md)
register(PUT, {"ns": _NS, "key": _KEY, "value": Field(object), "deadline": _DEADLINE, "term": _TERM})
register(GET, {"ns": _NS, "key": _KEY})
register(DELETE, {"ns": _NS, "key": _KEY, "deadline": _DEADLINE, "term": _TERM})
register(LIST, {"ns": _NS, "prefix": opt(str), "after": opt(str), "limit": opt(int)})
register(COUNT, {"ns": _NS})
register(BATCH, {"ops": Field(list, items=dict), "deadline": _DEADLINE, "term": _TERM})

ALL = {PUT, GET, DELETE, LIST, COUNT, BATCH}
