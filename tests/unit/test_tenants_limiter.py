"""The tenants example's token bucket (examples/tenants/limiter.py), as properties."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/ is not installed
from examples.tenants.limiter import Bucket, Policy

EPSILON = 1e-6

policies = st.builds(
    Policy,
    capacity=st.floats(min_value=0.5, max_value=1000, allow_nan=False),
    refill_per_second=st.floats(min_value=0, max_value=100, allow_nan=False),
)
starts = st.floats(min_value=0, max_value=2e9, allow_nan=False)
#: Offsets of hits from the bucket's creation; some go backwards (another node's clock).
offsets = st.lists(st.floats(min_value=-5, max_value=3600, allow_nan=False), max_size=60)


def replay(policy: Policy, start: float, times: list[float]) -> tuple[list[bool], Bucket]:
    bucket = Bucket.full(policy, start)
    outcomes = []
    for at in times:
        allowed, bucket = bucket.hit(policy, at)
        outcomes.append(allowed)
    return outcomes, bucket


@given(policies, starts, offsets)
def test_every_hit_is_counted_once_and_tokens_stay_in_bounds(
    policy: Policy, start: float, deltas: list[float]
) -> None:
    bucket = Bucket.full(policy, start)
    for index, delta in enumerate(deltas, 1):
        allowed, after = bucket.hit(policy, start + delta)
        assert after.hits == index
        assert after.allowed == bucket.allowed + allowed
        assert 0 <= after.tokens <= policy.capacity
        assert after.updated_at >= bucket.updated_at  # never moves back
        bucket = after


@given(policies, starts, offsets)
def test_allowed_hits_never_exceed_burst_plus_refill(
    policy: Policy, start: float, deltas: list[float]
) -> None:
    times = [start + delta for delta in deltas]
    outcomes, _ = replay(policy, start, times)
    latest = max([start, *times])
    budget = policy.capacity + policy.refill_per_second * (latest - start)
    assert sum(outcomes) <= budget + EPSILON


@given(st.integers(min_value=1, max_value=50), starts, offsets)
def test_without_refill_exactly_the_burst_is_allowed(
    capacity: int, start: float, deltas: list[float]
) -> None:
    policy = Policy(capacity=capacity, refill_per_second=0)
    outcomes, bucket = replay(policy, start, [start + d for d in deltas])
    allowed = min(capacity, len(deltas))
    assert outcomes == [True] * allowed + [False] * (len(deltas) - allowed)
    assert (bucket.allowed, bucket.limited) == (allowed, len(deltas) - allowed)


@given(
    st.floats(min_value=1, max_value=100),
    st.floats(min_value=0.01, max_value=100),
    starts,
    st.integers(min_value=0, max_value=100),
)
def test_hits_slower_than_the_refill_rate_are_never_limited(
    capacity: float, rate: float, start: float, count: int
) -> None:
    policy = Policy(capacity=capacity, refill_per_second=rate)
    gap = 1.01 / rate  # a little more than one token's worth of time
    outcomes, _ = replay(policy, start, [start + gap * i for i in range(count)])
    assert all(outcomes)


@given(policies, starts, st.lists(st.floats(min_value=0, max_value=100), max_size=30))
def test_a_clock_running_backwards_never_adds_tokens(
    policy: Policy, start: float, steps_back: list[float]
) -> None:
    bucket = Bucket.full(policy, start)
    at = start
    for step in steps_back:
        at -= step
        _, after = bucket.hit(policy, at)
        assert after.tokens <= bucket.tokens
        bucket = after


@given(policies, starts, offsets, st.integers(min_value=0, max_value=60))
def test_a_handover_at_any_point_changes_nothing(
    policy: Policy, start: float, deltas: list[float], split: int
) -> None:
    """Moving a tenant (state -> JSON -> next instance) is invisible to its hits."""
    times = [start + delta for delta in deltas]
    outcomes, expected = replay(policy, start, times)
    split = min(split, len(times))
    first, bucket = replay(policy, start, times[:split])
    bucket = Bucket.from_state(json.loads(json.dumps(bucket.to_state())), policy)
    rest = []
    for at in times[split:]:
        allowed, bucket = bucket.hit(policy, at)
        rest.append(allowed)
    assert first + rest == outcomes
    assert bucket == expected


@given(
    policies,
    st.dictionaries(
        st.sampled_from(["tokens", "updated_at", "allowed", "limited"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5)),
    ),
)
def test_bad_state_is_refused_or_clamped_never_trusted(
    policy: Policy, state: dict[str, Any]
) -> None:
    try:
        bucket = Bucket.from_state(state, policy)
    except ValueError:
        return
    assert 0 <= bucket.tokens <= policy.capacity
    assert bucket.allowed >= 0 and bucket.limited >= 0
    assert math.isfinite(bucket.updated_at)


@given(policies, starts)
def test_retry_after_names_when_the_next_token_arrives(policy: Policy, start: float) -> None:
    bucket = Bucket(tokens=0.25, updated_at=start)
    wait = bucket.retry_after(policy)
    if policy.refill_per_second == 0:
        assert wait is None
        return
    assert wait is not None
    # Wall-clock seconds near 2e9 carry ~1e-7 s of rounding, worth that many tokens.
    slack = EPSILON + 4 * math.ulp(start + wait) * policy.refill_per_second
    assert bucket.refilled(policy, start + wait).tokens >= min(1.0, policy.capacity) - slack


@pytest.mark.parametrize(
    ("capacity", "rate"),
    [(0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (1, -0.1), (1, math.nan), (1, math.inf)],
)
def test_impossible_policies_are_refused(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError):
        Policy(capacity=capacity, refill_per_second=rate)


def test_policy_travels_in_spec_args() -> None:
    policy = Policy(capacity=5, refill_per_second=0.5)
    assert Policy.from_args(json.loads(json.dumps(policy.to_args()))) == policy
    assert Policy.from_args({}) == Policy()
