"""Transaction building blocks: compares and operations as plain values.

A txn is ``compares`` (all must hold) then ``success`` ops, else ``failure`` ops. Ops are
immutable NamedTuples (one is built per etcd operation, and a frozen dataclass costs
three times as much to build), not client messages, so that any :class:`~hub.etcd.kv.KV` can run
them: :class:`~hub.etcd.store.Store` translates them to etcd's protobufs at the boundary,
:class:`~hub.testing.FakeKV` interprets them. Build them with the ``cmp_*`` and ``op_*``
functions::

    owner = op_txn([cmp_create(key, "=", 0)], [op_put(key, record, lease=lease_id)])

A nested txn (:func:`op_txn`) is independent compare-and-set for one key inside a bigger
txn: :class:`~hub.etcd.batcher.TxnBatcher` packs many into one round trip, within etcd's
budget (:func:`op_width`, :data:`~hub.etcd.kv.MAX_TXN_OPS`) and request size
(:func:`op_size`).

The ``op_*`` builders are typed as returning :data:`Op`, so one list can hold any mix.
Nothing here does I/O or imports the etcd client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeAlias, get_args

from hub.etcd.keys import prefix_end

__all__ = [
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "Get",
    "Op",
    "Put",
    "Txn",
    "cmp_create",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "op_delete",
    "op_get",
    "op_put",
    "op_size",
    "op_txn",
    "op_width",
    "txn_size",
]

#: What a compare looks at: a key's create_revision, mod_revision, version or value.
CompareTarget: TypeAlias = Literal["create", "mod", "version", "value"]
#: How it compares the key's (target) with the operand.
CompareOp: TypeAlias = Literal["=", "!=", "<", ">"]
_COMPARE_OPS: frozenset[str] = frozenset(get_args(CompareOp))


class Compare(NamedTuple):
    """``key``'s ``target`` ``op`` ``operand``; an absent key has revisions and version 0,
    and fails every value compare (as etcd does: no value is not an empty value)."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: int | bytes


class Put(NamedTuple):
    """Write ``value`` at ``key``, attached to ``lease`` (0: none)."""

    key: bytes
    value: bytes
    lease: int = 0


class Delete(NamedTuple):
    """Delete ``key``, or every key in ``[key, end)`` when ``end`` is given."""

    key: bytes
    end: bytes = b""


class Get(NamedTuple):
    """Read ``key`` at ``revision`` (0: the txn's), without its value with ``keys_only``."""

    key: bytes
    keys_only: bool = False
    revision: int = 0


class Txn(NamedTuple):
    """A nested txn: its own compares and branches, inside an outer txn."""

    compares: tuple[Compare, ...]
    success: tuple[Op, ...]
    failure: tuple[Op, ...] = ()


Op: TypeAlias = Put | Delete | Get | Txn


# -- builders ----------------------------------------------------------------------------


def _compare(key: bytes, target: CompareTarget, op: str, operand: int | bytes) -> Compare:
    if op not in _COMPARE_OPS:
        raise ValueError(f"compare op must be one of = != < >, not {op!r}")
    return Compare(key, target, op, operand)  # type: ignore[arg-type]  # checked above


def cmp_create(key: bytes, op: str, revision: int) -> Compare:
    """Compare a key's create_revision (0 means absent). ``op`` is one of = != < >."""
    return _compare(key, "create", op, revision)


def cmp_mod(key: bytes, op: str, revision: int) -> Compare:
    """Compare a key's mod_revision."""
    return _compare(key, "mod", op, revision)


def cmp_version(key: bytes, op: str, version: int) -> Compare:
    """Compare a key's version (0 means absent)."""
    return _compare(key, "version", op, version)


def cmp_value(key: bytes, op: str, value: bytes) -> Compare:
    """Compare a key's value."""
    return _compare(key, "value", op, value)


def op_put(key: bytes, value: bytes, lease: int = 0) -> Op:
    """A put inside a txn."""
    return Put(key, value, lease)


def op_delete(key: bytes, *, prefix: bool = False) -> Op:
    """A delete (of a key, or of a prefix) inside a txn."""
    return Delete(key, prefix_end(key) if prefix else b"")


def op_get(key: bytes, *, keys_only: bool = False, revision: int = 0) -> Op:
    """A read of one key inside a txn: at ``revision`` (0: the txn's), without its value
    with ``keys_only`` (a write txn learns whether a key exists, not a reply of unknown
    size)."""
    return Get(key, keys_only, revision)


def op_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A nested txn: independent compare-and-set for one key inside a bigger txn."""
    return Txn(tuple(compares), tuple(success), tuple(failure))


def op_width(op: Op) -> int:
    """How much of etcd's per-txn operation budget a nested txn needs (see MAX_TXN_OPS)."""
    if not isinstance(op, Txn):
        return 0
    return max(len(op.compares), len(op.success), len(op.failure))


# -- sizes -------------------------------------------------------------------------------
# The protobuf encoding's length, computed from the values: what etcd counts against
# --max-request-bytes. tests/unit/test_ops.py checks it against the encoder.


def _varint(n: int) -> int:
    if n < 0:
        return 10  # a negative int64 is always ten bytes
    return (n.bit_length() + 6) // 7 or 1  # seven bits per byte


def _bytes_field(data: bytes) -> int:
    return 1 + _varint(len(data)) + len(data) if data else 0


def _int_field(n: int) -> int:
    return 1 + _varint(n) if n else 0


def _message_field(size: int) -> int:
    return 1 + _varint(size) + size


_TARGET_CODES = {"version": 0, "create": 1, "mod": 2, "value": 3}
_RESULT_CODES = {"=": 0, ">": 1, "<": 2, "!=": 3}


def _compare_size(c: Compare) -> int:
    size = _int_field(_RESULT_CODES[c.op]) + _int_field(_TARGET_CODES[c.target])
    size += _bytes_field(c.key)
    # The operand is a oneof member: encoded even when it is zero or empty.
    if isinstance(c.operand, bytes):
        return size + 1 + _varint(len(c.operand)) + len(c.operand)
    return size + 1 + _varint(c.operand)


def _request_size(op: Op) -> int:
    if isinstance(op, Put):
        return _bytes_field(op.key) + _bytes_field(op.value) + _int_field(op.lease)
    if isinstance(op, Delete):
        return _bytes_field(op.key) + _bytes_field(op.end)
    if isinstance(op, Get):
        return _bytes_field(op.key) + _int_field(op.revision) + (2 if op.keys_only else 0)
    return txn_size(op.compares, op.success, op.failure)


def op_size(op: Op) -> int:
    """Encoded size of ``op`` (etcd's ``RequestOp`` message), in bytes."""
    return _message_field(_request_size(op))


def txn_size(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> int:
    """Encoded size of a txn request with these compares and branches, in bytes."""
    return (
        sum(_message_field(_compare_size(c)) for c in compares)
        + sum(_message_field(op_size(op)) for op in success)
        + sum(_message_field(op_size(op)) for op in failure)
    )
