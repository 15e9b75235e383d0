"""Message families and their schemas: one module per family (task, node, worker, store, sched).

Importing this package declares every schema, so any actor that imports it validates the same way.
"""
from cube.messages import events, node, sched, service, store, task, worker  # noqa: F401  (declares schemas)
