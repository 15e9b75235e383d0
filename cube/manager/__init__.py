"""The Manager: the desired state of every task, and what drives the cluster toward it.

`actor.Manager` is the actor (sockets, handlers, timers); the other modules are its parts.
"""
from cube.manager.actor import Manager, run_manager

__all__ = ["Manager", "run_manager"]
