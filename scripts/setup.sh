#!/usr/bin/env bash
# Prepare this machine for Cube (Debian 12): system packages, a running Docker engine, the Python
# virtualenv .venv with Cube and its test tools, and the local image cube-busybox:latest.
# Idempotent and quick when everything is already there. Runs as root, or as a user with sudo.
# Needs no stdin. There is no container registry: the only image used is built locally.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.cube-setup"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

case "${1:-}" in
    "") ;;
    -h|--help) echo "usage: $0   (installs packages, starts dockerd, creates .venv, builds cube-busybox:latest)"; exit 0 ;;
    *) die "unknown argument '$1' (usage: $0)" ;;
esac

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    die "run this as root, or install sudo"
fi

# --- system packages -------------------------------------------------------------------------
# A Python >= 3.11 that can create a virtualenv with pip (Debian's python3 needs python3-venv).
usable_python() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
find_python() {
    local candidate
    for candidate in "$(command -v python3 || true)" /usr/bin/python3; do
        if [ -n "$candidate" ] && usable_python "$candidate"; then echo "$candidate"; return 0; fi
    done
    return 1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
static_busybox() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and apt-get is not available to install them"
    local out
    out=$(mktemp)
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        if ! "${SUDO[@]}" apt-get update -qq >"$out" 2>&1; then
            tail -n 20 "$out" >&2; rm -f "$out"; die "apt-get update failed"
        fi
        apt_updated=1
    fi
    say "installing $*"
    # Without systemd nothing should start services from maintainer scripts: we start dockerd below.
    local policy=/usr/sbin/policy-rc.d added=0
    if [ ! -d /run/systemd/system ] && [ ! -e "$policy" ]; then
        trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        added=1
    fi
    local rc=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@" >"$out" 2>&1 || rc=$?
    if [ "$added" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; trap - EXIT; fi
    if [ "$rc" -ne 0 ]; then tail -n 30 "$out" >&2; rm -f "$out"; die "apt-get install $* failed"; fi
    rm -f "$out"
}

missing=()
if ! find_python >/dev/null; then
    missing+=(python3 python3-venv)
fi
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    missing+=(docker.io)   # (docker-ce from Docker's own repository is fine too, if already there)
fi
if ! static_busybox; then missing+=(busybox-static); fi
if ! command -v curl >/dev/null 2>&1; then missing+=(curl); fi
if ! command -v tmux >/dev/null 2>&1; then missing+=(tmux); fi   # tests drive `cube top` in a real terminal
if ! command -v etcd >/dev/null 2>&1; then missing+=(etcd-server); fi  # the etcd store's tests (docs/ha.md)
if ! command -v openssl >/dev/null 2>&1; then missing+=(openssl); fi  # throwaway certificates for etcd over TLS
# The multi-host test bed (cube/testbed, docs/chaos.md): namespaces, veth links, cuts. (sbin:
# not on a user's PATH everywhere.)
have_tool() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
if ! have_tool ip; then missing+=(iproute2); fi
if ! have_tool iptables; then missing+=(iptables); fi
if ! have_tool nft; then missing+=(nftables); fi
if ! have_tool nsenter; then missing+=(util-linux); fi
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "system packages: already installed"
fi
PYTHON=$(find_python) || die "no Python >= 3.11 with the venv module found (install python3 and python3-venv)"

# --- Docker engine ---------------------------------------------------------------------------
if "${SUDO[@]}" docker info >/dev/null 2>&1; then
    say "docker: running"
else
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        say "starting docker (systemctl start docker)"
        "${SUDO[@]}" systemctl start docker || true
        log="journalctl -u docker"
    else
        log=/var/log/cube-dockerd.log
        if ! "${SUDO[@]}" sh -c ": >>$log" 2>/dev/null; then log=/tmp/cube-dockerd.log; fi
        say "starting dockerd in the background (log: $log)"
        # setsid: its own session, so a Ctrl-C in this terminal does not stop the engine.
        "${SUDO[@]}" sh -c "setsid nohup dockerd >>'$log' 2>&1 </dev/null &"
    fi
    for _ in $(seq 60); do
        if "${SUDO[@]}" docker info >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    if ! "${SUDO[@]}" docker info >/dev/null 2>&1; then
        [ -f "$log" ] && tail -n 20 "$log" >&2
        die "the Docker engine did not come up within 30 s (see $log)"
    fi
    say "docker: running"
fi
if ! docker info >/dev/null 2>&1; then
    die "Docker runs, but user '$(id -un)' may not use it: run 'sudo usermod -aG docker $(id -un)' and log in again, or run this script with sudo"
fi

# --- Python virtualenv -----------------------------------------------------------------------
if [ -e "$VENV" ] && ! usable_python "$VENV/bin/python"; then
    say "removing the broken or outdated virtualenv $VENV"
    rm -rf "$VENV"
fi
if [ ! -e "$VENV/bin/python" ]; then
    say "creating the virtualenv .venv with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when setup.py changed (or the install is incomplete): a no-op run stays fast.
want=$(cat "$ROOT/setup.py" "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)
venv_ok() {
    [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" - "$ROOT" >/dev/null 2>&1 <<'EOF'
import importlib.metadata as md, pathlib, re, sys
root = pathlib.Path(sys.argv[1]).resolve()
import cube
assert pathlib.Path(cube.__file__).resolve().is_relative_to(root)
dist = md.distribution("cube")
for req in dist.requires or []:
    if "extra ==" in req and 'extra == "test"' not in req:
        continue
    md.distribution(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0])
EOF
}
if venv_ok; then
    say "python packages: already installed"
else
    say "installing Cube and its dependencies into .venv (pip install -e '.[test]')"
    if ! "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"; then
        say "pip install failed; installing build tools and retrying (for packages built from source)"
        apt_install python3-dev build-essential libleveldb-dev
        "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" || die "pip install -e '.[test]' failed"
    fi
    echo "$want" >"$STAMP"
    venv_ok || die "the virtualenv $VENV is incomplete after pip install"
fi

# --- local image -----------------------------------------------------------------------------
bash "$ROOT/scripts/busybox-image.sh" | sed 's/^/[setup] /'
say "ready"
