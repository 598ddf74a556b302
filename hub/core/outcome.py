"""What executing one child's action came to, and what the work queue does about it.

Each executor (:mod:`hub.core.executor`, :mod:`hub.core.replicas`) returns an
:data:`Outcomes` mapping for the children it was given: a child left out is :data:`DONE`.
The reconciler settles each child on its own with :func:`settle`, so a child that failed
waits out *its* backoff while the others of its round are free again at once
(controller-runtime's ``reconcile.Result``):

* :data:`DONE`: nothing more to do until something changes; the backoff is reset.
* :class:`Retry`: it failed in a way that may pass (etcd unavailable, an outcome lost to
  a timeout: the next plan re-reads the cache rather than repeating the write); it is
  re-added after its own growing, jittered delay.
* :class:`RequeueAfter`: not a failure, look again after ``seconds`` (backoff reset).
* :class:`Terminal`: retrying cannot help (a saved state too large to read, a replica
  parked by its restart intensity); it is not retried until something changes.

There is no "requeue now" outcome: a change made while a child is processed re-adds it
anyway (:mod:`hub.core.workqueue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from hub.core.workqueue import WorkQueue


@dataclass(frozen=True, slots=True)
class Done:
    """The action did what it had to (or found nothing to do)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """The action failed; retry after the child's own backoff."""

    reason: str


@dataclass(frozen=True, slots=True)
class RequeueAfter:
    """Look at the child again after ``seconds``; not a failure."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Terminal:
    """Retrying cannot help: stay as is until the child's inputs change."""

    reason: str


Outcome: TypeAlias = Done | Retry | RequeueAfter | Terminal
#: child id -> outcome, for the children of one executor call that are not :data:`DONE`
Outcomes: TypeAlias = Mapping[str, Outcome]

DONE: Final = Done()


def settle(queue: WorkQueue[str], child_id: str, outcome: Outcome) -> None:
    """Finish ``child_id`` in ``queue`` according to ``outcome``."""
    if isinstance(outcome, Retry):
        queue.add_rate_limited(child_id)
    elif isinstance(outcome, RequeueAfter):
        queue.forget(child_id)
        queue.add_after(child_id, outcome.seconds)
    else:
        queue.forget(child_id)
    queue.done(child_id)


def settle_many(queue: WorkQueue[str], child_ids: Iterable[str], outcomes: Outcomes) -> None:
    """:func:`settle` each of ``child_ids`` (:data:`DONE` unless ``outcomes`` names it),
    the done ones in bulk."""
    if not outcomes:
        queue.finish_many(list(child_ids))
        return
    done = []
    for child_id in child_ids:
        outcome = outcomes.get(child_id)
        if outcome is None or outcome is DONE:
            done.append(child_id)
        else:
            settle(queue, child_id, outcome)
    queue.finish_many(done)
