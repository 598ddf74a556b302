"""Payload codecs: how a ``call``/``cast`` message and its reply become bytes on the wire.

A payload travels as ``(bytes, codec name)``; the receiver picks the codec by name, so both
sides must know it. Two codecs are built in:

* ``"json"`` (:class:`JsonCodec`, the default): compact UTF-8 JSON. ``NaN`` and the
  infinities are refused both ways (they are not JSON), and anything :mod:`json` cannot
  represent (sets, bytes inside a structure, arbitrary objects) raises
  :class:`~hub.errors.NotSerializable`;
* ``"bytes"`` (:class:`BytesCodec`): raw ``bytes``/``bytearray``/``memoryview`` passed
  through unchanged. :func:`encode_payload` picks it automatically for raw bytes.

Example::

    data, codec = encode_payload({"op": "incr", "by": 2})   # (b'{"op":"incr","by":2}', "json")
    decode_payload(data, codec)                               # {'op': 'incr', 'by': 2}
    encode_payload(b"\\x00\\x01")                              # (b'\\x00\\x01', "bytes")

Nothing is unpickled or evaluated: decoding untrusted bytes yields plain JSON values or
``bytes``, or raises :class:`~hub.errors.BadPayload`.

Warning:
    JSON does not round-trip every Python value exactly: tuples come back as lists, and
    dictionary keys that are ``int``, ``float``, ``bool`` or ``None`` come back as strings.
    Send JSON-native values (``None``, ``bool``, ``int``, finite ``float``, ``str``, lists,
    dicts with string keys), or bytes with your own encoding, or plug in a codec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NoReturn, Protocol, runtime_checkable

from hub.errors import BadPayload, NotSerializable

__all__ = [
    "BYTES",
    "DEFAULT_CODECS",
    "JSON",
    "BytesCodec",
    "JsonCodec",
    "PayloadCodec",
    "decode_payload",
    "encode_payload",
]


@runtime_checkable
class PayloadCodec(Protocol):
    """Turns a message into bytes and back. ``name`` travels with the bytes.

    ``encode`` raises :class:`~hub.errors.NotSerializable` for a value it cannot represent;
    ``decode`` raises :class:`~hub.errors.BadPayload` for bytes it cannot parse (they come
    from the network: never trust them). Codecs must not raise anything else.
    """

    @property
    def name(self) -> str:
        """The name sent with the bytes; receivers look the codec up by it."""
        ...

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _refuse_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not valid JSON")


#: Built once: json.dumps/json.loads with keyword arguments build a new encoder or
#: decoder on every call, which is a third of a local call's cost.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


class JsonCodec:
    """Compact UTF-8 JSON; refuses NaN and the infinities in both directions."""

    name: Final = "json"

    def encode(self, obj: Any) -> bytes:
        """Serialize ``obj``; raises NotSerializable naming the offending type."""
        try:
            text = _ENCODER.encode(obj)
        # TypeError names the innermost offending type ("Object of type set is not JSON
        # serializable"); ValueError: NaN, a cycle, an int past the digit limit.
        except (TypeError, ValueError, RecursionError) as exc:
            raise NotSerializable("", None, f"cannot encode as JSON: {exc}") from exc
        return text.encode("utf-8")

    def decode(self, data: bytes) -> Any:
        """Parse JSON bytes; raises BadPayload for anything that is not strict JSON."""
        try:
            text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            return _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
            raise BadPayload("", None, f"not valid JSON: {exc}") from exc


class BytesCodec:
    """Raw bytes, unchanged; refuses anything that is not bytes-like."""

    name: Final = "bytes"

    def encode(self, obj: Any) -> bytes:
        """Return ``obj`` as ``bytes``; raises NotSerializable for non-bytes values."""
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)
        raise NotSerializable(
            "", None, f"the bytes codec takes bytes, bytearray or memoryview, not {_type(obj)}"
        )

    def decode(self, data: bytes) -> bytes:
        """Return the bytes unchanged."""
        return bytes(data)


#: The default codec for anything that is not raw bytes.
JSON: Final = JsonCodec()
#: The codec raw bytes travel with.
BYTES: Final = BytesCodec()
#: Codecs every node understands, by name.
DEFAULT_CODECS: Final[Mapping[str, PayloadCodec]] = MappingProxyType(
    {JSON.name: JSON, BYTES.name: BYTES}
)


def encode_payload(
    obj: Any, codec: PayloadCodec | None = None, *, child_id: str = ""
) -> tuple[bytes, str]:
    """Encode a message for the wire.

    Raw ``bytes``/``bytearray``/``memoryview`` always pass through with codec ``"bytes"``;
    anything else goes through ``codec`` (JSON by default).

    Args:
        obj: the message.
        codec: the codec for non-bytes messages; the receiver must know its name.
        child_id: the addressed child, to name it in errors.

    Returns:
        The encoded bytes and the codec name to send with them.

    Raises:
        NotSerializable: the codec cannot represent ``obj``.
    """
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj), BYTES.name
    chosen = JSON if codec is None else codec
    try:
        return chosen.encode(obj), chosen.name
    except NotSerializable as exc:
        if not child_id or exc.child_id:
            raise
        raise NotSerializable(child_id, exc.node_id, exc.reason) from exc


def decode_payload(
    data: bytes,
    codec_name: str,
    codecs: Mapping[str, PayloadCodec] = DEFAULT_CODECS,
    *,
    child_id: str = "",
) -> Any:
    """Decode a message received from the wire with the codec it names.

    Args:
        data: the received bytes (untrusted).
        codec_name: the codec name sent with them.
        codecs: the codecs this node knows, by name (``DEFAULT_CODECS`` unless you plug
            in your own; include the defaults when you do).
        child_id: the addressed child, to name it in errors.

    Returns:
        The decoded message.

    Raises:
        BadPayload: the codec is unknown, or the bytes are not valid for it.
    """
    codec = codecs.get(codec_name)
    if codec is None:
        raise BadPayload(child_id, None, f"unknown payload codec {codec_name!r}")
    try:
        return codec.decode(data)
    except BadPayload as exc:
        if not child_id or exc.child_id:
            raise
        raise BadPayload(child_id, exc.node_id, exc.reason) from exc


def _type(obj: Any) -> str:
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
