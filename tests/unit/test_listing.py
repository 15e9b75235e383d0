"""Paged, filtered lists (cube.manager.listing): what `task ls` hides, filters, and pages that never
repeat or skip a row and never outgrow a frame."""
from __future__ import annotations

import base64
import json

import pytest

from cube.manager import listing
from cube.manager.listing import MAX_LIMIT, PAGE_BYTES, finished, page, task_filter
from cube.model.state import State
from cube.model.task import DESIRED_STOPPED, RestartPolicy, Task
from cube.wire import codec
from cube.wire.errors import BAD_REQUEST, CubeError


def task(id: str, state: State = State.RUNNING, worker: str = "w1", name: str | None = None,
         desired: str = "running", created: float = 0.0, **kw) -> Task:
    return Task(id=id, name=name or f"n-{id}", image="img", state=state, worker=worker, desired=desired,
                created_at=created, **kw)


def waiting_to_restart(**kw) -> Task:
    return task("r", State.FAILED, not_before=123.0, exit_code=1, restart_count=0,
                restart=RestartPolicy("on-failure", 3), **kw)


# ---- finished ------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", [State.PENDING, State.SCHEDULED, State.RUNNING])
def test_live_states_are_not_finished(state):
    assert not finished(task("t", state))
    assert not finished(task("t", state, desired=DESIRED_STOPPED))  # stopping: not over yet


def test_completed_is_finished():
    assert finished(task("t", State.COMPLETED))


def test_a_failed_task_waiting_to_restart_is_live():
    assert not finished(waiting_to_restart())


@pytest.mark.parametrize("why, t", [
    ("stopped", waiting_to_restart(desired=DESIRED_STOPPED)),
    ("no restart due", task("t", State.FAILED, exit_code=1)),
    ("restarts used up", task("t", State.FAILED, exit_code=1, not_before=123.0, restart_count=3,
                              restart=RestartPolicy("on-failure", 3))),
    ("policy no", task("t", State.FAILED, exit_code=1, not_before=123.0, restart=RestartPolicy("no"))),
    ("exit 0 under on-failure", task("t", State.FAILED, exit_code=0, not_before=123.0)),
])
def test_a_failed_task_that_will_not_restart_is_finished(why, t):
    assert finished(t), why


# ---- task_filter ---------------------------------------------------------------------------------

TASKS = [
    task("p", State.PENDING, worker="", name="web"),
    task("s", State.SCHEDULED, worker="w2", name="db"),
    task("u", State.RUNNING, worker="w1", name="web"),
    task("c", State.COMPLETED, worker="w1", name="job"),
    task("f", State.FAILED, worker="w2", name="job", exit_code=1),
    waiting_to_restart(worker="w1", name="flaky"),
]


def ids(body: dict) -> list[str]:
    keep = task_filter(body)
    return [t.id for t in TASKS if keep(t)]


def test_default_hides_finished_tasks():
    assert ids({}) == ["p", "s", "u", "r"]  # the failed one waiting to restart is live
    assert ids({"all": False}) == ["p", "s", "u", "r"]


def test_all_shows_everything():
    assert ids({"all": True}) == ["p", "s", "u", "c", "f", "r"]


def test_state_filter_is_case_insensitive_and_includes_finished_ones():
    assert ids({"state": "completed"}) == ["c"]
    assert ids({"state": ["Failed", "PENDING"]}) == ["p", "f", "r"]
    assert ids({"state": "nothing"}) == []


def test_worker_and_name_filters():
    assert ids({"worker": "w1"}) == ["u", "r"]
    assert ids({"worker": "w1", "all": True}) == ["u", "c", "r"]
    assert ids({"worker": ["w1", "w2"]}) == ["s", "u", "r"]
    assert ids({"name": "web"}) == ["p", "u"]
    assert ids({"name": ["job"], "all": True}) == ["c", "f"]
    assert ids({"name": "web", "worker": "w1", "state": "running"}) == ["u"]
    assert ids({"name": "", "worker": None}) == ["p", "s", "u", "r"]  # empty means no filter


# ---- page ----------------------------------------------------------------------------------------

def key(t: Task) -> list:
    return [t.created_at, t.id]


def render(t: Task) -> dict:
    return {"id": t.id}


def all_pages(rows: list[Task], body: dict, between=None) -> list[list[str]]:
    """Every page, following the tokens; `between(i)` may change `rows` after page i."""
    pages, token = [], ""
    for i in range(1000):
        out, token = page(list(rows), key, render, {**body, "continue": token})
        pages.append([r["id"] for r in out])
        if not token:
            return pages
        if between:
            between(i)
    raise AssertionError("the pages never end")


def test_limit_and_order():
    rows = [task(f"t{i:02d}", created=float(i % 5)) for i in range(12)]
    out, token = page(rows, key, render, {"limit": 5})
    assert [r["id"] for r in out] == ["t00", "t05", "t10", "t01", "t06"]  # (created, id)
    assert token
    pages = all_pages(rows, {"limit": 5})
    assert [len(p) for p in pages] == [5, 5, 2]
    assert sum(pages, []) == [t.id for t in sorted(rows, key=key)]


def test_an_exact_fit_ends_without_an_empty_page():
    rows = [task(f"t{i}", created=float(i)) for i in range(4)]
    out, token = page(rows, key, render, {"limit": 4})
    assert len(out) == 4 and token == ""
    assert page([], key, render, {}) == ([], "")


def test_the_default_limit():
    rows = [task(f"t{i:04d}", created=float(i)) for i in range(listing.DEFAULT_LIMIT + 1)]
    out, token = page(rows, key, render, {})
    assert len(out) == listing.DEFAULT_LIMIT and token
    out, _ = page(rows, key, render, {"limit": 0})  # 0: not given
    assert len(out) == listing.DEFAULT_LIMIT


def test_rows_added_or_removed_between_pages_are_never_repeated_or_skipped():
    rows = [task(f"t{i:02d}", created=float(i)) for i in range(20)]
    original = {t.id for t in rows}

    def churn(i: int) -> None:
        rows.append(task(f"new{i}", created=100.0 + i))  # newer: after every page so far
        rows.append(task(f"old{i}", created=-1.0 - i))  # older than the cursor: never seen
        rows.insert(0, task(f"same{i}", created=float(5 * (i + 1) - 1)))  # (t, "same") < (t, "t..")
        del rows[-3]  # remove one row (maybe not seen yet)

    seen = sum(all_pages(rows, {"limit": 5}, churn), [])
    assert len(seen) == len(set(seen))  # no duplicates
    removed = original - {t.id for t in rows}
    assert original - removed <= set(seen)  # every row that stayed was listed
    assert not any(i.startswith("old") for i in seen)


def test_a_page_stays_under_page_bytes():
    blob = "x" * (100 << 10)
    rows = [task(f"t{i:02d}", created=float(i)) for i in range(20)]
    fat = lambda t: {"id": t.id, "blob": blob}
    out, token = page(rows, key, fat, {"limit": 100})
    assert token and 1 < len(out) < 20
    assert sum(len(codec.pack(r)) for r in out) <= PAGE_BYTES
    pages = [out]
    while token:
        out, token = page(rows, key, fat, {"limit": 100, "continue": token})
        pages.append(out)
    assert [r["id"] for p in pages for r in p] == [t.id for t in rows]
    huge = lambda t: {"id": t.id, "blob": "y" * (PAGE_BYTES + 1)}
    out, token = page(rows, key, huge, {})
    assert len(out) == 1 and token  # one row larger than a page still comes, alone


@pytest.mark.parametrize("limit", [-1, MAX_LIMIT + 1])
def test_a_bad_limit_is_refused(limit):
    with pytest.raises(CubeError) as err:
        page([task("t")], key, render, {"limit": limit})
    assert err.value.code == BAD_REQUEST and "limit" in err.value.message


def _token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("token", [
    "not base64 !!!",
    base64.urlsafe_b64encode(b"not json").decode(),
    _token({"a": 1}),
    _token("string"),
    _token(["a node name"]),  # a node listing's token given to a task listing
    _token([None, None]),
])
def test_a_bad_continue_token_is_refused(token):
    rows = [task(f"t{i}", created=float(i)) for i in range(3)]
    with pytest.raises(CubeError) as err:
        page(rows, key, render, {"continue": token})
    assert err.value.code == BAD_REQUEST and "continue token" in err.value.message


# ---- the index task.ls pages walk ----------------------------------------------------------------

def test_index_pages_match_a_full_sort_and_follow_changes():
    index = listing.Index()
    rows = {f"t{i:03d}": {"id": f"t{i:03d}", "at": float(i % 7)} for i in range(60)}
    for rid, r in rows.items():
        index.put(rid, (r["at"], rid))
    index.put("t005", (rows["t005"]["at"], "t005"))  # idempotent
    assert len(index) == 60 and index.keys == sorted(index.keys)
    seen, token = [], ""
    while True:
        page, token = listing.page_indexed(index, lambda k: rows.get(k[1]), lambda r: True,
                                           lambda r: {"id": r["id"]}, {"limit": 7, "continue": token})
        seen += [r["id"] for r in page]
        if not token:
            break
        index.remove("t010")  # rows removed between pages never make a page repeat or skip
        rows.pop("t010", None)
    expected = [rid for _, rid in sorted((r["at"], rid) for rid, r in rows.items())]
    assert seen == [s for s in seen if s in expected or s == "t010"] and [s for s in seen if s != "t010"] == expected


def test_index_page_filters_and_refuses_foreign_tokens():
    index = listing.Index()
    for i in range(10):
        index.put(f"r{i}", (float(i), f"r{i}"))
    page, token = listing.page_indexed(index, lambda k: k[1], lambda r: r.endswith(("1", "3", "5")),
                                       lambda r: {"id": r}, {"limit": 2})
    assert [r["id"] for r in page] == ["r1", "r3"] and token
    page, token = listing.page_indexed(index, lambda k: k[1], lambda r: r.endswith(("1", "3", "5")),
                                       lambda r: {"id": r}, {"limit": 2, "continue": token})
    assert [r["id"] for r in page] == ["r5"] and token == ""
    foreign = listing._encode(["a-node-name"])
    with pytest.raises(CubeError) as e:
        listing.page_indexed(index, lambda k: k[1], lambda r: True, lambda r: {"id": r}, {"continue": foreign})
    assert e.value.code == "bad_request"
