"""Checks that an object can serve as a strategy, and that four strategies fit together.

:class:`hub.config.HubConfig` runs them on its ``distribution``, ``redundancy``,
``migration`` and ``partition`` options and raises :class:`hub.errors.ConfigError` with the
first problem, so a misfit strategy fails when the hub is configured, not minutes later in
a reconcile loop. A custom strategy's own tests can run them too. Each check returns the
problems it found, one sentence each (``[]``: none); the ones calling the strategy call
only its pure members, with small sample inputs.

Per family, a strategy must have every member of its Protocol (:mod:`strategies.base`,
:mod:`strategies.migration`), with these values:

* every family: ``guarantees`` is a ``frozenset`` of :class:`~strategies.base.Guarantee`;
  ``AVAILABLE_DURING_OUTAGE`` only on a partition strategy (the only family the hub reads
  it from: anywhere else it promises what the hub will not do);
* distribution: ``placer(PlacementInput({}))`` returns a :class:`~strategies.base.Placer`;
  a :class:`~strategies.base.ChildSetAware` one has a ``rebuild_interval`` > 0;
* redundancy: ``mode`` is ``"active_passive"`` or ``"active_active"``; ``count(n)`` is an
  int >= 1 for every sampled ``n`` (0 included: the hub asks before it has seen a member);
  ``AT_MOST_ONE_OWNER`` is not claimed by an ``"active_active"`` strategy that runs more
  than one instance (those instances are all active at once);
* migration: ``handover`` is a bool; ``state_timeout`` a finite number >= 0 and
  ``handover_ttl`` an int >= 0, with ``handover=True`` at least ``> 0`` and ``5`` (as
  :class:`~strategies.migration.HotSwap` requires);
* partition: ``persists_state`` is a bool; ``decide`` on a one-node view returns a
  :class:`~strategies.base.QuorumDecision`; ``next_expiry`` returns ``None`` or a finite
  number; ``reset_cluster_size`` returns a :class:`~strategies.base.QuorumState` or raises
  :class:`~strategies.errors.NoClusterSize`; ``AT_MOST_ONE_OWNER`` and
  ``AVAILABLE_DURING_OUTAGE`` are not claimed together (the second is bought with the
  first).

Across families (:func:`combination_problems`): a
:class:`~strategies.base.RequiresChildMapping` distribution (``Guided``) needs a redundancy
whose ``count`` does not change with the cluster size, because every child mapping lists
exactly ``count`` nodes (``Replication("cluster")`` does not fit).

Example::

    >>> from strategies import Replication
    >>> redundancy_problems(Replication(2, mode="active_passive"))
    []
    >>> class Doubled:
    ...     mode = "active_active"
    ...     def count(self, members: int) -> int:
    ...         return 2
    >>> redundancy_problems(Doubled())
    ['Doubled has no `guarantees` (a RedundancyStrategy has guarantees, mode, count)']
    >>> Doubled.guarantees = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    >>> redundancy_problems(Doubled())
    ["Doubled promises AT_MOST_ONE_OWNER, but with mode 'active_active' its 2 instances ..."]

Warning:
    The checks sample; they cannot prove a strategy right. A ``count`` that misbehaves only
    at 40 members passes. The conformance suites in ``tests/unit`` go further.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

from strategies.base import (
    ChildSetAware,
    Guarantee,
    MembershipView,
    PlacementInput,
    Placer,
    QuorumDecision,
    QuorumState,
    RedundancyMode,
    RequiresChildMapping,
)
from strategies.errors import NoClusterSize

__all__ = [
    "SAMPLE_MEMBER_COUNTS",
    "combination_problems",
    "distribution_problems",
    "migration_problems",
    "partition_problems",
    "redundancy_problems",
]

#: The member counts ``count(n)`` is sampled at.
SAMPLE_MEMBER_COUNTS = (0, 1, 2, 3, 5, 64)

#: Protocol name and members, per family.
_MEMBERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # family: (protocol, attributes, methods)
    "distribution": ("DistributionStrategy", ("guarantees",), ("placer",)),
    "redundancy": ("RedundancyStrategy", ("guarantees", "mode"), ("count",)),
    "migration": (
        "MigrationStrategy",
        ("guarantees", "handover", "state_timeout", "handover_ttl"),
        (),
    ),
    "partition": (
        "PartitionStrategy",
        ("guarantees", "persists_state"),
        ("decide", "next_expiry", "reset_cluster_size"),
    ),
}

_MODES: tuple[str, ...] = get_args(RedundancyMode)


def _name(strategy: object) -> str:
    return type(strategy).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _raised(call: str, exc: Exception) -> str:
    return f"{call} raised {type(exc).__name__}: {exc}"


def _shape_problems(family: str, strategy: object) -> list[str]:
    """Missing members, then a ``guarantees`` that is not a frozenset of Guarantee."""
    protocol, attributes, methods = _MEMBERS[family]
    every = ", ".join(attributes + methods)
    name = _name(strategy)
    for member in attributes + methods:
        try:
            value = getattr(strategy, member)
        except AttributeError:
            return [f"{name} has no `{member}` (a {protocol} has {every})"]
        except Exception as exc:
            return [_raised(f"{name}: reading `{member}`", exc)]
        if member in methods and not callable(value):
            return [f"{name}.{member} is not callable (a {protocol} has {every})"]
    guarantees = strategy.guarantees  # type: ignore[attr-defined]
    if not isinstance(guarantees, frozenset) or not all(
        isinstance(item, Guarantee) for item in guarantees
    ):
        return [f"{name}.guarantees must be a frozenset of Guarantee, got {guarantees!r}"]
    if family != "partition" and Guarantee.AVAILABLE_DURING_OUTAGE in guarantees:
        return [
            f"{name} promises AVAILABLE_DURING_OUTAGE, which only a partition strategy can "
            f"deliver (the hub reads it from partition= alone)"
        ]
    return []


def distribution_problems(strategy: object) -> list[str]:
    """What keeps ``strategy`` from serving as ``distribution=``; ``[]`` when nothing."""
    problems = _shape_problems("distribution", strategy)
    if problems:
        return problems
    name = _name(strategy)
    try:
        placer = strategy.placer(PlacementInput({}))  # type: ignore[attr-defined]
    except Exception as exc:
        return [_raised(f"{name}.placer(PlacementInput({{}}))", exc)]
    if not isinstance(placer, Placer):
        return [f"{name}.placer() must return a Placer (owner, owners), got {placer!r}"]
    if isinstance(strategy, ChildSetAware):
        interval = strategy.rebuild_interval
        if not _is_number(interval) or interval <= 0:
            problems.append(f"{name}.rebuild_interval must be a number of seconds > 0")
    if isinstance(strategy, RequiresChildMapping) and not callable(strategy.validate_child_mapping):
        problems.append(f"{name}.validate_child_mapping is not callable")
    return problems


def _counts(strategy: object) -> tuple[dict[int, int], list[str]]:
    """``count(n)`` for every sampled ``n``, or the first problem."""
    name = _name(strategy)
    count: Callable[[int], object] = strategy.count  # type: ignore[attr-defined]
    counts: dict[int, int] = {}
    for members in SAMPLE_MEMBER_COUNTS:
        try:
            value = count(members)
        except Exception as exc:
            return counts, [_raised(f"{name}.count({members})", exc)]
        if not _is_int(value) or value < 1:  # type: ignore[operator]
            return counts, [f"{name}.count({members}) must return an int >= 1, got {value!r}"]
        counts[members] = value  # type: ignore[assignment]
    return counts, []


def redundancy_problems(strategy: object) -> list[str]:
    """What keeps ``strategy`` from serving as ``redundancy=``; ``[]`` when nothing."""
    problems = _shape_problems("redundancy", strategy)
    if problems:
        return problems
    name = _name(strategy)
    mode = strategy.mode  # type: ignore[attr-defined]
    if mode not in _MODES:
        return [f"{name}.mode must be 'active_passive' or 'active_active', got {mode!r}"]
    counts, problems = _counts(strategy)
    if problems:
        return problems
    guarantees: frozenset[Guarantee] = strategy.guarantees  # type: ignore[attr-defined]
    if Guarantee.AT_MOST_ONE_OWNER in guarantees and mode == "active_active":
        several = [(members, count) for members, count in counts.items() if count > 1]
        if several:
            members, count = several[0]
            return [
                f"{name} promises AT_MOST_ONE_OWNER, but with mode 'active_active' its "
                f"{count} instances (count({members})) are all active"
            ]
    return []


def migration_problems(strategy: object) -> list[str]:
    """What keeps ``strategy`` from serving as ``migration=``; ``[]`` when nothing."""
    problems = _shape_problems("migration", strategy)
    if problems:
        return problems
    name = _name(strategy)
    handover = strategy.handover  # type: ignore[attr-defined]
    timeout = strategy.state_timeout  # type: ignore[attr-defined]
    ttl = strategy.handover_ttl  # type: ignore[attr-defined]
    if not isinstance(handover, bool):
        problems.append(f"{name}.handover must be a bool, got {handover!r}")
    if not _is_number(timeout) or timeout < 0:
        problems.append(f"{name}.state_timeout must be a number of seconds >= 0, got {timeout!r}")
    elif handover is True and timeout <= 0:
        problems.append(f"{name}.state_timeout must be > 0 with handover=True, got {timeout!r}")
    if not _is_int(ttl) or ttl < 0:
        problems.append(f"{name}.handover_ttl must be an int >= 0 (seconds), got {ttl!r}")
    elif handover is True and ttl < 5:
        problems.append(f"{name}.handover_ttl must be >= 5 with handover=True, got {ttl!r}")
    return problems


def partition_problems(strategy: object) -> list[str]:
    """What keeps ``strategy`` from serving as ``partition=``; ``[]`` when nothing."""
    problems = _shape_problems("partition", strategy)
    if problems:
        return problems
    name = _name(strategy)
    guarantees: frozenset[Guarantee] = strategy.guarantees  # type: ignore[attr-defined]
    if {Guarantee.AT_MOST_ONE_OWNER, Guarantee.AVAILABLE_DURING_OUTAGE} <= guarantees:
        problems.append(
            f"{name} promises both AT_MOST_ONE_OWNER and AVAILABLE_DURING_OUTAGE: a node that "
            f"keeps running through an outage may run a child another node runs too"
        )
    persists = strategy.persists_state  # type: ignore[attr-defined]
    if not isinstance(persists, bool):
        problems.append(f"{name}.persists_state must be a bool, got {persists!r}")
    state = QuorumState()
    view = MembershipView(frozenset({"node-1"}), now=0.0, self_id="node-1")
    try:
        decision = strategy.decide(view, state)  # type: ignore[attr-defined]
    except Exception as exc:
        problems.append(_raised(f"{name}.decide() on a one-node view", exc))
    else:
        if not isinstance(decision, QuorumDecision):
            problems.append(f"{name}.decide() must return a QuorumDecision, got {decision!r}")
    try:
        expiry = strategy.next_expiry(state)  # type: ignore[attr-defined]
    except Exception as exc:
        problems.append(_raised(f"{name}.next_expiry(QuorumState())", exc))
    else:
        if expiry is not None and not _is_number(expiry):
            problems.append(f"{name}.next_expiry() must return None or a time, got {expiry!r}")
    try:
        reset = strategy.reset_cluster_size(state, 1)  # type: ignore[attr-defined]
    except NoClusterSize:
        pass
    except Exception as exc:
        problems.append(
            _raised(f"{name}.reset_cluster_size(QuorumState(), 1)", exc)
            + " (raise strategies.errors.NoClusterSize when there is no size to reset)"
        )
    else:
        if not isinstance(reset, QuorumState):
            problems.append(f"{name}.reset_cluster_size() must return a QuorumState, got {reset!r}")
    return problems


def combination_problems(
    *, distribution: object, redundancy: object, migration: object, partition: object
) -> list[str]:
    """What keeps strategies that each pass their own check from working together.

    Args:
        distribution, redundancy, migration, partition: one strategy per family, each
            with no problems of its own.
    """
    problems = []
    if isinstance(distribution, RequiresChildMapping):
        counts, _ = _counts(redundancy)
        sized = {count for members, count in counts.items() if members > 0}
        if len(sized) > 1:
            shown = ", ".join(f"count({m})={c}" for m, c in counts.items() if m > 0)
            problems.append(
                f"{_name(distribution)} needs one instance count at every cluster size (each "
                f"child mapping lists that many nodes), but {_name(redundancy)} changes it: "
                f"{shown}"
            )
    return problems
