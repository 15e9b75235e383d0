"""Submit-time checks that keep a task within what Docker will run: memory floor, pids limit."""
from __future__ import annotations

import pytest

from cube.model.runspec import RunSpec, RunSpecError
from cube.model.task import MIN_MEMORY, Task, TaskSpecError, task_from_spec
from cube.model.units import describe_size

MiB = 1 << 20


@pytest.mark.parametrize("memory,shown", [
    ("4m", "4MiB"), (4 * MiB, "4MiB"), ("512k", "512KiB"), (1, "1 bytes"), (MIN_MEMORY - 1, "6291455 bytes"),
])
def test_memory_below_dockers_minimum_is_refused_with_the_field_named(memory, shown):
    with pytest.raises(TaskSpecError) as e:
        task_from_spec({"image": "x", "memory": memory})
    assert str(e.value) == f"field 'memory': {shown} is below Docker's minimum of 6MiB"


@pytest.mark.parametrize("memory,expected", [
    (None, 0), (0, 0), ("0", 0), ("", 0), ("6m", MIN_MEMORY), (MIN_MEMORY, MIN_MEMORY), ("64m", 64 * MiB),
])
def test_no_memory_means_no_limit_and_the_minimum_itself_is_allowed(memory, expected):
    spec = {"image": "x"} if memory is None else {"image": "x", "memory": memory}
    assert task_from_spec(spec).memory == expected


def test_the_books_capitalised_memory_key_is_checked_too():
    with pytest.raises(TaskSpecError, match="field 'memory': 1MiB"):
        task_from_spec({"Image": "x", "Memory": MiB})


def test_describe_size_is_exact():
    assert [describe_size(n) for n in (0, 1023, 1024, 1536, 6 * MiB, 3 << 30, 2 << 40)] == [
        "0 bytes", "1023 bytes", "1KiB", "1536 bytes", "6MiB", "3GiB", "2TiB"]


# ---- pids_limit -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [(None, 0), (1, 1), (256, 256), ("4096", 4096), (" 64 ", 64)])
def test_pids_limit_is_optional_and_a_positive_whole_number(value, expected):
    spec = {"image": "x"} if value is None else {"image": "x", "pids_limit": value}
    assert task_from_spec(spec).pids_limit == expected


def test_pids_limit_has_the_books_spelling():
    assert task_from_spec({"Image": "x", "PidsLimit": 32}).pids_limit == 32


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, True, "many", "-3", "", [10], 2**63])
def test_bad_pids_limit_is_refused_with_the_field_named(value):
    with pytest.raises(TaskSpecError, match="field 'pids_limit'"):
        task_from_spec({"image": "x", "pids_limit": value})


def test_pids_limit_travels_in_the_task_and_the_run_spec():
    task = task_from_spec({"image": "x", "pids_limit": 100})
    assert Task.from_dict(task.to_dict()).pids_limit == 100
    spec = RunSpec.of(task)
    assert spec.pids_limit == 100 and RunSpec.from_dict(spec.to_dict()) == spec


def test_a_run_spec_without_pids_limit_means_the_default():
    """An older manager's worker.run has no pids_limit: the worker's default applies."""
    d = RunSpec("t1", "web", "img").to_dict()
    del d["pids_limit"]
    assert RunSpec.from_dict(d).pids_limit == 0
    with pytest.raises(RunSpecError, match="pids_limit"):
        RunSpec.from_dict({**d, "pids_limit": -1})


def test_a_stored_task_from_before_pids_limit_loads():
    d = task_from_spec({"image": "x"}).to_dict()
    del d["pids_limit"]
    assert Task.from_dict(d).pids_limit == 0
