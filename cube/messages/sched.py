"""Placement requests from the Manager to the Scheduler."""
from cube.wire.schema import NUMBER, Field, opt, register

PLACE = "sched.place"
PLACE_MANY = "sched.place_many"  # many decisions in one round trip (at most MAX_BATCH tasks)
NODES = "sched.nodes"
RELEASE = "sched.release"

register(PLACE, {"task_id": Field(str, max_len=64), "cpu": Field(NUMBER), "memory": Field(int),
                 "disk": Field(int), "fixed_ports": opt(list, items=str), "exclude": opt(list, items=str),
                 "only": opt(list, items=str)})
register(PLACE_MANY, {"tasks": Field(list, items=dict, max_len=1000), "exclude": opt(list, items=str),
                      "only": opt(list, items=str)})
register(NODES, {})
register(RELEASE, {"task_id": Field(str, max_len=64)})

ALL = {PLACE, PLACE_MANY, NODES, RELEASE}
MAX_BATCH = 1000
