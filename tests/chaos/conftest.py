"""Chaos tests need the real Docker engine and the local busybox image (no registry here)."""
from __future__ import annotations

import pytest

from tests.docker_support import docker_available, ensure_busybox_image


@pytest.fixture(scope="session")
def busybox() -> str:
    if not docker_available():
        pytest.fail("Docker is not reachable: chaos scripts need a running dockerd (scripts/setup.sh starts one)")
    return ensure_busybox_image()
