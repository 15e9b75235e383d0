"""Cube's domain model: tasks, their state machine and the nodes that run them."""
