"""Hook handlers: one callback registered under one hook, and how a registration is refused.

A :class:`HookHandler` pairs an id (unique among one hook's handlers on one node), a callback
(sync, or returning an awaitable) and a priority; it checks its own fields when built.
:data:`HookSpec` is the static ``{hook name: [handlers]}`` form accepted by
``Hub(..., hooks=...)``. :class:`DuplicateHook` is raised by :class:`~hub.core.hooks.Hooks`
when an id is registered twice under one hook. Values only: what runs a handler, when, and
how failures are isolated is the contract of :mod:`hub.core.hooks`, which re-exports this
module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from hub.core.hook_events import HookName, HookPayload

__all__ = ["DuplicateHook", "HookHandler", "HookSpec"]

P = TypeVar("P", bound=HookPayload)


@dataclass(frozen=True, slots=True)
class HookHandler(Generic[P]):
    """One callback registered under one hook.

    Args:
        id: unique among the handlers of one hook on one node; used to cancel it.
        callback: called with the payload. Plain functions run inside ``dispatch``;
            a callback returning an awaitable (an ``async def``) runs on the hooks'
            task group. Observe handlers return None; alter handlers return a payload of
            the same type, or None to keep the one they got.
        priority: higher runs first; ties run in registration order.

    Raises:
        ValueError: ``id`` is empty.
        TypeError: ``id`` is not a str, ``callback`` is not callable, ``priority`` not an int.
    """

    id: str
    callback: Callable[[P], P | Awaitable[P | None] | None]
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"handler id must be a str, got {type(self.id).__name__}")
        if not self.id:
            raise ValueError("handler id must not be empty")
        if not callable(self.callback):
            raise TypeError(f"handler {self.id!r}: callback is not callable")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError(f"handler {self.id!r}: priority must be an int")


#: Static registration, as accepted by ``Hub(..., hooks=...)`` and :meth:`Hooks.from_mapping`.
HookSpec: TypeAlias = Mapping[HookName | str, Sequence[HookHandler[Any]]]


class DuplicateHook(ValueError):
    """Raised when a handler id is registered twice under the same hook on one node."""

    def __init__(self, hook: HookName, handler_id: str) -> None:
        super().__init__(f"hook {hook.value!r} already has a handler with id {handler_id!r}")
        self.hook = hook
        self.handler_id = handler_id
