"""A custom migration strategy, which is configuration: hot swap tuned per deployment.

A migration strategy decides nothing. The hub has one way to move a child (the old owner
stops it, then releases the owner key; the new owner acquires the key, then starts it) and
reads four values that tune it:

* ``handover``: collect the stopped instance's ``handover_state()`` and publish it in the
  transaction that releases the child, for the next owner to read in the transaction that
  acquires it (``ctx.state``);
* ``state_timeout``: seconds ``handover_state()`` may take before the child moves without;
* ``handover_ttl``: seconds published state waits in etcd for the next owner;
* ``guarantees``: what this promises (at most one active instance: the old one is stopped
  before the new one starts).

``HotSwap(state_timeout, handover_ttl)`` is exactly this with fixed numbers. The class
below reads them from the environment, so one image serves deployments whose workers hand
over very different amounts of state. Every node must end up with the same values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from strategies import Guarantee


@dataclass(frozen=True)
class EnvironmentHandover:
    """A ``strategies.MigrationStrategy``: ``Hub(..., migration=EnvironmentHandover.read())``."""

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    handover: ClassVar[bool] = True

    state_timeout: float = 3.0
    handover_ttl: int = 60

    @classmethod
    def read(cls, environ: Mapping[str, str] = os.environ) -> EnvironmentHandover:
        """Values from ``HANDOVER_STATE_TIMEOUT`` and ``HANDOVER_TTL``, else the defaults."""
        return cls(
            state_timeout=float(environ.get("HANDOVER_STATE_TIMEOUT", cls.state_timeout)),
            handover_ttl=int(environ.get("HANDOVER_TTL", cls.handover_ttl)),
        )
