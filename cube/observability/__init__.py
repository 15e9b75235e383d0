"""Prometheus metrics of Cube's processes (docs/architecture.md, "Metrics").

One module per process kind holds that process's metric objects and registry
(manager_metrics.py, worker_metrics.py), so the code that has a number just calls
`metrics.placements.inc()`; server.py serves a registry over HTTP and computes state-derived
gauges on the actor's own loop thread; traffic.py counts an actor's messages.
"""
