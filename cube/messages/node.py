"""Node listing for clients, and the metrics samples workers publish to the Scheduler."""
from cube.wire.schema import NUMBER, Field, opt, register

LIST = "node.ls"
PING = "manager.ping"
METRICS = "node.metrics"  # PUB stream, worker -> scheduler
REMOVE = "node.rm"  # revoke a worker's key; its tasks move (docs/security.md)
DRAIN = "node.drain"  # move its tasks elsewhere and keep new work off it
ACTIVATE = "node.activate"  # undo a drain
JOIN_TOKEN = "cluster.join_token"  # print or rotate the join token
CREDENTIALS = "cluster.credentials"  # issue client credentials with a role
CREDENTIALS_LIST = "cluster.credentials_ls"  # who holds credentials (names, roles; never keys' secrets)
CREDENTIALS_REVOKE = "cluster.credentials_revoke"  # revoke every credentials issued under a name

register(LIST, {"limit": opt(int), "continue": opt(str, max_len=1024)})
register(PING, {"states": opt(bool)})  # states: also count the tasks by state (cube top)
register(REMOVE, {"name": Field(str, max_len=128)})
register(DRAIN, {"name": Field(str, max_len=128)})
register(ACTIVATE, {"name": Field(str, max_len=128)})
register(JOIN_TOKEN, {"rotate": opt(bool)})
register(CREDENTIALS, {"name": Field(str, max_len=128), "role": Field(str, max_len=32)})
register(CREDENTIALS_LIST, {})
register(CREDENTIALS_REVOKE, {"name": Field(str, max_len=128)})
register(METRICS, {
    "name": Field(str, max_len=128), "address": Field(str), "ts": Field(NUMBER), "seq": Field(int),
    "cpus": Field(NUMBER), "memory": Field(int), "disk": Field(int), "cpu_usage": Field(NUMBER),
    "memory_total": Field(int), "memory_available": Field(int), "memory_used": Field(int),
    "memory_percent": Field(NUMBER), "disk_total": Field(int), "disk_free": Field(int),
    "disk_used": Field(int), "load_avg": Field(list, items=NUMBER), "task_count": Field(int),
    "reserved": Field(dict), "task_ids": Field(list, items=str),
    "ports_in_use": opt(list, items=str),  # host ports taken on the worker's address ("8081/tcp")
    "interval": opt(NUMBER),  # seconds between this worker's samples (docs/architecture.md, "Pace")
})

API = {LIST, PING, REMOVE, DRAIN, ACTIVATE, JOIN_TOKEN, CREDENTIALS, CREDENTIALS_LIST, CREDENTIALS_REVOKE}
ADMIN_ONLY = {REMOVE, DRAIN, ACTIVATE, JOIN_TOKEN, CREDENTIALS, CREDENTIALS_LIST, CREDENTIALS_REVOKE}
