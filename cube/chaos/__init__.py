"""Chaos testing by scripted message injection (docs/chaos.md).

- `rules`: the fault rules (drop, delay, duplicate, reorder, corrupt) and the file that carries
  them from the chaos runner to running actor processes.
- `injector`: applies those rules to an actor's outgoing messages (installed as the actor's outbox
  by `hook.attach`, only when CUBE_CHAOS=1).
- `script`, `steps`, `invariants`, `runner`: read a TOML script, start a cluster (cube.harness),
  play the script against it, and check that nothing was lost, duplicated or left behind.

This package imports nothing heavy at import time: actor processes load `injector` from it.
"""
