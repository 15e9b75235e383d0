"""Codec, envelope and schema: what a receiver accepts, and the error code of what it refuses."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, HealthCheck as HC
from hypothesis import strategies as st

import cube.messages  # noqa: F401  (declares every schema)
from cube.wire import codec, schema
from cube.wire.envelope import REPLY_ERROR, REPLY_OK, VERSION, Envelope, decode, reply_id_hint
from cube.wire.errors import BAD_BODY, BAD_ENVELOPE, BAD_FRAME, UNKNOWN_TYPE, CubeError


def raw(**overrides) -> dict:
    m = {"v": VERSION, "id": "abc123", "type": "task.ls", "from": "tester", "ts": 1.5, "re": None, "body": {}}
    for k, v in overrides.items():
        if v is _DROP:
            m.pop(k)
        else:
            m[k] = v
    return m


_DROP = object()


def code_of(frame: bytes) -> str:
    with pytest.raises(CubeError) as err:
        decode(frame)
    return err.value.code


# ---- codec and envelope ---------------------------------------------------------------------------

def test_round_trip():
    env = Envelope("task.start", {"task": {"image": "x", "n": [1, 2.5, None, True, b"\x00\xff"]}}, sender="cli")
    back = decode(env.encode())
    assert back == env
    assert (back.type, back.body, back.sender, back.id, back.ts, back.re, back.v) == \
        (env.type, env.body, env.sender, env.id, env.ts, None, VERSION)


def test_reply_and_error_point_back_and_keep_the_route():
    req = Envelope("task.ls", {}, sender="cli", route=[b"peer"])
    ok = req.reply({"tasks": []}, "manager")
    err = req.error("not_found", "nope", "manager")
    assert ok.type == REPLY_OK and ok.re == req.id and ok.route == [b"peer"] and ok.is_reply
    assert err.type == REPLY_ERROR and err.body == {"code": "not_found", "message": "nope"} and err.is_reply
    assert decode(err.encode()).re == req.id
    assert not req.is_reply


def test_ids_are_unique():
    assert len({Envelope("x").id for _ in range(1000)}) == 1000


def test_integer_ts_is_accepted():
    assert decode(codec.pack(raw(ts=7))).ts == 7.0


@pytest.mark.parametrize("frame,code", [
    (b"", BAD_FRAME),
    (b"\xc1", BAD_FRAME),  # never used in msgpack
    (b"hello, is this the manager?", BAD_FRAME),
    (codec.pack(raw())[:-3], BAD_FRAME),  # truncated
    (codec.pack(raw()) + b"\x00", BAD_FRAME),  # trailing data
    (codec.pack([1, 2, 3]), BAD_FRAME),
    (codec.pack("a string"), BAD_FRAME),
    (codec.pack(None), BAD_FRAME),
    (msgpack.packb({1: "int key"}), BAD_FRAME),  # strict_map_key
    (msgpack.packb(raw(body={7: "x"})), BAD_FRAME),
    (codec.pack(raw(v=2)), BAD_ENVELOPE),
    (codec.pack(raw(v=_DROP)), BAD_ENVELOPE),
    (codec.pack(raw(v="1")), BAD_ENVELOPE),
    (codec.pack(raw(id=_DROP)), BAD_ENVELOPE),
    (codec.pack(raw(id="")), BAD_ENVELOPE),
    (codec.pack(raw(id=5)), BAD_ENVELOPE),
    (codec.pack(raw(type=_DROP)), BAD_ENVELOPE),
    (codec.pack(raw(type="")), BAD_ENVELOPE),
    (codec.pack(raw(type=["task.ls"])), BAD_ENVELOPE),
    (codec.pack(raw(body=_DROP)), BAD_ENVELOPE),
    (codec.pack(raw(body=[])), BAD_ENVELOPE),
    (codec.pack(raw(body="x")), BAD_ENVELOPE),
    (codec.pack(raw(body=None)), BAD_ENVELOPE),
    (codec.pack(raw(body={b"bytes-key": 1})), BAD_ENVELOPE),
    (codec.pack(raw(**{"from": _DROP})), BAD_ENVELOPE),
    (codec.pack(raw(ts="yesterday")), BAD_ENVELOPE),
    (codec.pack(raw(ts=True)), BAD_ENVELOPE),
    (codec.pack(raw(re=5)), BAD_ENVELOPE),
])
def test_refused_frames(frame, code):
    assert code_of(frame) == code


def test_oversize_frame_is_refused_before_parsing():
    big = codec.pack(raw(body={"blob": b"x" * codec.MAX_FRAME}))
    assert len(big) > codec.MAX_FRAME
    with pytest.raises(CubeError) as err:
        decode(big)
    assert err.value.code == BAD_FRAME and str(codec.MAX_FRAME) in err.value.message
    # just under the limit is fine
    fits = codec.pack(raw(body={"blob": b"x" * (codec.MAX_FRAME - 200)}))
    assert len(fits) <= codec.MAX_FRAME
    assert len(decode(fits).body["blob"]) == codec.MAX_FRAME - 200


def test_deep_nesting_is_a_bad_frame_not_a_crash():
    assert code_of(b"\x91" * 100_000 + b"\xc0") == BAD_FRAME


def test_huge_declared_length_is_a_bad_frame():
    # an array header claiming 2**32-1 elements, with nothing behind it
    assert code_of(b"\xdd\xff\xff\xff\xff") == BAD_FRAME
    assert code_of(b"\xdb\xff\xff\xff\xff") == BAD_FRAME  # str32 of 4 GiB


def test_reply_id_hint():
    assert reply_id_hint(codec.pack(raw(v=9, id="the-id"))) == "the-id"
    assert reply_id_hint(codec.pack(raw(id=5))) is None
    assert reply_id_hint(b"\xc1garbage") is None
    assert reply_id_hint(codec.pack([1])) is None


# ---- schema ------------------------------------------------------------------------------------

def bad_body(msg_type: str, body: dict) -> str:
    with pytest.raises(CubeError) as err:
        schema.validate(msg_type, body)
    assert err.value.code == BAD_BODY
    return err.value.message


def test_every_family_is_declared():
    known = set(schema.known_types())
    for t in ("task.start", "task.stop", "task.ls", "task.inspect", "task.logs", "task.event",
              "node.ls", "node.metrics", "manager.ping", "worker.hello", "worker.heartbeat",
              "task.status", "worker.run", "worker.stop", "worker.logs", "sched.place",
              "sched.nodes", "sched.release", "store.put", "store.get", "store.delete",
              "store.list", "store.count", "store.batch"):
        assert t in known


def test_unknown_type():
    with pytest.raises(CubeError) as err:
        schema.validate("task.explode", {})
    assert err.value.code == UNKNOWN_TYPE and "task.explode" in err.value.message


def test_valid_bodies_pass():
    schema.validate("task.start", {"task": {"image": "x"}})
    schema.validate("task.ls", {})
    schema.validate("task.ls", {"all": True, "extra": "ignored"})
    schema.validate("task.logs", {"id": "x", "tail": None})  # optional may be nil
    schema.validate("sched.place", {"task_id": "t", "cpu": 1, "memory": 0, "disk": 0, "exclude": ["w1"]})
    schema.validate("sched.place", {"task_id": "t", "cpu": 0.5, "memory": 0, "disk": 0})
    schema.validate("store.put", {"ns": "tasks", "key": "k", "value": None})


@pytest.mark.parametrize("msg_type,body,field", [
    ("task.start", {}, "task"),
    ("task.start", {"task": "image=x"}, "task"),
    ("task.start", {"task": None}, "task"),
    ("task.stop", {"id": 5}, "id"),
    ("task.stop", {"id": "x" * 65}, "id"),
    ("task.ls", {"all": "yes"}, "all"),
    ("task.logs", {"id": "x", "tail": 1.5}, "tail"),
    ("task.logs", {"id": "x", "tail": True}, "tail"),  # bool is not an int here
    ("sched.place", {"task_id": "t", "cpu": True, "memory": 0, "disk": 0}, "cpu"),
    ("sched.place", {"task_id": "t", "cpu": "1", "memory": 0, "disk": 0}, "cpu"),
    ("sched.place", {"task_id": "t", "cpu": 1, "memory": 1.5, "disk": 0}, "memory"),
    ("sched.place", {"task_id": "t", "cpu": 1, "memory": False, "disk": 0}, "memory"),
    ("sched.place", {"task_id": "t", "cpu": 1, "memory": 0}, "disk"),
    ("sched.place", {"task_id": "t", "cpu": 1, "memory": 0, "disk": 0, "exclude": "w1"}, "exclude"),
    ("sched.place", {"task_id": "t", "cpu": 1, "memory": 0, "disk": 0, "exclude": ["w1", 2]}, "exclude"),
    ("worker.hello", {"name": "w", "address": "a", "cpus": 1, "memory": 1, "disk": 1,
                      "tasks": [{"task_id": "t"}, "t2"]}, "tasks"),
    ("worker.hello", {"name": "w" * 129, "address": "a", "cpus": 1, "memory": 1, "disk": 1, "tasks": []}, "name"),
    ("task.status", {"task_id": "t", "attempt": "1", "state": "running"}, "attempt"),
    ("task.status", {"task_id": "t", "attempt": 1, "state": "running", "exit_code": 0.0}, "exit_code"),
    ("store.put", {"ns": "tasks", "key": "k"}, "value"),
    ("store.get", {"ns": "t" * 33, "key": "k"}, "ns"),
    ("store.batch", {"ops": [{"op": "put"}, ["put", "tasks", "k", 1]]}, "ops"),
    ("node.metrics", {"name": "n"}, "address"),
])
def test_bad_bodies_name_the_field(msg_type, body, field):
    msg = bad_body(msg_type, body)
    assert repr(field) in msg and msg_type in msg


def test_list_item_error_names_the_index():
    msg = bad_body("sched.place", {"task_id": "t", "cpu": 1, "memory": 0, "disk": 0, "exclude": ["a", "b", 3]})
    assert "'exclude'[2]" in msg


def test_registering_a_different_schema_twice_is_refused():
    schema.register("test.only", {"a": schema.Field(int)})
    schema.register("test.only", {"a": schema.Field(int)})  # same: fine
    with pytest.raises(ValueError):
        schema.register("test.only", {"a": schema.Field(str)})


# ---- fuzz: nothing but CubeError comes out of decode + validate ------------------------------------

leaf = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(leaf, lambda kids: st.lists(kids, max_size=5)
                      | st.dictionaries(st.text(max_size=10), kids, max_size=5), max_leaves=20)
field_names = sorted({f for t in schema.known_types() for f in schema._REGISTRY[t]} | {"x"})
bodies = st.dictionaries(st.sampled_from(field_names) | st.text(max_size=5), values, max_size=8)
envelopes = st.fixed_dictionaries(
    {"v": st.sampled_from([VERSION, VERSION, 0, "1"]), "id": st.text(max_size=8),
     "type": st.sampled_from(schema.known_types() + ["nope", ""]), "from": st.text(max_size=5),
     "ts": st.floats() | st.integers(min_value=0, max_value=2**40), "body": bodies},
    optional={"re": st.none() | st.text(max_size=4) | st.integers(min_value=0, max_value=9)})


def _decode_and_validate(frame: bytes) -> None:
    try:
        env = decode(frame)
        schema.validate(env.type, env.body)
    except CubeError as e:
        assert e.code in (BAD_FRAME, BAD_ENVELOPE, UNKNOWN_TYPE, BAD_BODY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HC.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(frame):
    _decode_and_validate(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=[HC.too_slow])
@given(values)
def test_fuzz_arbitrary_msgpack_objects(obj):
    _decode_and_validate(codec.pack(obj))


@settings(max_examples=300, deadline=None, suppress_health_check=[HC.too_slow])
@given(envelopes)
def test_fuzz_envelope_shaped_maps(m):
    _decode_and_validate(codec.pack(m))


@settings(max_examples=100, deadline=None, suppress_health_check=[HC.too_slow])
@given(envelopes, st.integers(min_value=0, max_value=200))
def test_fuzz_truncated_envelopes(m, cut):
    frame = codec.pack(m)
    _decode_and_validate(frame[: min(cut, len(frame) - 1)])
