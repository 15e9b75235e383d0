"""`cube chaos run SCRIPT`: play a chaos script against a fresh local cluster (docs/chaos.md).

Kept apart from the client commands so they do not import the chaos machinery (Docker SDK,
cluster launcher) just to list tasks: everything here is imported when a chaos command runs.
"""
from __future__ import annotations

from cube.cli.args import command


class Chaos:
    """Chaos testing by scripted message injection: run a TOML script, check the invariants."""

    @command(example="cube chaos run tests/chaos/scripts/09_partitioned_worker.toml")
    def run(self, script: str, *, keep: bool = False, log_level: str = "INFO") -> int:
        """Play a chaos SCRIPT on a fresh local cluster and check the invariants.

        The cluster runs with chaos mode on and is torn down afterwards.

        Prints each step and invariant as it goes and a PASS/FAIL summary; exit status 0 or 1.

        Args:
            script: a chaos script (TOML)
            keep: leave the cluster's temp dir (logs, data, rules file) for a post-mortem
            log_level: the cluster processes' log level
        """
        from cube.chaos.runner import run_script

        def out(line: str) -> None:
            print(line, flush=True)
        result = run_script(script, out=out, keep=bool(keep), log_level=log_level)
        return 0 if result.passed else 1

    @command(example="cube chaos check tests/chaos/scripts/09_partitioned_worker.toml")
    def check(self, script: str) -> int:
        """Parse SCRIPT and list its steps without running anything.

        Args:
            script: a chaos script (TOML)
        """
        from cube.chaos.script import ScriptError, load
        from cube.cli.session import CliError
        try:
            s = load(script)
        except ScriptError as e:
            raise CliError(str(e)) from None
        print(f"{s.name}: {len(s.cluster.workers)} workers, {len(s.steps)} steps")
        for step in s.steps:
            print(f"[{step.number:2}] {step.describe()}")
        return 0
