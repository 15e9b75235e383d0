"""`cube chaos run SCRIPT`: play a chaos script against a fresh local cluster (docs/chaos.md).

Kept apart from cube/cli/main.py so the client commands do not import the chaos machinery
(Docker SDK, cluster launcher) just to list tasks.
"""
from __future__ import annotations

import sys


class Chaos:
    """Chaos testing by scripted message injection: run a TOML script, check the invariants."""

    def run(self, script: str, keep: bool = False, log_level: str = "INFO") -> None:
        """Start a local cluster (chaos mode on), play SCRIPT, check the invariants, tear down.

        Prints each step and invariant as it goes and a PASS/FAIL summary; exit status 0 or 1.
        --keep leaves the cluster's temp dir (logs, data, rules file) for a post-mortem.
        """
        from cube.chaos.runner import run_script

        def out(line: str) -> None:
            print(line, flush=True)
        result = run_script(str(script), out=out, keep=bool(keep), log_level=str(log_level))
        sys.exit(0 if result.passed else 1)

    def check(self, script: str) -> None:
        """Parse SCRIPT and list its steps without running anything (exit 1 if malformed)."""
        from cube.chaos.script import ScriptError, load
        try:
            s = load(str(script))
        except ScriptError as e:
            print(f"cube: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"{s.name}: {len(s.cluster.workers)} workers, {len(s.steps)} steps")
        for step in s.steps:
            print(f"[{step.number:2}] {step.describe()}")
