"""A deduplicating work queue of keys with per-key backoff (client-go's ``workqueue``).

Guarantees:

* **Dedup.** A key added several times before it is handed out is handed out once.
* **Never the same key twice at once.** A key handed out by :meth:`WorkQueue.get` is not
  handed out again before :meth:`WorkQueue.done` is called for it, whatever is added
  meanwhile.
* **Nothing is lost.** A key added while it is being processed is handed out again after
  its :meth:`~WorkQueue.done` (the processing may have read the state before the change).
* **Per-key backoff.** :meth:`WorkQueue.add_rate_limited` re-adds one key after a delay
  that grows with that key's consecutive failures (exponential, jittered, capped) and is
  reset by :meth:`WorkQueue.forget`: one failing key never delays the others. An
  :meth:`~WorkQueue.add` of a key waiting out its delay makes it ready at once (new
  information), but keeps its failure count.
* **Batches.** :meth:`WorkQueue.get` waits for at least one ready key, yields to the loop
  once (so the rest of a burst of adds joins), then hands out every ready key.

It does not order keys beyond "in the order they became ready", and a key's delay is a
lower bound measured with the queue's clock (injectable for tests); a getter blocked in
:meth:`~WorkQueue.get` re-reads the clock when an add wakes it or its own timer fires.

Ownership: the queue creates no tasks. One owner (the reconciler) calls :meth:`get` and
settles each key it got with :meth:`done`; anyone on the event loop may add. Not thread
safe.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hub.errors import HubClosed

K = TypeVar("K", bound=Hashable)


class QueueShutDown(HubClosed):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and has no ready key."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Per-key retry delays: ``min(cap, base * factor**failures)``, times a random factor
    in ``[1 - jitter, 1 + jitter]`` so keys that failed together do not retry together.

    The defaults retry a first failure after 0.2-0.5 s (the reconciler's former
    round-wide pause) and never wait more than 3.5 s: a new lease or the periodic resync
    re-adds keys at once anyway, so a longer cap would only delay recovery after etcd
    returns.
    """

    base: float = 0.35
    factor: float = 2.0
    cap: float = 2.5
    jitter: float = 0.4
    #: uniform [0, 1) source; injectable so tests can pin the jitter
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < self.base or self.factor < 1:
            raise ValueError("backoff needs 0 <= base <= cap and factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures + 1``-th consecutive failure."""
        step = min(self.cap, self.base * self.factor ** min(failures, 64))
        return step * (1 - self.jitter + 2 * self.jitter * self.rand())


class WorkQueue(Generic[K]):
    """Dirty and processing sets with per-key backoff; see the module docstring."""

    def __init__(
        self, *, backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backoff = backoff if backoff is not None else Backoff()
        self.clock = clock
        #: keys ready to be handed out, in the order they became ready (an ordered set).
        #: Invariant: each is in ``_dirty`` and not in ``_processing``.
        self._queue: dict[K, None] = {}
        #: keys that need processing. A key both dirty and processing went dirty while in
        #: flight: :meth:`done` moves it to ``_queue``, never :meth:`add`.
        self._dirty: set[K] = set()
        #: keys handed out by :meth:`get` and not yet :meth:`done`: never handed out again
        #: meanwhile, which is what keeps a key from being handled twice at once.
        self._processing: set[K] = set()
        #: key -> clock time it becomes dirty (:meth:`add_after`). Invariant: not in
        #: ``_dirty`` (an add supersedes the wait); may be processing.
        self._waiting: dict[K, float] = {}
        #: key -> consecutive failures (:meth:`add_rate_limited`), until :meth:`forget`
        self._failures: dict[K, int] = {}
        self._ready = asyncio.Event()  # a key became ready or waiting, or shutdown
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = asyncio.Event()  # nothing processing (after shutdown)
        self._drained.set()
        self._shut_down = False

    # -- adding --------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Mark ``key`` for processing (ignored after :meth:`shutdown`)."""
        if self._shut_down:
            return
        self._waiting.pop(key, None)
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._idle.clear()
        if key not in self._processing:
            self._queue[key] = None
            self._ready.set()

    def add_many(self, keys: Iterable[K]) -> None:
        """:meth:`add` each of ``keys`` (in bulk: a relist or resync adds every child)."""
        if self._shut_down:
            return
        dirty = self._dirty
        new = [key for key in keys if key not in dirty]  # repeats collapse in the sets
        if not new:
            return
        waiting = self._waiting
        if waiting:
            for key in new:
                waiting.pop(key, None)
        dirty.update(new)
        self._idle.clear()
        processing = self._processing
        ready = [key for key in new if key not in processing] if processing else new
        if ready:
            self._queue.update(dict.fromkeys(ready))
            self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (an earlier pending time wins)."""
        if self._shut_down or key in self._dirty:
            return  # already due: it will be handed out anyway
        if delay <= 0:
            self.add(key)
            return
        due = self.clock() + delay
        if due < self._waiting.get(key, due + 1):
            self._waiting[key] = due
            self._idle.clear()
            self._ready.set()  # a blocked get() recomputes its timer

    def add_rate_limited(self, key: K) -> float:
        """Add ``key`` after its own backoff delay, one more failure counted; returns it."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = self.backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset ``key``'s backoff (it succeeded, or will never be retried)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Consecutive failures counted for ``key`` since its last :meth:`forget`."""
        return self._failures.get(key, 0)

    # -- handing out ---------------------------------------------------------------------

    def get_nowait(self) -> list[K]:
        """Hand out every ready key (possibly none), marking them processing."""
        if self._waiting:
            self._promote()
        if not self._queue:
            return []
        batch = list(self._queue)
        self._queue.clear()
        self._dirty.difference_update(batch)
        self._processing.update(batch)
        self._drained.clear()
        return batch

    async def get(self) -> list[K]:
        """Wait for ready keys and hand them all out (see the module docstring).

        Cancellation-safe: a cancelled get hands out nothing.

        Raises:
            QueueShutDown: the queue is shut down and no key is ready.
        """
        while True:
            if self._waiting:
                self._promote()
            if self._queue:
                await asyncio.sleep(0)  # let the rest of the current burst join
                batch = self.get_nowait()
                if batch:
                    return batch
                continue
            if self._shut_down:
                raise QueueShutDown("work queue is shut down")
            self._ready.clear()
            if not self._waiting:
                await self._ready.wait()
                continue
            timeout = min(self._waiting.values()) - self.clock()
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    await self._ready.wait()
            except TimeoutError:
                pass

    def _promote(self) -> None:
        """Add the waiting keys whose time has come."""
        now = self.clock()
        due = [key for key, when in self._waiting.items() if when <= now]
        for key in due:
            self.add(key)  # drops its waiting entry

    def done(self, key: K) -> None:
        """Finish processing ``key``: hand it out again if it went dirty meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue[key] = None
            self._ready.set()
        if not self._processing:
            self._drained.set()
            if not self._dirty and not self._waiting:
                self._idle.set()

    def finish_many(self, keys: Sequence[K]) -> None:
        """:meth:`forget` then :meth:`done` for each of ``keys``, in bulk: most children of
        a round succeed or need nothing, and this is their path."""
        failures = self._failures
        if failures:
            for key in keys:
                failures.pop(key, None)
        processing = self._processing
        processing.difference_update(keys)
        dirty = self._dirty
        if dirty:
            again = [key for key in keys if key in dirty]
            if again:
                self._queue.update(dict.fromkeys(again))
                self._ready.set()
        if not processing:
            self._drained.set()
            if not dirty and not self._waiting:
                self._idle.set()

    # -- state ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to be handed out now."""
        return len(self._queue)

    def is_processing(self, key: K) -> bool:
        """Whether ``key`` was handed out and is not done yet."""
        return key in self._processing

    def is_idle(self) -> bool:
        """True when no key is dirty, processing or waiting out a delay."""
        return not self._dirty and not self._processing and not self._waiting

    async def wait_idle(self) -> None:
        """Wait until :meth:`is_idle`."""
        while not self.is_idle():
            self._idle.clear()
            await self._idle.wait()

    # -- shutting down -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop taking keys: adds are ignored and delayed keys dropped; :meth:`get` hands
        out what is ready, then raises :class:`QueueShutDown`."""
        self._shut_down = True
        self._waiting.clear()
        self._ready.set()
        if not self._dirty and not self._processing:
            self._idle.set()

    @property
    def is_shut_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shut_down

    async def drain(self, timeout: float) -> bool:
        """:meth:`shutdown`, then wait up to ``timeout`` seconds for every key being
        processed to be done. Returns whether they all were (ready keys stay ready)."""
        self.shutdown()
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True
