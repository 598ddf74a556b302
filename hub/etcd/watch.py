"""One etcd watch stream, as an async iterator of :class:`~hub.etcd.kv.WatchBatch`.

:meth:`hub.etcd.store.Store.watch` builds the requests and hands them to a
:class:`WatchStream`, which runs the stream: it sends the create request on entry, turns
responses into batches of :class:`~hub.etcd.kv.Event`, and ends the only ways a watch
ends:

* :class:`~hub.errors.RevisionCompacted` when etcd cancels the watch because the start
  revision was compacted (relist);
* :class:`~hub.errors.StoreAuthError` when etcd refuses our token (it checks it only when
  a watch is created, so an expired one surfaces here; ``reauth`` fetches a fresh token
  for the next watch);
* :class:`~hub.errors.StoreUnavailable` when the stream breaks or etcd cancels it.

Ownership: whoever enters the ``async with`` owns the stream; leaving it cancels the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc.aio

from hub.errors import RevisionCompacted, StoreAuthError, StoreUnavailable
from hub.etcd.error_map import is_auth_failure, map_errors
from hub.etcd.kv import Event, WatchBatch

__all__ = ["WatchStream"]

#: ``mvccpb.Event.EventType.PUT`` in etcd's wire schema (the other type is DELETE).
_PUT: Final = 0


class WatchStream:
    """One etcd watch; see the module docstring.

    Args:
        open_call: starts the bidirectional Watch call (``metadata=`` keyword).
        metadata: call metadata (the auth token), or None.
        create: the ``WatchRequest`` that creates the watch.
        progress: the ``WatchRequest`` that asks for a progress notification.
        reauth: fetches a fresh auth token after etcd refused ours.
    """

    def __init__(
        self,
        open_call: Callable[..., Any],
        metadata: Any,
        create: Any,
        progress: Any,
        reauth: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._open_call = open_call
        self._metadata = metadata
        self._create = create
        self._progress = progress
        self._reauth = reauth
        self._call: Any = None

    async def __aenter__(self) -> WatchStream:
        self._call = self._open_call(metadata=self._metadata)
        with map_errors():
            await self._call.write(self._create)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def request_progress(self) -> None:
        """Ask etcd to send a progress notification (an empty batch with the revision)."""
        if self._call is not None:
            with map_errors():
                await self._call.write(self._progress)

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[WatchBatch]:
        put = _PUT  # a local: read once per event
        while True:
            with map_errors():
                resp = await self._call.read()
            if resp is grpc.aio.EOF:
                raise StoreUnavailable("watch stream ended")
            if resp.compact_revision:
                raise RevisionCompacted(int(resp.compact_revision))
            if resp.canceled and is_auth_failure(resp.cancel_reason):
                if self._reauth is not None:
                    await self._reauth()
                raise StoreAuthError(f"watch refused by etcd: {resp.cancel_reason}")
            if resp.canceled:
                raise StoreUnavailable(f"watch canceled by etcd: {resp.cancel_reason}")
            if resp.created and not resp.events:
                continue
            events = tuple(
                Event(
                    ev.kv.key,
                    ev.kv.value,
                    ev.type != put,
                    ev.kv.create_revision,
                    ev.kv.mod_revision,
                    ev.kv.lease,
                )
                for ev in resp.events
            )
            yield WatchBatch(int(resp.header.revision), events, is_progress=not events)
