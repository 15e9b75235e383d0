"""RunSpec: what worker.run carries (built once per attempt by the Manager, checked by the worker)."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from cube.model.runspec import RunSpec, RunSpecError
from cube.model.task import task_from_spec


def test_of_a_task_round_trips_and_matches_asdict():
    task = task_from_spec({"name": "web", "image": "img", "cmd": ["httpd", "-f"], "env": ["A=1"],
                           "cpu": 0.5, "memory": "64m", "ports": [80]})
    spec = RunSpec.of(task)
    assert spec.to_dict() == asdict(spec)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert (spec.task_id, spec.cpu, spec.memory, spec.ports) == (task.id, 0.5, 64 << 20, ["80/tcp"])
    d = spec.to_dict()
    d["env"]["B"] = "2"
    assert "B" not in spec.env  # to_dict copies


@pytest.mark.parametrize("change,field", [
    ({"task_id": ""}, "task_id"), ({"image": 7}, "image"), ({"command": "sh -c x"}, "command"),
    ({"env": {"A": 1}}, "env"), ({"ports": [80]}, "ports"), ({"cpu": float("nan")}, "cpu"),
    ({"cpu": -1}, "cpu"), ({"memory": 1.5}, "memory"), ({"disk": True}, "disk"),
])
def test_from_dict_names_the_bad_field(change, field):
    good = RunSpec("t1", "web", "img").to_dict()
    with pytest.raises(RunSpecError) as e:
        RunSpec.from_dict({**good, **change})
    assert field in str(e.value)
    with pytest.raises(RunSpecError):
        RunSpec.from_dict("not a map")
