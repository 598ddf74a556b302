"""Encoding of records stored in etcd (protobuf, see ``_proto/processhub.proto``).

Decoding never trusts its input: anything that is not a record we understand raises
:class:`~hub.errors.CorruptRecord`, which callers log and skip. Nothing is unpickled or
evaluated. Records carry ``schema``; a newer schema still decodes (unknown fields are
ignored by protobuf), a record with schema 0 is treated as foreign.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from hub._proto import processhub_pb2 as pb
from hub.errors import CorruptRecord, InvalidSpec
from hub.model import (
    ChildSpec,
    NodeInfo,
    NodeState,
    OwnerRecord,
    OwnerState,
    canonical_json,
)

SCHEMA = 1


def encode_spec(spec: ChildSpec, created_at: float) -> bytes:
    """Serialize a spec for ``specs/{id}``."""
    return bytes(
        pb.ChildSpec(
            schema=SCHEMA,
            child_id=spec.id,
            start=spec.start,
            args_json=spec.args_json,
            restart=spec.restart.value,
            metadata_json=spec.metadata_json,
            max_restarts=spec.max_restarts,
            max_seconds=spec.max_seconds,
            created_at=created_at,
            nodes=spec.nodes,
        ).SerializeToString()
    )


def _parse(message: Any, key: bytes, value: bytes) -> Any:
    try:
        message.ParseFromString(value)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise CorruptRecord(key, f"not a {type(message).__name__}: {exc}") from None
    if message.schema < 1:
        raise CorruptRecord(key, f"not a {type(message).__name__} (no schema)")
    return message


def decode_spec(key: bytes, value: bytes) -> ChildSpec:
    """Parse ``specs/{id}``; raises CorruptRecord."""
    msg = _parse(pb.ChildSpec(), key, value)
    try:
        return ChildSpec.from_json(
            id=msg.child_id,
            start=msg.start,
            args_json=msg.args_json,
            restart=msg.restart,
            metadata_json=msg.metadata_json,
            max_restarts=msg.max_restarts,
            max_seconds=msg.max_seconds,
            nodes=tuple(msg.nodes),
        )
    except (InvalidSpec, ValueError, TypeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit.
        raise CorruptRecord(key, f"invalid spec: {exc}") from None


def encode_node(info: NodeInfo) -> bytes:
    """Serialize a membership record for ``nodes/{node_id}``."""
    msg = pb.NodeInfo(
        schema=SCHEMA,
        node_id=info.node_id,
        incarnation=info.incarnation,
        address=info.address,
        weight=info.weight,
        state=info.state.value,
        version=info.version,
        started_at=info.started_at,
        capacity=info.capacity,
        load=info.load,
    )
    msg.labels.update(info.labels)
    return bytes(msg.SerializeToString())


def decode_node(key: bytes, value: bytes) -> NodeInfo:
    """Parse ``nodes/{node_id}``; raises CorruptRecord."""
    msg = _parse(pb.NodeInfo(), key, value)
    try:
        state = NodeState(msg.state or "active")
    except ValueError:
        raise CorruptRecord(key, f"unknown node state {msg.state!r}") from None
    if not msg.node_id:
        raise CorruptRecord(key, "node record without node_id")
    return NodeInfo(
        node_id=msg.node_id,
        incarnation=msg.incarnation,
        address=msg.address,
        labels=dict(msg.labels),
        weight=max(1, msg.weight),
        state=state,
        version=msg.version,
        started_at=msg.started_at,
        capacity=msg.capacity,
        load=msg.load,
    )


def encode_owner(owner: OwnerRecord) -> bytes:
    """Serialize ``owners/{child_id}``."""
    return bytes(
        pb.Owner(
            schema=SCHEMA,
            node_id=owner.node_id,
            incarnation=owner.incarnation,
            state=owner.state.value,
            started_at=owner.started_at,
            restarts=owner.restarts,
            last_exit=owner.last_exit,
        ).SerializeToString()
    )


def decode_owner(key: bytes, value: bytes) -> OwnerRecord:
    """Parse ``owners/{child_id}``; raises CorruptRecord."""
    msg = _parse(pb.Owner(), key, value)
    try:
        state = OwnerState(msg.state)
    except ValueError:
        raise CorruptRecord(key, f"unknown owner state {msg.state!r}") from None
    if not msg.node_id:
        raise CorruptRecord(key, "owner record without node_id")
    return OwnerRecord(
        node_id=msg.node_id,
        incarnation=msg.incarnation,
        state=state,
        started_at=msg.started_at,
        restarts=msg.restarts,
        last_exit=msg.last_exit,
    )


@dataclass(frozen=True, slots=True)
class StateRecord:
    """Worker state from ``handover/`` or ``checkpoints/``; ``token`` names its writer."""

    value: Any
    token: int
    saved_at: float


def encode_state(value: Any, token: int, saved_at: float) -> bytes:
    """Serialize worker state: bytes pass through, anything else must be JSON.

    Raises:
        InvalidSpec: the state is neither bytes nor JSON-serializable.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        encoding, data = "bytes", bytes(value)
    else:
        encoding, data = "json", canonical_json(value, "worker state").encode()
    return bytes(
        pb.State(
            schema=SCHEMA, encoding=encoding, data=data, token=token, saved_at=saved_at
        ).SerializeToString()
    )


def decode_state(key: bytes, value: bytes) -> StateRecord:
    """Parse a state record; raises CorruptRecord."""
    msg = _parse(pb.State(), key, value)
    if msg.encoding == "bytes":
        return StateRecord(bytes(msg.data), msg.token, msg.saved_at)
    if msg.encoding == "json":
        try:
            return StateRecord(json.loads(msg.data), msg.token, msg.saved_at)
        except (ValueError, RecursionError) as exc:
            raise CorruptRecord(key, f"state is not JSON: {exc}") from None
    raise CorruptRecord(key, f"unknown state encoding {msg.encoding!r}")


def encode_leave(incarnation: int, requested_at: float) -> bytes:
    """Serialize ``leave/{node_id}``."""
    return bytes(
        pb.LeaveRequest(
            schema=SCHEMA, incarnation=incarnation, requested_at=requested_at
        ).SerializeToString()
    )


def decode_leave(key: bytes, value: bytes) -> int:
    """Parse ``leave/{node_id}``; returns the incarnation asked to leave."""
    return int(_parse(pb.LeaveRequest(), key, value).incarnation)


#: Role of a replica whose worker ran out of restart intensity: parked on its node, no
#: instance runs there. ``Replica`` has no state field, and a parked replica plays no role,
#: so this is the third value of ``role``. Decoders before it refuse the record (they log it
#: as undecodable and treat the replica as absent, which is what it is).
REPLICA_FAILED = "failed"
REPLICA_ROLES = ("passive", "active", REPLICA_FAILED)


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """``replicas/{child_id}/{node_id}``: a non-primary replica and its role
    (``passive``, ``active``, or :data:`REPLICA_FAILED` once parked)."""

    node_id: str
    incarnation: int
    role: str
    started_at: float


def encode_replica(record: ReplicaRecord) -> bytes:
    """Serialize ``replicas/{child_id}/{node_id}``."""
    return bytes(
        pb.Replica(
            schema=SCHEMA,
            node_id=record.node_id,
            incarnation=record.incarnation,
            role=record.role,
            started_at=record.started_at,
        ).SerializeToString()
    )


def decode_replica(key: bytes, value: bytes) -> ReplicaRecord:
    """Parse a replica record; raises CorruptRecord."""
    msg = _parse(pb.Replica(), key, value)
    if msg.role not in REPLICA_ROLES or not msg.node_id:
        raise CorruptRecord(key, f"bad replica record (role {msg.role!r})")
    return ReplicaRecord(msg.node_id, msg.incarnation, msg.role, msg.started_at)
