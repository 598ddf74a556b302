"""The etcd key layout. Nothing else in processhub builds or parses key strings.

All keys of one hub live under ``{prefix}/{hub_id}/``; hubs with different ids never see
each other's keys even when they share an etcd.

===============================  ==============  ===============  ==========================
key (under the hub root)         value           lease            meaning
===============================  ==============  ===============  ==========================
``nodes/{node_id}``              NodeInfo        the node's       member is alive
``specs/{child_id}``             ChildSpec       none             durable desired state
``owners/{child_id}``            Owner           the owner's      active instance; its
                                                                  create_revision is the
                                                                  fencing token
``replicas/{child_id}/{node}``   Replica         the host's       extra replicas
``handover/{child_id}``          State           handover lease   state in flight during a
                                                                  hot-swap migration
``checkpoints/{child_id}``       State           none             the last checkpoint the
                                                                  owner wrote (fenced)
``leave/{node_id}``              LeaveRequest    none             an operator asks that
                                                                  node incarnation to drain
                                                                  and leave
``gates/{node_id}``              JSON with       none             the quorum gate's memory
                                 ``schema``                       of one node (quorum
                                                                  strategies only; deleted
                                                                  when the node leaves)
===============================  ==============  ===============  ==========================

Ids are percent-encoded (``urllib.parse.quote`` with no safe characters), so ``/`` inside an
id cannot escape its prefix and two different ids never map to one key.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from hub.errors import ConfigError
from hub.model import ChildId, NodeId, validate_name

DEFAULT_PREFIX = "/processhub"


class Kind(enum.Enum):
    """Which family a key under the hub root belongs to."""

    NODE = "nodes"
    SPEC = "specs"
    OWNER = "owners"
    REPLICA = "replicas"
    HANDOVER = "handover"
    CHECKPOINT = "checkpoints"
    LEAVE = "leave"
    QUORUM = "gates"  # sorts before leave/: outside the watched range


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key split into its family and decoded id(s)."""

    kind: Kind
    id: str
    node_id: str | None = None  # only for replicas/{child}/{node}


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~\-]*")


def _enc(value: str) -> str:
    if _UNRESERVED.fullmatch(value):
        return value  # what quote() would return, without its per-character work
    return quote(value, safe="")


#: What ``_enc`` can produce: unreserved characters and upper-case ``%XX`` escapes.
_ENCODED_RE = re.compile(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+")


def _dec(raw: str) -> str | None:
    """Inverse of ``_enc``: the id, or None if ``raw`` is not exactly ``_enc(id)`` for any id.

    Non-canonical spellings (``%61`` for ``a``, raw unicode, invalid escapes) are foreign:
    accepting them would let two keys name one id.
    """
    if not _ENCODED_RE.fullmatch(raw):
        return None
    if "%" not in raw:
        return raw
    try:
        ident = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    return ident if _enc(ident) == raw else None


@dataclass(frozen=True)
class KeySpace:
    """Builds and parses the keys of one hub.

    Args:
        hub_id: the hub's name (letters, digits, ``_.-``).
        prefix: common root for every hub, default ``/processhub``.
    """

    hub_id: str
    prefix: str = DEFAULT_PREFIX
    _fast: tuple[tuple[Kind, bytes], ...] = field(init=False, repr=False, compare=False, default=())
    _families: dict[Kind, bytes] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        try:
            validate_name("hub_id", self.hub_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not self.prefix or self.prefix.endswith("/"):
            raise ConfigError("prefix must be non-empty and must not end with '/'")
        root = f"{self.prefix}/{self.hub_id}/".encode()
        families = {kind: root + kind.value.encode() + b"/" for kind in Kind}
        object.__setattr__(self, "_families", families)
        # Prefixes tried first by split(), the watch's hot path: owners and specs dominate.
        fast = tuple((k, families[k]) for k in (Kind.OWNER, Kind.SPEC, Kind.NODE))
        object.__setattr__(self, "_fast", fast)

    @property
    def root(self) -> bytes:
        """Prefix of every key of this hub, ending in ``/``."""
        return f"{self.prefix}/{self.hub_id}/".encode()

    def family(self, kind: Kind) -> bytes:
        """Prefix of every key of one family, ending in ``/``."""
        return self._families[kind]

    def node(self, node_id: NodeId | str) -> bytes:
        """``nodes/{node_id}``."""
        return self.family(Kind.NODE) + _enc(node_id).encode()

    def spec(self, child_id: ChildId | str) -> bytes:
        """``specs/{child_id}``."""
        return self.family(Kind.SPEC) + _enc(child_id).encode()

    def owner(self, child_id: ChildId | str) -> bytes:
        """``owners/{child_id}``."""
        return self.family(Kind.OWNER) + _enc(child_id).encode()

    def replica(self, child_id: ChildId | str, node_id: NodeId | str) -> bytes:
        """``replicas/{child_id}/{node_id}``."""
        return self.family(Kind.REPLICA) + f"{_enc(child_id)}/{_enc(node_id)}".encode()

    def handover(self, child_id: ChildId | str) -> bytes:
        """``handover/{child_id}``."""
        return self.family(Kind.HANDOVER) + _enc(child_id).encode()

    def checkpoint(self, child_id: ChildId | str) -> bytes:
        """``checkpoints/{child_id}``."""
        return self.family(Kind.CHECKPOINT) + _enc(child_id).encode()

    def leave(self, node_id: NodeId | str) -> bytes:
        """``leave/{node_id}``: an operator's request that a node drains and leaves."""
        return self.family(Kind.LEAVE) + _enc(node_id).encode()

    def quorum(self, node_id: NodeId | str) -> bytes:
        """``gates/{node_id}``: the quorum gate's memory of one node (read only by that node,
        so it sorts outside the watched range)."""
        return self.family(Kind.QUORUM) + _enc(node_id).encode()

    def watched_range(self) -> tuple[bytes, bytes]:
        """The key range every node watches: ``nodes/`` .. ``specs/`` (inclusive).

        Worker state (``checkpoints/``, ``handover/``) sorts before ``nodes/`` and stays
        outside it, so kilobytes of state per child never reach every node's watch; the
        new owner reads it in its acquire transaction instead. ``leave/`` sorts after them
        and starts the range.
        """
        return self.family(Kind.LEAVE), prefix_end(self.family(Kind.SPEC))

    def split(self, key: bytes) -> tuple[Kind, str] | None:
        """Fast path of :meth:`parse` for nodes, specs and owners: ``(kind, id)`` or None.

        Called for every watch event, so it avoids allocating a ParsedKey.
        """
        for kind, prefix in self._fast:
            if key.startswith(prefix):
                try:
                    raw = key[len(prefix) :].decode("ascii")
                except UnicodeDecodeError:
                    return None
                ident = _dec(raw)
                return (kind, ident) if ident is not None else None
        parsed = self.parse(key)
        return (parsed.kind, parsed.id) if parsed is not None else None

    def parse(self, key: bytes) -> ParsedKey | None:
        """Split a key of this hub; ``None`` for anything foreign or malformed."""
        root = self.root
        if not key.startswith(root):
            return None
        try:
            rest = key[len(root) :].decode("utf-8")
        except UnicodeDecodeError:
            return None
        family, sep, tail = rest.partition("/")
        if not sep or not tail:
            return None
        try:
            kind = Kind(family)
        except ValueError:
            return None
        if kind is Kind.REPLICA:
            child, sep, node = tail.partition("/")
            child_id, node_id = _dec(child), _dec(node)
            if not sep or child_id is None or node_id is None:
                return None
            return ParsedKey(kind, child_id, node_id)
        ident = _dec(tail)
        return ParsedKey(kind, ident) if ident is not None else None


def prefix_end(prefix: bytes) -> bytes:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"
