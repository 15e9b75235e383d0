"""The manager's API message types the CLI sends (cube/messages), named here so the client does
not import every message family's schemas to send one request (tests/cli check they agree)."""

TASK_START = "task.start"
TASK_STOP = "task.stop"
TASK_RESTART = "task.restart"
TASK_LIST = "task.ls"
TASK_INSPECT = "task.inspect"
TASK_LOGS = "task.logs"
TASK_EVENT = "task.event"
NODE_LIST = "node.ls"
NODE_REMOVE = "node.rm"
JOIN_TOKEN = "cluster.join_token"
CREDENTIALS = "cluster.credentials"
