"""DockerRuntime.run against a scripted Engine API: the calls a start makes, a missing image
pulled only when create says so, a taken name looked at only then (no daemon needed)."""
from __future__ import annotations

import docker.errors
import pytest
import requests
from docker.types import HostConfig

from cube.runtime.base import LABEL_ATTEMPT, LABEL_TASK, LABEL_WORKER, ContainerSpec, RuntimeFailure
from cube.runtime.docker import DockerRuntime, container_name

CID = "c" * 64


def _api_error(cls, status: int, message: str):
    response = requests.Response()
    response.status_code = status
    return cls(message, response=response, explanation=message)


def _inspected(spec: ContainerSpec, status: str = "running", cid: str = CID) -> dict:
    return {"Id": cid, "Config": {"Labels": {LABEL_TASK: spec.task_id, LABEL_ATTEMPT: str(spec.attempt),
                                             LABEL_WORKER: "w1"}},
            "State": {"Status": status, "StartedAt": "2024-01-01T00:00:00Z"},
            "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]}}}


class ScriptedAPI:
    """The low-level API calls DockerRuntime.run makes; `create` is a list of outcomes in turn."""

    def __init__(self, spec: ContainerSpec, create: list, existing: dict | None = None, pull=()):
        self.spec, self.create, self.existing, self.pull_lines = spec, list(create), existing, list(pull)
        self.calls: list[tuple] = []

    def create_host_config(self, **kwargs):
        return HostConfig(version="1.41", **kwargs)

    def create_container(self, image, name=None, **kwargs):
        self.calls.append(("create", image, name, kwargs))
        outcome = self.create.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return {"Id": outcome}

    def pull(self, image, stream=False, decode=False):
        self.calls.append(("pull", image))
        return iter(self.pull_lines)

    def start(self, container_id):
        self.calls.append(("start", container_id))

    def inspect_container(self, ref):
        self.calls.append(("inspect", ref))
        if ref == CID:
            return _inspected(self.spec)
        if self.existing is None:
            raise _api_error(docker.errors.NotFound, 404, f"No such container: {ref}")
        return self.existing

    def remove_container(self, container_id, v=False, force=False):
        self.calls.append(("remove", container_id))


class _Client:
    def __init__(self, api: ScriptedAPI) -> None:
        self.api = api


SPEC = ContainerSpec(task_id="t" * 16, attempt=2, name="web", image="img:1", command=["sleep", "9"],
                     env={"A": "1"}, ports=["80/tcp"], labels={LABEL_WORKER: "w1"}, memory=64 << 20)


def run(api: ScriptedAPI):
    return DockerRuntime(client=_Client(api)).run(SPEC)


def test_a_start_is_create_start_inspect_with_the_hardened_host_config():
    api = ScriptedAPI(SPEC, create=[CID])
    info = run(api)
    assert [c[0] for c in api.calls] == ["create", "start", "inspect"]
    assert info.container_id == CID and info.running and info.host_ports == {"80/tcp": 32768}
    _, image, name, kwargs = api.calls[0]
    assert image == "img:1" and name == container_name(SPEC)
    assert kwargs["command"] == ["sleep", "9"] and kwargs["environment"] == {"A": "1"}
    assert kwargs["labels"] == {LABEL_WORKER: "w1", LABEL_TASK: SPEC.task_id, LABEL_ATTEMPT: "2"}
    assert kwargs["ports"] == [("80", "tcp")] and kwargs["detach"] is True and kwargs["tty"] is False
    host = kwargs["host_config"]
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert host["Init"] is True and host["SecurityOpt"] == ["no-new-privileges"] and host["CapDrop"] == ["NET_RAW"]
    assert host["PidsLimit"] == 1024 and host["RestartPolicy"] == {"Name": "no"} and host["Memory"] == 64 << 20


def test_a_missing_image_is_pulled_then_created():
    missing = _api_error(docker.errors.ImageNotFound, 404, "No such image: img:1")
    api = ScriptedAPI(SPEC, create=[missing, CID], pull=[{"status": "Pulling"}, {"status": "Downloaded"}])
    assert run(api).container_id == CID
    assert [c[0] for c in api.calls] == ["create", "pull", "create", "start", "inspect"]


def test_an_unpullable_image_fails_clearly_and_creates_nothing():
    missing = _api_error(docker.errors.ImageNotFound, 404, "No such image: img:1")
    api = ScriptedAPI(SPEC, create=[missing], pull=[{"error": "pull access denied for img"}])
    with pytest.raises(RuntimeFailure, match="image 'img:1' is not present locally and could not be pulled: "
                                             "pull access denied"):
        run(api)
    assert [c[0] for c in api.calls] == ["create", "pull"]


def test_an_image_still_missing_after_its_pull_is_a_failure_not_a_loop():
    missing = _api_error(docker.errors.ImageNotFound, 404, "No such image: img:1")
    api = ScriptedAPI(SPEC, create=[missing, missing])
    with pytest.raises(RuntimeFailure, match="not present locally and could not be pulled"):
        run(api)
    assert [c[0] for c in api.calls] == ["create", "pull", "create"]


def test_a_taken_name_is_ours_when_it_runs_this_attempt():
    taken = _api_error(docker.errors.APIError, 409, "Conflict. The container name is already in use")
    mine = _inspected(SPEC, cid="d" * 64)
    api = ScriptedAPI(SPEC, create=[taken], existing=mine)
    assert run(api).container_id == "d" * 64  # never started twice
    assert [c[0] for c in api.calls] == ["create", "inspect"]


def test_a_taken_name_of_a_leftover_is_cleared_and_created_again():
    taken = _api_error(docker.errors.APIError, 409, "Conflict. The container name is already in use")
    leftover = _inspected(SPEC, status="exited", cid="e" * 64)
    api = ScriptedAPI(SPEC, create=[taken, CID], existing=leftover)
    assert run(api).container_id == CID
    assert [c[0] for c in api.calls] == ["create", "inspect", "remove", "create", "start", "inspect"]


def test_a_start_that_fails_removes_its_container():
    class Failing(ScriptedAPI):
        def start(self, container_id):
            super().start(container_id)
            raise _api_error(docker.errors.APIError, 500, "OCI runtime create failed: exec: no such file")
    api = Failing(SPEC, create=[CID])
    with pytest.raises(RuntimeFailure, match="failed to start: OCI runtime create failed"):
        run(api)
    assert [c[0] for c in api.calls] == ["create", "start", "remove"]
