"""Task containers are hardened by default: checked on real containers via `docker inspect`
and from inside them (/proc/self/status), using the self-built busybox image."""
from __future__ import annotations

import socket
import time
import uuid

import docker
import pytest

from cube.harness import docker_available, ensure_busybox_image, remove_containers
from cube.model.runspec import RunSpec
from cube.model.task import task_from_spec
from cube.runtime.base import LABEL_WORKER, ContainerSpec
from cube.runtime.docker import DEFAULT_PIDS_LIMIT, DockerRuntime
from tests.support import fetch

pytestmark = [
    pytest.mark.skipif(not docker_available(), reason="the Docker daemon is not reachable (docker info fails)"),
    pytest.mark.timeout(60),
]

BIND = "127.0.0.1"
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/www"]
CAP_NET_RAW = 13  # linux/capability.h


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_busybox_image()


@pytest.fixture(scope="module")
def runtime(image) -> DockerRuntime:
    return DockerRuntime(bind_address=BIND)


@pytest.fixture(scope="module")
def client():
    c = docker.from_env(timeout=30)
    yield c
    c.close()


@pytest.fixture
def worker():
    """A unique cube.worker label; every container carrying it is removed afterwards."""
    name = f"e2e-hard-{uuid.uuid4().hex[:12]}"
    yield name
    remove_containers(f"{LABEL_WORKER}={name}")


def container_spec(worker: str, task: dict) -> ContainerSpec:
    """The path a submitted task takes to the runtime: task_from_spec -> RunSpec -> ContainerSpec."""
    run = RunSpec.of(task_from_spec(task))
    return ContainerSpec(task_id=run.task_id, attempt=1, name=run.name, image=run.image, command=run.command,
                         env=run.env, cpu=run.cpu, memory=run.memory, ports=run.ports,
                         pids_limit=run.pids_limit, labels={LABEL_WORKER: worker})


def wait_for_logs(runtime: DockerRuntime, container_id: str, text: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while True:
        logs = runtime.logs(container_id)
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def test_a_task_container_is_hardened_and_published_on_the_bind_address(runtime, client, worker, image):
    s = container_spec(worker, {"name": "web", "image": image, "command": HTTPD, "ports": [8080], "memory": "64m"})
    info = runtime.run(s)
    host = client.api.inspect_container(info.container_id)["HostConfig"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert "NET_RAW" in host["CapDrop"]
    assert host["PidsLimit"] == DEFAULT_PIDS_LIMIT
    assert host["PortBindings"]["8080/tcp"] == [{"HostIp": BIND, "HostPort": ""}]
    assert host["Memory"] == 64 << 20 and host["Init"] is True  # what was there before stays

    port = info.host_ports["8080/tcp"]
    assert fetch(f"http://{BIND}:{port}/") == b"hello from cube\n"
    ports = client.api.inspect_container(info.container_id)["NetworkSettings"]["Ports"]["8080/tcp"]
    assert {b["HostIp"] for b in ports} == {BIND}  # not 0.0.0.0, not "::"


def test_the_published_port_is_not_reachable_on_another_address_of_the_host(runtime, client, worker, image):
    bridge = client.networks.get("bridge").attrs.get("IPAM", {}).get("Config") or [{}]
    gateway = bridge[0].get("Gateway")  # an address of this host that is not the bind address
    if not gateway:
        pytest.skip("the default bridge network has no gateway address")
    info = runtime.run(container_spec(worker, {"name": "web", "image": image, "command": HTTPD, "ports": [8080]}))
    port = info.host_ports["8080/tcp"]
    fetch(f"http://{BIND}:{port}/")  # up
    with pytest.raises(OSError):
        socket.create_connection((gateway, port), timeout=2).close()


def test_inside_the_container_no_new_privs_is_set_and_net_raw_is_gone(runtime, worker, image):
    info = runtime.run(container_spec(worker, {"name": "caps", "image": image,
                                               "command": ["sh", "-c", "cat /proc/self/status; sleep 30"]}))
    status = wait_for_logs(runtime, info.container_id, "CapEff")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    cap_eff = int(fields["CapEff"].strip(), 16)
    assert cap_eff and not cap_eff & (1 << CAP_NET_RAW)  # other default capabilities remain


def test_the_tasks_own_pids_limit_stops_a_fork_bomb(runtime, client, worker, image):
    bomb = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo spawned; wait"
    info = runtime.run(container_spec(worker, {"name": "bomb", "image": image, "pids_limit": 12,
                                               "command": ["sh", "-c", bomb]}))
    assert client.api.inspect_container(info.container_id)["HostConfig"]["PidsLimit"] == 12
    logs = wait_for_logs(runtime, info.container_id, "fork")
    assert "can't fork" in logs and "spawned" not in logs  # sh gives up at the limit
