#!/usr/bin/env bash
# Run Cube's test suite: set the machine up (scripts/setup.sh: packages, dockerd, .venv, the local
# busybox image), then `.venv/bin/python -m pytest tests -q`. Extra arguments go to pytest; when
# they name test paths, those replace the default `tests -q`:
#   ./scripts/test.sh                      the whole suite
#   ./scripts/test.sh -x -k scheduler      the whole suite, with pytest options
#   ./scripts/test.sh tests/unit -q        only the unit tests
# pytest finding no tests at all (exit code 5) counts as a failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/setup.sh

args=(tests -q)
for arg in "$@"; do
    if [[ "$arg" != -* ]] && [ -e "${arg%%::*}" ]; then args=(); break; fi
done
args+=("$@")

echo "[test] .venv/bin/python -m pytest ${args[*]}"
rc=0
.venv/bin/python -m pytest "${args[@]}" || rc=$?
case "$rc" in
    0) echo "[test] passed" ;;
    5) echo "[test] FAILED: pytest collected no tests" >&2; exit 1 ;;
    *) echo "[test] FAILED (pytest exit code $rc)" >&2; exit "$rc" ;;
esac
