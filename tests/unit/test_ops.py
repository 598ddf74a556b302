"""hub.etcd.ops: the plain txn values, their sizes, and their translation to etcd's protobufs.

``op_size`` must equal the encoded size etcd counts against ``--max-request-bytes`` (the
batcher packs by it), so it is checked against the protobuf encoder on generated ops.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.etcd import store
from hub.etcd.ops import (
    Compare,
    Delete,
    Get,
    Op,
    Put,
    Txn,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    op_size,
    op_txn,
    op_width,
    txn_size,
)

keys = st.binary(min_size=1, max_size=300)
values = st.binary(max_size=3000)
revisions = st.integers(min_value=0, max_value=2**40)
compare_ops = st.sampled_from(["=", "!=", "<", ">"])

compares = st.one_of(
    st.builds(cmp_create, keys, compare_ops, revisions),
    st.builds(cmp_mod, keys, compare_ops, revisions),
    st.builds(cmp_version, keys, compare_ops, revisions),
    st.builds(cmp_value, keys, compare_ops, values),
)
plain_ops = st.one_of(
    st.builds(op_put, keys, values, st.integers(min_value=0, max_value=2**63 - 1)),
    st.builds(op_delete, keys, prefix=st.booleans()),
    st.builds(op_get, keys, keys_only=st.booleans(), revision=revisions),
)
ops: st.SearchStrategy[Op] = st.recursive(
    plain_ops,
    lambda inner: st.builds(
        op_txn,
        st.lists(compares, max_size=3),
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3),
    ),
    max_leaves=8,
)


@given(ops)
def test_op_size_is_the_encoded_size(op: Op) -> None:
    assert op_size(op) == store._pb_op(op).ByteSize()


@given(st.lists(compares, max_size=4), st.lists(ops, max_size=4), st.lists(ops, max_size=4))
def test_txn_size_is_the_encoded_size(
    cs: list[Compare], success: list[Op], failure: list[Op]
) -> None:
    assert txn_size(cs, success, failure) == store._pb_txn(cs, success, failure).ByteSize()


def test_builders_make_plain_values() -> None:
    assert op_put(b"k", b"v", 7) == Put(b"k", b"v", 7)
    assert op_delete(b"/p/", prefix=True) == Delete(b"/p/", b"/p0")
    assert op_delete(b"k") == Delete(b"k")
    assert op_get(b"k", keys_only=True, revision=3) == Get(b"k", True, 3)
    assert cmp_create(b"k", "=", 0) == Compare(b"k", "create", "=", 0)
    nested = op_txn([cmp_value(b"k", "!=", b"x")], [op_put(b"k", b"y")])
    assert nested == Txn((Compare(b"k", "value", "!=", b"x"),), (Put(b"k", b"y"),), ())
    assert hash(nested) == hash(op_txn([cmp_value(b"k", "!=", b"x")], [op_put(b"k", b"y")]))


def test_a_nested_txn_is_as_wide_as_its_widest_part() -> None:
    assert op_width(op_put(b"k", b"v")) == 0
    two_compares = op_txn([cmp_create(b"k", "=", 0), cmp_version(b"k", "=", 0)], [])
    assert op_width(two_compares) == 2
    assert op_width(op_txn([], [op_put(b"a", b""), op_put(b"b", b"")], [op_get(b"a")])) == 2


def test_an_unknown_compare_op_is_refused() -> None:
    with pytest.raises(ValueError, match="compare op"):
        cmp_mod(b"k", "==", 1)


def test_compares_translate_to_the_matching_protobuf_fields() -> None:
    pb = store._pb_compare(cmp_value(b"k", "!=", b"v"))
    assert (pb.key, pb.value, pb.WhichOneof("target_union")) == (b"k", b"v", "value")
    pb = store._pb_compare(cmp_create(b"k", "<", 0))
    assert pb.WhichOneof("target_union") == "create_revision" and pb.create_revision == 0
