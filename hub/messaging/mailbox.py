"""A child's mailbox: ``call``/``cast`` messages delivered to its worker, in order.

A worker class that defines ``async def handle_call(self, message)`` (returning the reply)
and/or ``async def handle_cast(self, message)`` gets a mailbox per running instance. By
default messages are handled **one at a time, in arrival order** (actor semantics); a class
attribute ``max_concurrency = N`` lets up to N handlers run at once (order is then only the
start order). The mailbox is bounded (``capacity``): a ``cast`` to a full mailbox raises
:class:`~hub.errors.MailboxFull`; a ``call`` waits for room within its timeout.

When the instance stops, everything still queued fails with
:class:`~hub.errors.ChildNotRunning`, which callers treat as "not delivered" (they may retry
against the child's next owner): a message is handled by at most one instance.

Ownership: the supervisor runs :meth:`Mailbox.run` in its task group, started on the first
message, and closes the mailbox when the instance ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.errors import ChildNotRunning, HandlerError, MailboxFull, NotCallable
from hub.logs import fields, get_logger

log = get_logger("hub.messaging.mailbox")

Kind = Literal["call", "cast"]

#: Default number of messages a mailbox holds before casts are refused.
DEFAULT_CAPACITY = 1000


@dataclass(slots=True)
class _Envelope:
    kind: Kind
    message: Any
    reply: asyncio.Future[Any] | None = field(default=None)


class Mailbox:
    """Messages for one running instance; see the module docstring."""

    def __init__(
        self, child_id: str, node_id: str, instance: object, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self.child_id = child_id
        self.node_id = node_id
        self.instance = instance
        self.concurrency = max(1, int(getattr(instance, "max_concurrency", 1) or 1))
        self._queue: asyncio.Queue[_Envelope] = asyncio.Queue(maxsize=capacity)
        self._closed = False
        self.started = False
        self.handled = 0

    @staticmethod
    def accepts(instance: object) -> bool:
        """Whether an instance has any message handler."""
        return callable(getattr(instance, "handle_call", None)) or callable(
            getattr(instance, "handle_cast", None)
        )

    def _handler(self, kind: Kind) -> Any:
        handler = getattr(self.instance, f"handle_{kind}", None)
        if not callable(handler):
            raise NotCallable(
                self.child_id, self.node_id, f"the worker has no handle_{kind}(message)"
            )
        return handler

    async def call(self, message: Any, timeout: float) -> Any:
        """Deliver a call and wait for the reply, all within ``timeout``."""
        self._handler("call")
        if self._closed:
            raise ChildNotRunning(self.child_id, self.node_id)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(timeout):
            await self._queue.put(_Envelope("call", message, reply))
            return await reply

    def cast(self, message: Any) -> None:
        """Queue a cast; raises MailboxFull when the mailbox is full."""
        self._handler("cast")
        if self._closed:
            raise ChildNotRunning(self.child_id, self.node_id)
        try:
            self._queue.put_nowait(_Envelope("cast", message))
        except asyncio.QueueFull:
            raise MailboxFull(self.child_id, self.node_id) from None

    async def run(self) -> None:
        """Handle messages until cancelled (the instance ended)."""
        self.started = True
        if self.concurrency == 1:
            while True:
                envelope = await self._queue.get()
                await self._handle(envelope)
        slots = asyncio.Semaphore(self.concurrency)
        async with asyncio.TaskGroup() as tg:
            while True:
                envelope = await self._queue.get()
                await slots.acquire()
                tg.create_task(self._handle_then_release(envelope, slots))

    async def _handle_then_release(self, envelope: _Envelope, slots: asyncio.Semaphore) -> None:
        try:
            await self._handle(envelope)
        finally:
            slots.release()

    async def _handle(self, envelope: _Envelope) -> None:
        reply = envelope.reply
        if reply is not None and reply.done():
            return  # the caller gave up (timeout) before we got to it
        try:
            result = await self._handler(envelope.kind)(envelope.message)
        except asyncio.CancelledError:
            if reply is not None and not reply.done():
                reply.set_exception(ChildNotRunning(self.child_id, self.node_id))
            raise
        except Exception as exc:
            if reply is not None and not reply.done():
                reply.set_exception(
                    HandlerError(self.child_id, self.node_id, type(exc).__name__, str(exc)[:1000])
                )
            else:
                log.warning(
                    "handle_cast of %r raised %s: %s",
                    self.child_id,
                    type(exc).__name__,
                    exc,
                    extra=fields(node_id=self.node_id, child_id=self.child_id),
                )
        else:
            if reply is not None and not reply.done():
                reply.set_result(result)
        finally:
            self.handled += 1

    def close(self) -> None:
        """Fail everything still queued: it was not delivered."""
        self._closed = True
        while True:
            try:
                envelope = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ChildNotRunning(self.child_id, self.node_id))
                with contextlib.suppress(asyncio.InvalidStateError):
                    envelope.reply.exception()  # retrieved: no "never retrieved" warning
