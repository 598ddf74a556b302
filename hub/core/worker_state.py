"""Worker state in etcd: checkpoints, handed-over state, and which one a child starts from.

Keys: ``checkpoints/{id}`` (written by :meth:`WorkerStates.checkpoint` while the worker
runs) and ``handover/{id}`` (written by a hot-swap release, on a short shared lease from
:meth:`WorkerStates.handover_lease`). Both hold a :class:`~hub.etcd.codec.StateRecord`
naming the fencing token of its writer.

Guarantees:

* Every write is fenced: a checkpoint is a txn comparing the owner key's create revision
  with the writer's token (:class:`~hub.errors.StaleFence` otherwise), and a handover is
  put by the release txn that deletes the owner key.
* A state larger than :data:`MAX_STATE_BYTES` encoded is refused when it is written
  (:class:`~hub.errors.InvalidSpec`), never discovered when it is read.
* A child starts from the fresher of its checkpoint and its handed-over state (by the
  writer's token; the handover wins a tie); an undecodable one is logged and skipped.
  A handover state that was used is remembered (:meth:`WorkerStates.take_consumed`) so
  the ``running`` owner write deletes it.

It does not decide what to do when a state cannot be read: :meth:`WorkerStates.read`
reports it, and the executor gives the child back or parks it.

Ownership: no tasks; its coroutines run in the caller's (the reconciler's round, or a
worker's checkpoint call).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.errors import CorruptRecord, InvalidSpec, RevisionCompacted, StaleFence, StoreError
from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import decode_state, encode_state
from hub.etcd.keys import KeySpace
from hub.etcd.session import Session
from hub.etcd.store import KeyValue, ResponseTooLarge, cmp_create, op_put, op_txn
from hub.logs import fields, get_logger
from strategies.migration import MigrationStrategy

log = get_logger("hub.core.worker_state")

#: Largest encoded worker state (checkpoint or handover) a node writes: it must fit one etcd
#: request (1.5 MiB by default) beside its key and owner compare, like a spec
#: (``max_spec_bytes``). Larger states are refused when written, never discovered when read.
MAX_STATE_BYTES = 1024 * 1024

#: (child id, fencing token, the state keys the cache or the acquire found for it)
Owned = tuple[str, int, tuple[bytes, ...]]
#: (the state a child starts from, its source: "checkpoint", "handover" or None)
Incoming = tuple[Any, str | None]


@dataclass(slots=True)
class StateReads:
    """What :meth:`WorkerStates.read` found."""

    #: child id -> the state it starts from
    states: dict[str, Incoming] = field(default_factory=dict)
    #: child id -> why its state cannot be read: larger than this node accepts from etcd
    too_large: dict[str, ResponseTooLarge] = field(default_factory=dict)
    #: the read failed as a whole (``states`` is then empty)
    error: StoreError | None = None


class WorkerStates:
    """Reads and writes worker state for one node; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: str,
        keys: KeySpace,
        session: Session,
        batcher: TxnBatcher,
        migration: MigrationStrategy,
    ) -> None:
        self.node_id = node_id
        self.keys = keys
        self.session = session
        self.batcher = batcher
        self.migration = migration
        #: children started with handed-over state: its key is deleted with the running write
        self._consumed: set[str] = set()
        self._handover_lease: tuple[int, float] = (0, 0.0)  # (lease id, monotonic expiry)

    def state_keys(self, child_id: str) -> tuple[bytes, ...]:
        """Where a child's saved state may be, in order of precedence on equal tokens."""
        if self.migration.handover:  # only hot swap ever writes handover keys
            return (self.keys.checkpoint(child_id), self.keys.handover(child_id))
        return (self.keys.checkpoint(child_id),)

    def encode(self, state: Any, token: int, saved_at: float) -> bytes:
        """Encode worker state, refusing it here if etcd could not store it in one request.

        Raises:
            InvalidSpec: not bytes or JSON, or larger than MAX_STATE_BYTES encoded.
        """
        value = encode_state(state, token, saved_at)
        if len(value) > MAX_STATE_BYTES:
            raise InvalidSpec(
                f"worker state of {len(value)} bytes (encoded) is larger than the "
                f"{MAX_STATE_BYTES} bytes a checkpoint or handover may take"
            )
        return value

    async def checkpoint(self, child_id: str, token: int, state: Any) -> None:
        """Persist a worker's state under ``checkpoints/{id}``, fenced by its token.

        Raises:
            StaleFence: the child has another owner now (or none).
            InvalidSpec: the state is neither bytes nor JSON-serializable, or larger than
                MAX_STATE_BYTES once encoded.
            StoreError: etcd did not answer (outcome unknown after a timeout).
        """
        owner_key = self.keys.owner(child_id)
        value = self.encode(state, token, time.time())
        op = op_txn(
            [cmp_create(owner_key, "=", token)], [op_put(self.keys.checkpoint(child_id), value)]
        )
        result = await self.batcher.submit(op, self.keys.checkpoint(child_id))
        if not result.succeeded:
            raise StaleFence(child_id, token)

    async def handover_lease(self) -> int:
        """A short lease for handed-over state, shared by releases while it is fresh; 0 if
        none could be granted (the child then moves without its state)."""
        ttl = self.migration.handover_ttl
        lease_id, expires = self._handover_lease
        now = time.monotonic()
        if lease_id and expires - now > ttl / 2:
            return lease_id
        try:
            lease_id, granted = await self.session.store.lease_grant(ttl)
        except StoreError as exc:
            log.warning(
                "no lease for handed-over state (%s); moving without state",
                exc,
                extra=fields(node_id=self.node_id),
            )
            return 0
        self._handover_lease = (lease_id, now + granted)
        return lease_id

    async def read(self, owned: Sequence[Owned]) -> StateReads:
        """The state each child starts from, as :meth:`incoming` picks it.

        The keys are read at the token's revision: nobody else can write them after it
        (their writes are fenced by the owner key, now ours), so this is what the acquire
        txn itself would have read. Never raises for etcd errors: they are reported.
        """
        reads = [(key, token) for _, token, keys in owned for key in keys]
        found: dict[bytes, KeyValue] = {}
        too_large: dict[bytes, ResponseTooLarge] = {}
        store = self.session.store
        try:
            try:
                if reads:
                    found, too_large = await store.get_many(reads)
            except RevisionCompacted:
                # Only their owner, this node, may have written them since: the same values
                # (but for handed-over state whose short lease ran out meanwhile).
                found, too_large = await store.get_many([(key, 0) for key, _ in reads])
        except StoreError as exc:
            return StateReads(error=exc)
        out = StateReads()
        for child_id, _, keys in owned:
            unreadable = [key for key in keys if key in too_large]
            if unreadable:
                out.too_large[child_id] = too_large[unreadable[0]]
            else:
                out.states[child_id] = self.incoming(child_id, found)
        return out

    def incoming(self, child_id: str, found: Mapping[bytes, KeyValue]) -> Incoming:
        """The fresher of handed-over and checkpointed state (by the writer's token)."""
        best: tuple[int, int, Any, str] | None = None
        sources = zip(("checkpoint", "handover"), self.state_keys(child_id), strict=False)
        for rank, (source, key) in enumerate(sources):
            kv = found.get(key)
            if kv is None:
                continue
            try:
                record = decode_state(kv.key, kv.value)
            except CorruptRecord as exc:
                log.warning(
                    "ignoring %s state of %r: %s",
                    source,
                    child_id,
                    exc,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                continue
            candidate = (record.token, rank, record.value, source)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:
            return None, None
        if best[3] == "handover":
            self._consumed.add(child_id)
        return best[2], best[3]

    def take_consumed(self, child_id: str) -> bool:
        """Whether ``child_id`` started from handed-over state not yet deleted; the caller
        deletes ``handover/{id}`` (with the ``running`` owner write)."""
        if child_id in self._consumed:
            self._consumed.discard(child_id)
            return True
        return False
