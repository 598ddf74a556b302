"""hub.messaging.payload: JSON and bytes round-trip; what JSON cannot say raises NotSerializable;
bytes that are not valid for their codec (or an unknown codec) raise BadPayload, never more."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import BadPayload, CallError, NotSerializable
from hub.messaging.payload import (
    BYTES,
    DEFAULT_CODECS,
    JSON,
    BytesCodec,
    JsonCodec,
    PayloadCodec,
    decode_payload,
    encode_payload,
)

# JSON-native values: what JSON round-trips exactly (finite floats, string keys, lists).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_json_round_trips(value: Any) -> None:
    data, codec = encode_payload(value)
    assert codec == "json"
    assert decode_payload(data, codec) == value


def test_json_is_compact() -> None:
    assert JSON.encode({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'.encode()


@given(st.binary())
def test_bytes_pass_through(value: bytes) -> None:
    for raw in (value, bytearray(value), memoryview(value)):
        data, codec = encode_payload(raw)
        assert (data, codec) == (value, "bytes")
        assert type(data) is bytes
        assert decode_payload(data, codec) == value


@given(st.binary())
def test_bytes_pass_through_even_with_another_codec(value: bytes) -> None:
    assert encode_payload(value, JSON) == (value, "bytes")


@given(st.binary())
def test_decoding_any_bytes_as_json_is_a_value_or_bad_payload(data: bytes) -> None:
    try:
        JSON.decode(data)
    except BadPayload:
        pass


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1.0, {"x": math.nan}],
        {1, 2},
        frozenset(),
        object(),
        [{"deep": {3}}],
        {(1, 2): "tuple key"},
        b"bytes inside a structure".split(),
        pytest.param(10**5000, id="int past the digit limit"),
    ],
    ids=repr,
)
def test_what_json_cannot_say_is_not_serializable(value: Any) -> None:
    with pytest.raises(NotSerializable) as info:
        encode_payload(value, child_id="counter-1")
    assert info.value.child_id == "counter-1"
    assert isinstance(info.value, CallError)


def test_not_serializable_names_the_type() -> None:
    class Opaque:
        pass

    with pytest.raises(NotSerializable, match="set"):
        encode_payload({"a": [{1}]})
    with pytest.raises(NotSerializable, match="Opaque"):
        encode_payload(Opaque())
    with pytest.raises(NotSerializable, match="int"):
        BYTES.encode(42)


def test_cycles_are_not_serializable() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(NotSerializable):
        encode_payload(cycle)


@pytest.mark.parametrize("value", ["text", 1, None, [b"x"]], ids=repr)
def test_bytes_codec_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(NotSerializable):
        BYTES.encode(value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"NaN", b"[Infinity]", b"-Infinity", b"\xff\xfe", b"{'a': 1}", b"[1,]"],
    ids=repr,
)
def test_invalid_json_is_bad_payload(data: bytes) -> None:
    with pytest.raises(BadPayload) as info:
        decode_payload(data, "json", child_id="counter-1")
    assert info.value.child_id == "counter-1"


def test_deeply_nested_json_is_bad_payload_not_a_crash() -> None:
    with pytest.raises(BadPayload):
        decode_payload(b"[" * 100_000 + b"]" * 100_000, "json")


@pytest.mark.parametrize("name", ["", "pickle", "JSON", "msgpack"])
def test_unknown_codec_is_bad_payload(name: str) -> None:
    with pytest.raises(BadPayload, match="unknown payload codec"):
        decode_payload(b"null", name)


def test_builtin_codecs_are_payload_codecs() -> None:
    assert isinstance(JsonCodec(), PayloadCodec)
    assert isinstance(BytesCodec(), PayloadCodec)
    assert dict(DEFAULT_CODECS) == {"json": JSON, "bytes": BYTES}


class _Upper:
    """A plugged-in codec: text, upper-cased."""

    name = "upper"

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise NotSerializable("", None, f"upper takes str, not {type(obj).__name__}")
        return obj.upper().encode()

    def decode(self, data: bytes) -> Any:
        return data.decode()


def test_a_plugged_in_codec_is_used_for_non_bytes_and_found_by_name() -> None:
    upper = _Upper()
    data, codec = encode_payload("hello", upper)
    assert (data, codec) == (b"HELLO", "upper")
    with pytest.raises(BadPayload):
        decode_payload(data, codec)  # the defaults do not know it
    assert decode_payload(data, codec, {**DEFAULT_CODECS, "upper": upper}) == "HELLO"
    with pytest.raises(NotSerializable) as info:
        encode_payload(3, upper, child_id="c")
    assert info.value.child_id == "c"
