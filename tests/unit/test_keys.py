"""hub.etcd.keys: the etcd key layout. Build/parse round-trips, isolation of families, foreign
keys."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hub.errors import ConfigError
from hub.etcd.keys import DEFAULT_PREFIX, KeySpace, Kind, ParsedKey, prefix_end

HUB = "h1"
PREFIX = "/ph-test"
KS = KeySpace(HUB, PREFIX)

# Any id a user may pick: every unicode character but lone surrogates (not encodable).
child_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)
# Strings that stress the escaping: separators, escapes and lookalikes.
tricky_ids = st.lists(
    st.sampled_from(["/", "%", "%2F", "%25", "2F", ".", "..", "a", "é", "~", " "]),
    min_size=1,
    max_size=8,
).map("".join)
any_id = child_ids | tricky_ids
node_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)

SINGLE = {
    Kind.SPEC: KS.spec,
    Kind.OWNER: KS.owner,
    Kind.NODE: KS.node,
    Kind.HANDOVER: KS.handover,
}


def _tail(key: bytes, kind: Kind) -> bytes:
    family = KS.family(kind)
    assert key.startswith(family), (key, family)
    return key[len(family) :]


# -- layout ------------------------------------------------------------------------------


def test_root_and_families() -> None:
    assert KS.root == b"/ph-test/h1/"
    assert KS.family(Kind.SPEC) == b"/ph-test/h1/specs/"
    assert KS.spec("a") == b"/ph-test/h1/specs/a"
    assert KS.owner("a") == b"/ph-test/h1/owners/a"
    assert KS.node("n1") == b"/ph-test/h1/nodes/n1"
    assert KS.replica("a", "n1") == b"/ph-test/h1/replicas/a/n1"
    assert KS.handover("a") == b"/ph-test/h1/handover/a"


def test_default_prefix() -> None:
    assert KeySpace("h").root == f"{DEFAULT_PREFIX}/h/".encode()


@pytest.mark.parametrize(
    ("hub_id", "prefix"),
    [("", "/p"), ("a/b", "/p"), ("-x", "/p"), ("h", ""), ("h", "/p/"), ("h" * 129, "/p")],
)
def test_invalid_keyspace(hub_id: str, prefix: str) -> None:
    with pytest.raises(ConfigError):
        KeySpace(hub_id, prefix)


def test_escaping_examples() -> None:
    assert KS.spec("a/b") == b"/ph-test/h1/specs/a%2Fb"
    assert KS.spec("%2F") == b"/ph-test/h1/specs/%252F"
    assert KS.spec("é") == b"/ph-test/h1/specs/%C3%A9"
    assert KS.spec("..") == b"/ph-test/h1/specs/.."
    # ".." stays inside its family: etcd keys are not paths.
    assert KS.parse(KS.spec("..")) == ParsedKey(Kind.SPEC, "..")


# -- properties --------------------------------------------------------------------------


@given(any_id)
@example("a/b")
@example("/")
@example("%")
@example("%2F")
@example("\x00")
@example("\U0010ffff")
def test_single_id_keys_round_trip_and_stay_in_family(child_id: str) -> None:
    for kind, build in SINGLE.items():
        key = build(child_id)
        tail = _tail(key, kind)
        assert tail, "an id must never encode to nothing"
        assert b"/" not in tail, "an id must not add a key level"
        assert tail.isascii()
        assert KS.parse(key) == ParsedKey(kind, child_id)
        assert KS.split(key) == (kind, child_id)


@given(any_id, node_ids)
def test_replica_keys_round_trip(child_id: str, node_id: str) -> None:
    key = KS.replica(child_id, node_id)
    tail = _tail(key, Kind.REPLICA)
    assert tail.count(b"/") == 1
    assert KS.parse(key) == ParsedKey(Kind.REPLICA, child_id, node_id)
    assert KS.split(key) == (Kind.REPLICA, child_id)


@given(any_id, any_id)
def test_distinct_ids_give_distinct_keys(a: str, b: str) -> None:
    for build in SINGLE.values():
        assert (build(a) == build(b)) == (a == b)


@given(any_id, any_id, node_ids)
def test_replica_prefix_of_a_child_holds_only_its_replicas(a: str, b: str, node: str) -> None:
    # "replicas/{b}/" selects b's replicas; it must never select one of a's.
    replicas_of_b = KS.replica(b, "n")[: -len(b"n")]
    assert KS.replica(a, node).startswith(replicas_of_b) == (a == b)


@given(any_id, any_id)
def test_hubs_do_not_see_each_others_keys(a: str, b: str) -> None:
    other = KeySpace("h10", PREFIX)  # "h1" is a string prefix of "h10"
    assert KS.parse(other.spec(a)) is None
    assert KS.split(other.owner(b)) is None
    assert other.parse(KS.spec(a)) is None
    assert KeySpace(HUB, "/ph-test2").parse(KS.node("n1")) is None


@given(st.binary(max_size=40))
@example(b"replicas/%FF/n1")
@example(b"specs/%61")
@example(b"owners/%E2%82")
def test_parse_of_arbitrary_bytes_never_raises(suffix: bytes) -> None:
    key = KS.root + suffix
    parsed = KS.parse(key)
    split = KS.split(key)
    if parsed is None:
        assert split is None
    else:
        # Whatever parses must be exactly the key the builder makes for it: no second
        # spelling of an id (so two keys never name one child).
        if parsed.kind is Kind.REPLICA:
            assert parsed.node_id is not None
            assert KS.replica(parsed.id, parsed.node_id) == key
        else:
            assert SINGLE[parsed.kind](parsed.id) == key
        assert split == (parsed.kind, parsed.id)


FOREIGN = [
    b"",
    b"/ph-test",
    b"/ph-test/h1",
    b"/ph-test/h1/",
    b"/ph-test/h1/specs",
    b"/ph-test/h1/specs/",
    b"/ph-test/h1/specs/a/b",
    b"/ph-test/h1/unknown/a",
    b"/ph-test/h1/owners/\xff",
    b"/ph-test/h1/owners/%FF",  # escape of an invalid UTF-8 byte
    b"/ph-test/h1/owners/%ZZ",  # not an escape at all
    b"/ph-test/h1/owners/%61",  # non-canonical spelling of "a"
    b"/ph-test/h1/owners/%2f",  # lower-case escape: not what the builder writes
    b"/ph-test/h1/owners/a b",  # raw characters the builder would escape
    "/ph-test/h1/owners/é".encode(),
    b"/ph-test/h1/nodes/",
    b"/ph-test/h1/replicas/a",
    b"/ph-test/h1/replicas/a/",
    b"/ph-test/h1/replicas//n1",
    b"/ph-test/h1/replicas/a/n1/x",
    b"/ph-test/h1/replicas/%FF/n1",
    b"/ph-test/h1/replicas/a/%FF",
    b"/ph-test/h1/handover/%FF",
    b"/ph-test/h10/specs/a",
    b"/ph-test/h/specs/a",
    b"/other/h1/specs/a",
    b"ph-test/h1/specs/a",
]


@pytest.mark.parametrize("key", FOREIGN)
def test_foreign_or_malformed_keys_parse_to_none(key: bytes) -> None:
    assert KS.parse(key) is None
    assert KS.split(key) is None


# -- prefix_end --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"abc", b"abd"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"/p/h/", b"/p/h0"),
        (b"\xff", b"\0"),
        (b"\xff\xff", b"\0"),
    ],
)
def test_prefix_end_examples(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=8))
def test_prefix_end_bounds_every_key_with_the_prefix(prefix: bytes, suffix: bytes) -> None:
    end = prefix_end(prefix)
    if end == b"\0":  # etcd's "to the end of the keyspace"
        assert set(prefix) == {0xFF}
        return
    assert prefix <= prefix + suffix < end


@given(st.binary(min_size=1, max_size=8), st.binary(min_size=1, max_size=8))
def test_prefix_end_excludes_keys_without_the_prefix(prefix: bytes, key: bytes) -> None:
    end = prefix_end(prefix)
    if end != b"\0" and prefix <= key < end:
        assert key.startswith(prefix)


def test_the_watched_range_holds_what_every_node_needs_and_nothing_else() -> None:
    keys = KS
    start, end = keys.watched_range()

    def watched(key: bytes) -> bool:
        return start <= key < end

    assert all(watched(k) for k in (keys.node("n"), keys.spec("c"), keys.owner("c")))
    assert watched(keys.leave("n")) and watched(keys.replica("c", "n"))
    # Worker state and each node's own quorum memory are read by one node only.
    assert not any(watched(k) for k in (keys.checkpoint("c"), keys.handover("c"), keys.quorum("n")))
