"""hub.testing._leaks: the checks behind the suite's autouse leak fixtures, on FakeKV."""

from __future__ import annotations

import asyncio

from hub.etcd.session import Session
from hub.testing import FakeKV, ManualClock
from hub.testing._leaks import LeaseTracker, leaked_tasks


async def test_a_pending_task_is_reported_and_a_finished_one_is_not() -> None:
    done = asyncio.Event()

    async def waits() -> None:
        await done.wait()

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(waits())
        assert await leaked_tasks(grace=0.05) == [task]
        done.set()
    assert await leaked_tasks(grace=0.05) == []


async def test_leases_of_sessions_are_tracked_and_judged() -> None:
    clock = ManualClock()
    kv = FakeKV(clock=clock)
    tracker = LeaseTracker()
    with tracker.installed():
        revoked, abandoned, kept = (Session(kv, 3, clock=clock) for _ in range(3))
        for session in (revoked, abandoned, kept):
            await session.grant()
        await revoked.revoke()
        abandoned.abandon()  # a crash: left to expire, so the check revokes it
    other, _ = await kv.lease_grant(5)  # not a Session's: not tracked
    assert len(tracker.granted) == 3
    assert [g.abandoned for g in tracker.granted] == [False, True, False]
    leaks = await tracker.leaked()
    assert leaks == [f"lease {kept.lease_id:x} (TTL 3 s) is kept alive"]
    assert set(kv.leases()) == {kept.lease_id, other}  # the abandoned one was revoked
    await kept.revoke()
    await kv.lease_revoke(other)
    assert await tracker.leaked() == []


def test_installing_patches_only_inside_the_block() -> None:
    grant = Session.grant
    with LeaseTracker().installed():
        assert Session.grant is not grant
    assert Session.grant is grant
