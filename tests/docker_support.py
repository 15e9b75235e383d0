"""Helpers for tests that need a real Docker engine (no registry: images are built locally)."""
from __future__ import annotations

import pathlib
import subprocess
import threading

import docker
import docker.errors
import requests.exceptions

from cube.chaos.cluster import force_remove

BUSYBOX = "cube-busybox:latest"
SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "busybox-image.sh"

_built = False
_build_lock = threading.Lock()


def docker_available() -> bool:
    """True when the local Docker daemon answers a ping."""
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def ensure_busybox_image() -> str:
    """Build BUSYBOX once per test session (the script itself skips an existing image)."""
    global _built
    with _build_lock:
        if not _built:
            result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"building {BUSYBOX} failed: {result.stderr.strip() or result.stdout.strip()}")
            _built = True
    return BUSYBOX


def remove_containers(label_filter: str | list[str]) -> int:
    """Force-remove every container matching a label filter such as "cube.worker=t1"; returns count."""
    client = docker.from_env(timeout=30)
    try:
        return force_remove(client.containers.list(all=True, sparse=True, filters={"label": label_filter}))
    finally:
        client.close()
