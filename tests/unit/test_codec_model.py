"""hub.model validation and hub.etcd.codec encoding: specs refuse bad input, records round-trip,
and decoding anything that is not one of our records raises CorruptRecord, never more."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hub._proto import processhub_pb2 as pb
from hub.errors import CorruptRecord, InvalidChildId, InvalidSpec
from hub.etcd.codec import (
    decode_node,
    decode_owner,
    decode_spec,
    encode_node,
    encode_owner,
    encode_spec,
)
from hub.model import (
    MAX_CHILD_ID_BYTES,
    ChildSpec,
    NodeInfo,
    NodeState,
    OwnerRecord,
    OwnerState,
    RestartPolicy,
    validate_child_id,
)

KEY = b"/p/h/specs/x"
TARGET = "pkg.mod:Worker"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
child_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
targets = st.from_regex(
    r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){0,2}:[A-Z][A-Za-z0-9_]{0,8}", fullmatch=True
)


# -- ChildSpec validation ----------------------------------------------------------------


def test_minimal_spec_defaults() -> None:
    spec = ChildSpec("c1", TARGET)
    assert spec.args == {}
    assert spec.metadata == {}
    assert spec.restart is RestartPolicy.PERMANENT
    assert spec.tag is None
    assert spec.args_json == "{}"


def test_restart_given_as_string_becomes_the_enum() -> None:
    spec = ChildSpec("c1", TARGET, restart="transient")  # type: ignore[arg-type]
    assert spec.restart is RestartPolicy.TRANSIENT


def test_id_length_limit_is_in_utf8_bytes() -> None:
    ChildSpec("a" * MAX_CHILD_ID_BYTES, TARGET)
    ChildSpec("é" * (MAX_CHILD_ID_BYTES // 2), TARGET)  # 2 bytes each: exactly the limit
    with pytest.raises(InvalidChildId):
        ChildSpec("a" * (MAX_CHILD_ID_BYTES + 1), TARGET)
    with pytest.raises(InvalidChildId):
        ChildSpec("é" * (MAX_CHILD_ID_BYTES // 2 + 1), TARGET)


@pytest.mark.parametrize("bad_id", ["", 1, None, b"c1", ["c1"], "\ud800"])
def test_bad_ids_are_refused(bad_id: Any) -> None:
    with pytest.raises(InvalidChildId):
        ChildSpec(bad_id, TARGET)
    with pytest.raises(InvalidChildId):
        validate_child_id(bad_id)


def test_invalid_child_id_is_an_invalid_spec() -> None:
    assert issubclass(InvalidChildId, InvalidSpec)
    assert issubclass(InvalidSpec, ValueError)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "module",
        "module:",
        ":attr",
        "mod:attr:more",
        "1mod:attr",
        "mod.:attr",
        "mod..x:attr",
        "mod:attr-x",
        "mod/x:attr",
        "mod:attr()",
        " mod:attr",
        "mod:attr ",
        None,
        42,
    ],
)
def test_bad_targets_are_refused(target: Any) -> None:
    with pytest.raises(InvalidSpec, match="start target"):
        ChildSpec("c1", target)


@pytest.mark.parametrize("target", ["m:a", "pkg.mod:Worker", "_p.m2:Outer.Inner", "a.b.c:d.e"])
def test_good_targets_are_accepted(target: str) -> None:
    assert ChildSpec("c1", target).start == target


@pytest.mark.parametrize(
    "args",
    [
        {1, 2},
        object(),
        math.nan,
        math.inf,
        -math.inf,
        {"x": math.nan},
        [1, {"y": {3}}],
        b"bytes",
        {("tuple", "key"): 1},
        ChildSpec,
    ],
    ids=repr,
)
def test_non_json_args_are_refused(args: Any) -> None:
    with pytest.raises(InvalidSpec, match="args must be JSON"):
        ChildSpec("c1", TARGET, args=args)


@pytest.mark.parametrize("restart", ["always", "PERMANENT", "", None, 1])
def test_bad_restart_policies_are_refused(restart: Any) -> None:
    with pytest.raises(InvalidSpec, match="restart"):
        ChildSpec("c1", TARGET, restart=restart)


@pytest.mark.parametrize("metadata", [["tag"], "tag", 3, None])
def test_metadata_must_be_a_mapping(metadata: Any) -> None:
    with pytest.raises(InvalidSpec, match="metadata must be a mapping"):
        ChildSpec("c1", TARGET, metadata=metadata)


@pytest.mark.parametrize("metadata", [{"tag": {1}}, {"x": math.nan}, {"o": object()}], ids=repr)
def test_metadata_must_be_json(metadata: Any) -> None:
    with pytest.raises(InvalidSpec, match="metadata must be JSON"):
        ChildSpec("c1", TARGET, metadata=metadata)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_restarts", -1),
        ("max_restarts", "3"),
        ("max_restarts", 1.5),
        ("max_seconds", 0),
        ("max_seconds", -1.0),
        ("max_seconds", math.nan),
        ("max_seconds", None),  # was a TypeError, not a typed InvalidSpec
        ("max_seconds", "30"),
        ("max_seconds", True),
    ],
)
def test_bad_restart_intensity_is_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidSpec, match=field):
        ChildSpec("c1", TARGET, **{field: value})


def test_tag_is_only_a_string() -> None:
    assert ChildSpec("c1", TARGET, metadata={"tag": "t"}).tag == "t"
    assert ChildSpec("c1", TARGET, metadata={"tag": 3}).tag is None


def test_canonical_json_ignores_key_order() -> None:
    a = ChildSpec("c1", TARGET, args={"a": 1, "b": 2}, metadata={"y": 1, "x": 2})
    b = ChildSpec("c1", TARGET, args={"b": 2, "a": 1}, metadata={"x": 2, "y": 1})
    assert a.args_json == b.args_json
    assert a.metadata_json == b.metadata_json
    assert encode_spec(a, 1.0) == encode_spec(b, 1.0)


# -- spec round trip ---------------------------------------------------------------------


@given(
    child_id=child_ids,
    start=targets,
    args=json_values,
    restart=st.sampled_from(list(RestartPolicy)),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    max_restarts=st.integers(min_value=0, max_value=2**32 - 1),
    max_seconds=st.floats(min_value=1e-3, max_value=1e9),
    created_at=st.floats(min_value=0, max_value=4e9),
)
@example(
    child_id="a/b%2F",
    start=TARGET,
    args={"nested": [1, 2.5, None, True, "x"]},
    restart=RestartPolicy.TRANSIENT,
    metadata={"tag": "t"},
    max_restarts=0,
    max_seconds=0.5,
    created_at=0.0,
)
def test_spec_round_trip(
    child_id: str,
    start: str,
    args: Any,
    restart: RestartPolicy,
    metadata: dict[str, Any],
    max_restarts: int,
    max_seconds: float,
    created_at: float,
) -> None:
    spec = ChildSpec(
        child_id,
        start,
        args=args,
        restart=restart,
        metadata=metadata,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
    )
    decoded = decode_spec(KEY, encode_spec(spec, created_at))
    assert decoded == spec
    assert decoded.args_json == spec.args_json
    assert decoded.metadata_json == spec.metadata_json
    assert decoded.tag == spec.tag
    # What decodes is a spec ChildSpec() itself accepts.
    rebuilt = ChildSpec(
        decoded.id,
        decoded.start,
        args=decoded.args,
        restart=decoded.restart,
        metadata=decoded.metadata,
        max_restarts=decoded.max_restarts,
        max_seconds=decoded.max_seconds,
    )
    assert rebuilt == spec


# -- decoding garbage --------------------------------------------------------------------

DECODERS = [decode_spec, decode_owner, decode_node]


def _spec_record(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "schema": 1,
        "child_id": "c1",
        "start": TARGET,
        "args_json": "{}",
        "restart": "permanent",
        "metadata_json": "{}",
        "max_restarts": 3,
        "max_seconds": 5.0,
    }
    base.update(fields)
    return bytes(pb.ChildSpec(**base).SerializeToString())


def test_spec_record_helper_is_valid() -> None:
    assert decode_spec(KEY, _spec_record()) == ChildSpec(
        "c1", TARGET, max_restarts=3, max_seconds=5
    )


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "value",
    [
        b"",  # parses as an all-default message: no schema
        b"\x00",
        b"\xff\xff\xff\xff",
        b"not a protobuf at all",
        b'{"child_id": "c1"}',
        b"\x08",  # truncated varint
        b"\x12\x05ab",  # truncated length-delimited field
        b"\x12\x02\xff\xfe",  # invalid UTF-8 in a string field
    ],
)
def test_garbage_is_a_corrupt_record(decode: Any, value: bytes) -> None:
    with pytest.raises(CorruptRecord) as info:
        decode(KEY, value)
    assert info.value.key == KEY


def test_records_of_the_wrong_kind_are_corrupt() -> None:
    spec = encode_spec(ChildSpec("c1", TARGET), 1.0)
    owner = encode_owner(OwnerRecord("n1", 7, OwnerState.RUNNING, 1.0))
    node = encode_node(NodeInfo("n1", 7, address="10.0.0.1:1"))
    for decode, value in [
        (decode_spec, owner),
        (decode_spec, node),
        (decode_owner, spec),
        (decode_owner, node),
        (decode_node, spec),
    ]:
        with pytest.raises(CorruptRecord):
            decode(KEY, value)


@pytest.mark.parametrize(
    "fields",
    [
        {"schema": 0},
        {"child_id": ""},
        {"child_id": "x" * (MAX_CHILD_ID_BYTES + 1)},
        {"start": "not a target"},
        {"restart": "sometimes"},
        {"args_json": "{not json"},
        {"args_json": "NaN"},
        {"args_json": '{"x": Infinity}'},
        {"args_json": "[1e999]"},  # overflows to inf
        {"metadata_json": "[1, 2]"},
        {"metadata_json": '{"tag": -Infinity}'},
        {"metadata_json": "{"},
        {"max_seconds": -1.0},
        {"max_seconds": math.nan},
        # Deeper than the JSON parser's recursion limit: must not escape as RecursionError.
        {"args_json": "[" * 100_000 + "]" * 100_000},
        {"metadata_json": '{"a":' * 100_000 + "1" + "}" * 100_000},
    ],
    ids=lambda fields: ",".join(f"{k}={str(v)[:12]}" for k, v in fields.items()),
)
def test_invalid_spec_records_are_corrupt(fields: dict[str, Any]) -> None:
    with pytest.raises(CorruptRecord):
        decode_spec(KEY, _spec_record(**fields))


def test_spec_record_defaults() -> None:
    # Empty JSON fields and a zero window fall back to the ChildSpec defaults.
    spec = decode_spec(
        KEY, _spec_record(args_json="", metadata_json="", restart="", max_seconds=0.0)
    )
    assert spec == ChildSpec("c1", TARGET, max_restarts=3)


def test_newer_schema_with_unknown_fields_still_decodes() -> None:
    value = _spec_record(schema=2) + b"\xa8\x06\x01"  # field 101, varint 1: unknown to us
    assert decode_spec(KEY, value).id == "c1"


@pytest.mark.parametrize(
    ("record", "fields"),
    [
        (pb.Owner, {"schema": 1, "node_id": "", "state": "running"}),
        (pb.Owner, {"schema": 1, "node_id": "n1", "state": "dancing"}),
        (pb.Owner, {"schema": 1, "node_id": "n1", "state": ""}),
        (pb.Owner, {"schema": 0, "node_id": "n1", "state": "running"}),
        (pb.NodeInfo, {"schema": 1, "node_id": "", "state": "active"}),
        (pb.NodeInfo, {"schema": 1, "node_id": "n1", "state": "asleep"}),
        (pb.NodeInfo, {"schema": 0, "node_id": "n1"}),
    ],
)
def test_invalid_owner_and_node_records_are_corrupt(record: Any, fields: dict[str, Any]) -> None:
    decode = decode_owner if record is pb.Owner else decode_node
    with pytest.raises(CorruptRecord):
        decode(KEY, bytes(record(**fields).SerializeToString()))


@given(st.binary(max_size=200))
@example(b"\x08\x01")  # schema=1 and nothing else
@example(b"\x08\x01\x12\x02n1\x22\x07running")  # a minimal owner
def test_random_bytes_decode_or_raise_corrupt_record(value: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(KEY, value)
        except CorruptRecord:
            pass


@given(
    st.fixed_dictionaries(
        {
            "schema": st.sampled_from([1, 1, 2, 0]),
            "child_id": st.just("c1") | st.text(max_size=10),
            "start": st.sampled_from(["m:a", "m:a", "", "x", "m:a:b"]) | st.text(max_size=10),
        },
        optional={
            "args_json": st.sampled_from(["{}", "[]", "NaN", "[1e999]", "-1e400", "[[[", '"x"'])
            | st.text(max_size=20),
            "restart": st.sampled_from(["", "permanent", "transient", "temporary", "x"]),
            "metadata_json": st.sampled_from(["{}", "[]", "null", '{"tag":"t"}', '{"a":NaN}'])
            | st.text(max_size=20),
            "max_restarts": st.integers(0, 2**32 - 1),
            "max_seconds": st.floats(),
        },
    )
)
def test_structured_spec_records_decode_to_valid_specs_or_raise(fields: dict[str, Any]) -> None:
    try:
        spec = decode_spec(KEY, bytes(pb.ChildSpec(**fields).SerializeToString()))
    except CorruptRecord:
        return
    # Anything accepted satisfies the same rules as a spec built in Python.
    validate_child_id(spec.id)
    assert spec.max_seconds > 0
    assert isinstance(spec.metadata, dict)
    ChildSpec(
        spec.id,
        spec.start,
        args=spec.args,
        restart=spec.restart,
        metadata=spec.metadata,
        max_restarts=spec.max_restarts,
        max_seconds=spec.max_seconds,
    )


# -- node and owner records --------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint32s = st.integers(min_value=0, max_value=2**32 - 1)
times = st.floats(allow_nan=False)


@given(
    node_id=names,
    incarnation=int64s,
    address=st.text(max_size=30),
    labels=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
    weight=st.integers(min_value=1, max_value=2**32 - 1),
    state=st.sampled_from(list(NodeState)),
    version=st.text(max_size=10),
    started_at=times,
)
def test_node_round_trip(
    node_id: str,
    incarnation: int,
    address: str,
    labels: dict[str, str],
    weight: int,
    state: NodeState,
    version: str,
    started_at: float,
) -> None:
    info = NodeInfo(node_id, incarnation, address, labels, weight, state, version, started_at)
    assert decode_node(KEY, encode_node(info)) == info


def test_node_weight_zero_reads_as_one() -> None:
    value = bytes(pb.NodeInfo(schema=1, node_id="n1", weight=0).SerializeToString())
    info = decode_node(KEY, value)
    assert info.weight == 1
    assert info.state is NodeState.ACTIVE  # empty state means active


@given(
    node_id=names,
    incarnation=int64s,
    state=st.sampled_from(list(OwnerState)),
    started_at=times,
    restarts=uint32s,
    last_exit=st.text(max_size=50),
)
def test_owner_round_trip(
    node_id: str,
    incarnation: int,
    state: OwnerState,
    started_at: float,
    restarts: int,
    last_exit: str,
) -> None:
    owner = OwnerRecord(node_id, incarnation, state, started_at, restarts, last_exit)
    assert decode_owner(KEY, encode_owner(owner)) == owner
