"""etcd's transaction rules as pure functions, for :class:`hub.testing.FakeKV`.

Ranges (``in_range``), compares (``holds``), the operation budget (``check_budget``),
duplicate-key refusal (``check_writes``) and nested results at the txn's revision
(``at_revision``); each says which etcd behaviour it follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from hub.errors import StoreError
from hub.etcd.kv import KeyValue, TxnResult
from hub.etcd.ops import Compare, Delete, Op, Put, Txn

__all__ = ["at_revision", "check_budget", "check_writes", "holds", "in_range"]


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range rule: no end is one key; end ``\\0`` is every key from ``start``."""
    if not end:
        return key == start
    return start <= key and (end == b"\0" or key < end)


def at_revision(result: TxnResult, revision: int) -> TxnResult:
    """``result`` and its nested results at the revision of the txn's writes."""
    responses = tuple(
        at_revision(r, revision) if isinstance(r, TxnResult) else r for r in result.responses
    )
    return TxnResult(result.succeeded, revision, responses)


def holds(c: Compare, kv: KeyValue | None) -> bool:
    if c.target == "value":
        if kv is None:
            return False  # as etcd: an absent key has no value to compare
        actual: int | bytes = kv.value
    elif kv is None:
        actual = 0
    else:
        actual = {"create": kv.create_revision, "mod": kv.mod_revision, "version": kv.version}[
            c.target
        ]
    operand = c.operand
    if type(actual) is not type(operand):
        raise StoreError(f"fake etcd: compare of {c.target} with {operand!r}")
    if c.op == "=":
        return actual == operand
    if c.op == "!=":
        return actual != operand
    if c.op == "<":
        return actual < operand  # type: ignore[operator]  # same type, checked above
    return actual > operand  # type: ignore[operator]


def check_budget(
    compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op], budget: int
) -> None:
    """etcd's rule: a level's width (its widest part) fits the budget, and each nested txn
    fits what the level leaves."""
    width = max(len(compares), len(success), len(failure))
    if width > budget:
        raise StoreError("fake etcd: etcdserver: too many operations in txn request")
    for op in (*success, *failure):
        if isinstance(op, Txn):
            check_budget(op.compares, op.success, op.failure, budget - width)


def check_writes(ops: Sequence[Op]) -> tuple[set[bytes], list[Delete]]:
    """The keys one branch puts and the ranges it deletes; raises StoreError when a key
    could be written twice (etcd refuses such txns; a nested txn's two branches are
    exclusive, so they may write the same key)."""
    deletes = [op for op in ops if isinstance(op, Delete)]
    puts: set[bytes] = set()

    def claim(key: bytes, allowed: AbstractSet[bytes] = frozenset()) -> None:
        if (key in puts and key not in allowed) or any(
            in_range(key, d.key, d.end) for d in deletes
        ):
            raise StoreError("fake etcd: etcdserver: duplicate key given in txn request")
        puts.add(key)

    for op in ops:
        if isinstance(op, Txn):
            then_puts, then_deletes = check_writes(op.success)
            else_puts, else_deletes = check_writes(op.failure)
            for key in then_puts:
                claim(key)
            for key in else_puts:
                claim(key, allowed=then_puts)
            deletes += then_deletes + else_deletes
    for op in ops:
        if isinstance(op, Put):
            claim(op.key)
    return puts, deletes
