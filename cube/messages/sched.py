"""Placement requests from the Manager to the Scheduler."""
from cube.wire.schema import NUMBER, Field, opt, register

PLACE = "sched.place"
NODES = "sched.nodes"
RELEASE = "sched.release"

register(PLACE, {"task_id": Field(str, max_len=64), "cpu": Field(NUMBER), "memory": Field(int),
                 "disk": Field(int), "exclude": opt(list, items=str), "only": opt(list, items=str)})
register(NODES, {})
register(RELEASE, {"task_id": Field(str, max_len=64)})

ALL = {PLACE, NODES, RELEASE}
