"""hub.core.workqueue: dedup, never the same key twice at once, requeue of keys that went
dirty in flight, per-key backoff on an injected clock, drain, idle waiting."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hub.core.outcome import DONE, RequeueAfter, Retry, Terminal, settle
from hub.core.workqueue import Backoff, QueueShutDown, WorkQueue

TIMEOUT = 5.0  # ceiling for awaits that must finish much sooner


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


NO_JITTER = Backoff(base=1.0, factor=2.0, cap=8.0, jitter=0.0)


def queue(clock: Clock | None = None, backoff: Backoff = NO_JITTER) -> WorkQueue[str]:
    return WorkQueue(backoff=backoff, clock=clock or Clock())


def test_keys_added_several_times_are_handed_out_once() -> None:
    q = queue()
    q.add_many(["a", "b", "a"])
    q.add("a")
    assert q.get_nowait() == ["a", "b"]
    assert q.get_nowait() == []


def test_a_key_in_flight_is_not_handed_out_again_until_done() -> None:
    q = queue()
    q.add("a")
    assert q.get_nowait() == ["a"]
    q.add("a")  # changed while in flight
    q.add("b")
    assert q.get_nowait() == ["b"]
    assert q.get_nowait() == []
    assert q.is_processing("a")
    q.done("a")
    assert q.get_nowait() == ["a"]  # re-queued: it went dirty while in flight


def test_a_key_not_marked_in_flight_is_finished_by_done() -> None:
    q = queue()
    q.add("a")
    q.get_nowait()
    assert not q.is_idle()
    q.done("a")
    assert q.get_nowait() == []
    assert q.is_idle()


def test_backoff_is_per_key_and_reset_by_forget() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_many(["a", "b"])
    assert q.get_nowait() == ["a", "b"]
    # "a" failed, "b" succeeded: only "a" waits, and "b" is free at once.
    assert q.add_rate_limited("a") == 1.0
    q.done("a")
    q.forget("b")
    q.done("b")
    q.add("b")
    assert q.get_nowait() == ["b"]
    q.done("b")
    clock.advance(0.99)
    assert q.get_nowait() == []
    assert not q.is_idle()  # a retry is pending
    clock.advance(0.01)
    assert q.get_nowait() == ["a"]
    # It fails again: twice the delay, and so on up to the cap.
    assert q.add_rate_limited("a") == 2.0
    q.done("a")
    assert [q.add_rate_limited("a") for _ in range(4)] == [4.0, 8.0, 8.0, 8.0]
    assert q.failures("a") == 6
    q.forget("a")
    assert q.failures("a") == 0
    assert q.add_rate_limited("a") == 1.0


def test_an_add_makes_a_key_waiting_out_its_backoff_ready_at_once() -> None:
    clock = Clock()
    q = queue(clock)
    q.add("a")
    q.get_nowait()
    q.add_rate_limited("a")
    q.done("a")
    assert q.get_nowait() == []
    q.add("a")  # new information: no reason to wait
    assert q.get_nowait() == ["a"]
    q.done("a")
    clock.advance(10)
    assert q.get_nowait() == []  # the superseded retry is gone
    assert q.is_idle()
    assert q.failures("a") == 1  # but the failure still counts


def test_add_after_keeps_the_earliest_time() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_after("a", 5)
    q.add_after("a", 2)
    q.add_after("a", 9)
    clock.advance(2)
    assert q.get_nowait() == ["a"]


@given(
    failures=st.integers(min_value=0, max_value=2000),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_delays_are_jittered_around_a_capped_exponential(
    failures: int, rand: float
) -> None:
    backoff = Backoff(rand=lambda: rand)
    step = min(backoff.cap, backoff.base * backoff.factor ** min(failures, 64))
    delay = backoff.delay(failures)
    assert step * (1 - backoff.jitter) <= delay <= step * (1 + backoff.jitter)
    assert delay <= backoff.cap * (1 + backoff.jitter)
    assert backoff.delay(failures) <= Backoff(rand=lambda: rand).delay(failures + 1)


def test_the_default_first_retry_waits_as_long_as_the_old_round_pause() -> None:
    low, high = Backoff(rand=lambda: 0.0).delay(0), Backoff(rand=lambda: 0.999999).delay(0)
    assert 0.2 <= low < high <= 0.5


@pytest.mark.parametrize(
    "backoff",
    [{"base": -1}, {"base": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.0}],
)
def test_nonsense_backoffs_are_refused(backoff: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**backoff)


def test_outcomes_settle_keys_in_the_queue() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_many(["done", "retry", "later", "terminal"])
    q.get_nowait()
    for key in ("done", "later", "terminal"):
        q.add_rate_limited(key)  # each failed once before, and was handed out again
        q.add(key)
    settle(q, "retry", Retry("etcd unavailable"))
    for key in ("done", "later", "terminal"):
        q.done(key)
    assert sorted(q.get_nowait()) == ["done", "later", "terminal"]
    settle(q, "done", DONE)
    settle(q, "later", RequeueAfter(3.0))
    settle(q, "terminal", Terminal("parked"))
    assert [q.failures(k) for k in ("done", "retry", "later", "terminal")] == [0, 1, 0, 0]
    clock.advance(1.0)
    assert q.get_nowait() == ["retry"]
    clock.advance(2.0)
    assert q.get_nowait() == ["later"]
    assert not q.is_processing("terminal") and not q.is_processing("done")


async def test_get_waits_for_a_key_and_for_a_delayed_one() -> None:
    q: WorkQueue[str] = WorkQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.add("a")
    assert await asyncio.wait_for(getter, TIMEOUT) == ["a"]
    q.done("a")
    q.add_after("b", 0.02)
    assert await asyncio.wait_for(q.get(), TIMEOUT) == ["b"]


async def test_get_hands_out_the_rest_of_a_burst_in_the_same_batch() -> None:
    q: WorkQueue[str] = WorkQueue()

    def burst() -> None:
        q.add("a")
        asyncio.get_running_loop().call_soon(q.add, "b")

    asyncio.get_running_loop().call_soon(burst)
    assert await asyncio.wait_for(q.get(), TIMEOUT) == ["a", "b"]


async def test_a_cancelled_get_hands_out_nothing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)  # the getter is in its coalescing yield now
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert not q.is_processing("a")
    assert q.get_nowait() == ["a"]


async def test_wait_idle_returns_once_every_key_is_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    await asyncio.wait_for(q.wait_idle(), TIMEOUT)
    q.add_many(["a", "b"])
    waiter = asyncio.ensure_future(q.wait_idle())
    batch = await q.get()
    q.done(batch[0])
    await asyncio.sleep(0)
    assert not waiter.done()
    q.done(batch[1])
    await asyncio.wait_for(waiter, TIMEOUT)


async def test_drain_waits_for_keys_in_flight_and_refuses_new_ones() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_many(["a", "b"])
    assert q.get_nowait() == ["a", "b"]
    q.add_after("c", 60)
    drain = asyncio.ensure_future(q.drain(TIMEOUT))
    await asyncio.sleep(0)
    assert q.is_shut_down and not drain.done()
    q.add("d")  # ignored
    q.done("a")
    await asyncio.sleep(0)
    assert not drain.done()
    q.done("b")
    assert await asyncio.wait_for(drain, TIMEOUT) is True
    assert q.is_idle()  # the delayed "c" was dropped
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(q.get(), TIMEOUT)


async def test_drain_gives_up_at_its_deadline() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.get_nowait()
    assert await q.drain(0.01) is False
    assert q.is_processing("a")


async def test_a_shut_down_queue_still_hands_out_what_is_ready() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.shutdown()
    assert await asyncio.wait_for(q.get(), TIMEOUT) == ["a"]
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(q.get(), TIMEOUT)


class QueueModel(RuleBasedStateMachine):
    """Random adds, hand-outs, completions, failures and clock steps against the rules:
    no key is handed out while in flight, and no add is ever lost."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.queue = queue(self.clock)
        self.in_flight: set[str] = set()
        #: keys added (or due for retry) since they were last handed out
        self.owed: set[str] = set()
        self.retry_at: dict[str, float] = {}

    keys = st.sampled_from("abcd")

    @rule(key=keys)
    def add(self, key: str) -> None:
        self.queue.add(key)
        self.owed.add(key)
        self.retry_at.pop(key, None)

    @rule(batch=st.lists(keys, max_size=6))
    def add_many(self, batch: list[str]) -> None:
        self.queue.add_many(batch)
        self.owed.update(batch)
        for key in batch:
            self.retry_at.pop(key, None)

    @rule()
    def get(self) -> None:
        self._promote()
        batch = self.queue.get_nowait()
        assert len(batch) == len(set(batch))
        assert not set(batch) & self.in_flight, "a key handed out twice at once"
        ready = {k for k in self.owed if k not in self.in_flight}
        assert set(batch) == ready
        self.in_flight.update(batch)
        self.owed.difference_update(batch)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), fail=st.booleans())
    def finish(self, data: st.DataObject, fail: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        if fail:
            delay = self.queue.add_rate_limited(key)
            if key not in self.owed:
                self.retry_at[key] = min(self.retry_at.get(key, 1e18), self.clock() + delay)
        else:
            self.queue.forget(key)
        self.queue.done(key)
        self.in_flight.discard(key)

    @rule(seconds=st.floats(min_value=0, max_value=10))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _promote(self) -> None:
        for key, when in list(self.retry_at.items()):
            if when <= self.clock():
                del self.retry_at[key]
                self.owed.add(key)

    @invariant()
    def idle_means_nothing_owed(self) -> None:
        if self.queue.is_idle():
            assert not self.in_flight and not self.owed and not self.retry_at

    def teardown(self) -> None:
        # Everything owed is eventually handed out once the clock passes every backoff.
        self.clock.advance(1e6)
        for key in list(self.in_flight):
            self.queue.done(key)
        self.in_flight.clear()
        self._promote()
        handed: set[str] = set()
        while batch := self.queue.get_nowait():
            handed.update(batch)
            for key in batch:
                self.queue.done(key)
        assert self.owed <= handed
        assert self.queue.is_idle()


TestQueueModel = QueueModel.TestCase


@given(
    st.lists(st.sampled_from("abcdef"), max_size=12),
    st.lists(st.sampled_from("abcdef"), max_size=6),
    st.lists(st.sampled_from("abcdef"), max_size=6),
)
def test_finish_many_is_forget_then_done_for_each_key(
    added: list[str], failed: list[str], dirtied: list[str]
) -> None:
    """The bulk path of a round must leave the queue exactly as the one-by-one path does."""

    def run(bulk: bool) -> tuple[list[str], list[str], bool, dict[str, int]]:
        q = queue()
        q.add_many(added)
        batch = q.get_nowait()
        for key in failed:
            if key in batch:
                q.add_rate_limited(key)  # a failure counted, then it succeeds
        q.add_many(dirtied)  # changed while in flight
        if bulk:
            q.finish_many(batch)
        else:
            for key in batch:
                q.forget(key)
                q.done(key)
        after = q.get_nowait()
        return batch, after, q.is_idle(), {k: q.failures(k) for k in "abcdef"}

    assert run(bulk=True) == run(bulk=False)
