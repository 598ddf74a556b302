"""``--app support.future_version``: this node process plays a *future* processhub release.

Used by tests/integration/test_mixed_versions.py to run old (current) and future nodes side
by side, as a rolling update does (docs/deployment.md section 5). Importing this module,
which ``processhub node`` does for each ``--app`` before it builds the Hub, patches:

* ``hub.core.membership.__version__`` (and ``hub.__version__``) to :data:`FUTURE_VERSION`:
  membership imported the name when ``hub`` initialised, so only its own module attribute
  changes what the ``nodes/{node_id}`` record says.
* every ``encode_*`` function of :mod:`hub.etcd.codec` *where it is called from*:
  ``hub.core.membership.encode_node`` (``nodes/``), ``hub.core.owner_records.encode_owner``
  (``owners/``), ``hub.core.worker_state.encode_state`` (``handover/`` and ``checkpoints/``),
  ``hub.core.replicas.encode_replica`` (``replicas/``), ``hub.api.children.encode_spec`` and
  ``hub.api.moves.encode_spec`` (``specs/`` the node writes: an app's ``start_child``,
  ``pin``) and ``hub.api.moves.encode_leave``;
  plus the same names in :mod:`hub.etcd.codec` itself, for a caller that imports them later.
  The callers bound the functions with ``from hub.etcd.codec import ...`` before any app is
  imported, so patching :mod:`hub.etcd.codec` alone would change nothing.

A patched encoder writes what the current one writes, with ``schema`` set to
:data:`FUTURE_SCHEMA` and :data:`UNKNOWN_FIELD` appended: field 101, a string the current
``processhub.proto`` does not define, as a later release might add. Records written by the
current code carry schema 1 and end without it, which is how the test tells the writers
apart in the raw values it reads back from etcd.

Nothing else changes: RPC messages, placement and the key layout stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hub
import hub.api.children
import hub.api.moves
import hub.core.membership
import hub.core.owner_records
import hub.core.replicas
import hub.core.worker_state
import hub.etcd.codec
from hub._proto import processhub_pb2 as pb

FUTURE_VERSION = "0.2.0-future"
FUTURE_SCHEMA = 2
UNKNOWN_FIELD_NUMBER = 101
_UNKNOWN_PAYLOAD = b"written by " + FUTURE_VERSION.encode()
#: Field 101, wire type 2 (length-delimited): tag varint (101 << 3 | 2 = 810), length, bytes.
UNKNOWN_FIELD = b"\xaa\x06" + bytes([len(_UNKNOWN_PAYLOAD)]) + _UNKNOWN_PAYLOAD

#: encoder name -> the record message it serializes
_RECORDS: dict[str, Any] = {
    "encode_node": pb.NodeInfo,
    "encode_spec": pb.ChildSpec,
    "encode_owner": pb.Owner,
    "encode_state": pb.State,
    "encode_leave": pb.LeaveRequest,
    "encode_replica": pb.Replica,
}
#: module -> the encoders it calls (bound by ``from hub.etcd.codec import ...``)
_CALL_SITES: dict[Any, tuple[str, ...]] = {
    hub.core.membership: ("encode_node",),
    hub.core.owner_records: ("encode_owner",),
    hub.core.worker_state: ("encode_state",),
    hub.core.replicas: ("encode_replica",),
    hub.api.children: ("encode_spec",),
    hub.api.moves: ("encode_spec", "encode_leave"),
}


def _future(name: str, current: Callable[..., bytes]) -> Callable[..., bytes]:
    record = _RECORDS[name]

    def encode(*args: Any, **kwargs: Any) -> bytes:
        message = record()
        message.ParseFromString(current(*args, **kwargs))
        message.schema = FUTURE_SCHEMA
        return bytes(message.SerializeToString()) + UNKNOWN_FIELD

    encode.__name__ = encode.__qualname__ = f"future_{name}"
    return encode


def _patch() -> None:
    """Patch; refuse (the node exits before ``ready``) if the code no longer looks as expected.

    A refactoring that moved a call must fail the test, not let it pass with "future" nodes
    silently writing current records.
    """
    for record in _RECORDS.values():
        if UNKNOWN_FIELD_NUMBER in record.DESCRIPTOR.fields_by_number:
            raise RuntimeError(f"field {UNKNOWN_FIELD_NUMBER} is known to {record.__name__}")
    future = {name: _future(name, getattr(hub.etcd.codec, name)) for name in _RECORDS}
    for module, names in _CALL_SITES.items():
        for name in names:
            if getattr(module, name, None) is not getattr(hub.etcd.codec, name):
                raise RuntimeError(f"{module.__name__} no longer calls hub.etcd.codec.{name}")
            setattr(module, name, future[name])
    for name, encode in future.items():
        setattr(hub.etcd.codec, name, encode)
    # Membership.info() reads the name it imported from ``hub`` at every call.
    if vars(hub.core.membership).get("__version__") is not hub.__version__:
        raise RuntimeError("hub.core.membership no longer takes its version from hub.__version__")
    vars(hub.core.membership)["__version__"] = FUTURE_VERSION
    hub.__version__ = FUTURE_VERSION


_patch()
