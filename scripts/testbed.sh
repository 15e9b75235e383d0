#!/usr/bin/env bash
# The multi-host test bed by hand (cube/testbed, docs/chaos.md "Multi-host test bed"): hosts as
# network namespaces on a private switch, each worker host with its own dockerd. Needs root.
#   scripts/testbed.sh up [--hosts h1,h2,h3] [--docker h2,h3]   make one; prints its id and addresses
#   scripts/testbed.sh ls                                       list the beds on this machine
#   scripts/testbed.sh exec ID HOST [COMMAND...]                run on a host (DOCKER_HOST set: its dockerd)
#   scripts/testbed.sh down [ID...] [--all]                     remove the named beds; without ids, those
#                                                               whose owner (a test run) died; --all: every one
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || { echo "testbed: no $PYTHON (run scripts/setup.sh first)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ] && [ "${1:-}" != "ls" ] && [ "${1:-}" != "-h" ] && [ "${1:-}" != "--help" ]; then
    exec sudo -E env PYTHONPATH="$ROOT" "$PYTHON" -m cube.testbed "$@"
fi
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m cube.testbed "$@"
