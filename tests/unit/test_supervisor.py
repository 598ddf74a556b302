"""hub.core.supervisor: local worker lifecycle, restart policies, intensity, backoff, stop
(no etcd).

Synchronisation is by events and ``wait_until`` (poll with a deadline), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sample_workers
from support.wait import wait_until

from hub.core.supervisor import (
    BACKOFF_JITTER,
    ExitKind,
    Supervisor,
    SupervisorEvents,
    WorkerExit,
    backoff_delay,
)
from hub.errors import ConfigError, HubClosed
from hub.model import ChildSpec, RestartPolicy
from hub.worker import AllowList, Context

MOD = sample_workers.__name__
TIMEOUT = 5.0  # ceiling for every wait; tests normally finish in milliseconds
HUB_DIR = Path(__file__).resolve().parents[2] / "hub"


@pytest.fixture(autouse=True)
def _reset_samples() -> Iterator[None]:
    sample_workers.reset()
    yield
    sample_workers.reset()


@dataclass
class Recorder:
    """SupervisorEvents that records every call, in order."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.calls.append(("started", child_id, fencing_token, restarts))

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self.calls.append(("restarting", child_id, fencing_token, restarts, reason))

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        self.calls.append(("exited", child_id, fencing_token, exit))

    def of(self, child_id: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[1] == child_id]

    def kinds(self, child_id: str) -> list[str]:
        return [call[0] for call in self.of(child_id)]

    def started(self, child_id: str) -> list[int]:
        return [call[3] for call in self.of(child_id) if call[0] == "started"]

    def restarting(self, child_id: str) -> list[tuple[int, str]]:
        return [(call[3], call[4]) for call in self.of(child_id) if call[0] == "restarting"]

    def exits(self, child_id: str) -> list[WorkerExit]:
        return [call[3] for call in self.of(child_id) if call[0] == "exited"]


@contextlib.asynccontextmanager
async def running(
    events: SupervisorEvents | None = None, **options: Any
) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    """A supervisor whose run() is active for the duration of the block."""
    recorder = Recorder()
    supervisor = Supervisor(hub_id="hub", node_id="n1", events=events or recorder, **options)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as task_group:
        run_task = task_group.create_task(supervisor.run(ready=ready))
        await ready.wait()
        try:
            yield supervisor, recorder
        finally:
            run_task.cancel()


def spec(
    child_id: str,
    attr: str,
    restart: str = "permanent",
    args: Any = None,
    **options: Any,
) -> ChildSpec:
    return ChildSpec(
        id=child_id,
        start=f"{MOD}:{attr}",
        args={} if args is None else args,
        restart=RestartPolicy(restart),
        **options,
    )


def backoffs(caplog: pytest.LogCaptureFixture, child_id: str) -> list[float]:
    return [
        r.backoff
        for r in caplog.records
        if r.name == "hub.core.supervisor"
        and getattr(r, "child_id", None) == child_id
        and hasattr(r, "backoff")
    ]


# ----------------------------------------------------------------------------- starting


async def test_started_event_and_context_fields(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(
            spec("c1", "Sleeper", args={"a": [1, 2]}, metadata={"tag": "x"}),
            fencing_token=41,
            incarnation=0xABC,
        )
        await wait_until(lambda: rec.started("c1") == [0], TIMEOUT)
        assert rec.calls == [("started", "c1", 41, 0)]
        (ctx,) = sample_workers.SEEN["c1"]
        assert (ctx.hub_id, ctx.child_id, ctx.node_id) == ("hub", "c1", "n1")
        assert (ctx.fencing_token, ctx.incarnation, ctx.restarts) == (41, 0xABC, 0)
        assert ctx.args == {"a": [1, 2]}
        assert dict(ctx.metadata) == {"tag": "x"}
        with pytest.raises(TypeError):
            ctx.metadata["tag"] = "y"  # type: ignore[index]
        assert not ctx.stopping.is_set()
        assert sup.is_running("c1")
        assert sup.token("c1") == 41
        assert sup.token("other") is None
        assert sup.child_ids() == frozenset({"c1"})
        assert len(sup) == 1


async def test_function_target(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(spec("f1", "sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: rec.started("f1") == [0], TIMEOUT)
        assert sample_workers.SEEN["f1"][0].child_id == "f1"


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("Nope", f"module '{MOD}' has no attribute 'Nope'"),
        (
            "sync_function",
            f"target '{MOD}:sync_function' is not an async function or a class with async run(ctx)",
        ),
        (
            "BrokenInit",
            f"constructing '{MOD}:BrokenInit' failed: RuntimeError: no constructor for you",
        ),
        ("raise_at_start", "ValueError: boom"),
        ("raise_after_one_step", "ValueError: boom"),
    ],
)
async def test_start_failures_are_final(no_leaked_tasks: None, attr: str, reason: str) -> None:
    async with running(backoff_initial=0.0) as (sup, rec):
        sup.start(spec("c1", attr, "permanent"), fencing_token=3, incarnation=1)
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        assert rec.calls == [
            ("exited", "c1", 3, WorkerExit("c1", ExitKind.START_FAILED, reason)),
        ]
        assert not sup.is_running("c1")
        assert len(sup) == 0


async def test_unknown_module_is_a_start_failure(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(
            ChildSpec(id="c1", start="no_such_module_xyz:Run"), fencing_token=1, incarnation=1
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        (exit_,) = rec.exits("c1")
        assert exit_.kind is ExitKind.START_FAILED
        assert exit_.reason == (
            "unknown module 'no_such_module_xyz': No module named 'no_such_module_xyz'"
        )


async def test_allow_list_refusal_and_acceptance(no_leaked_tasks: None) -> None:
    async with running(allow=AllowList([f"{MOD}:Sleeper"])) as (sup, rec):
        sup.start(spec("bad", "sleeper"), fencing_token=1, incarnation=1)
        sup.start(spec("good", "Sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: bool(rec.exits("bad") and rec.started("good")), TIMEOUT)
        (exit_,) = rec.exits("bad")
        assert exit_.kind is ExitKind.START_FAILED
        assert exit_.reason == f"start target '{MOD}:sleeper' is not in the allow-list"
        assert "bad" not in sample_workers.SEEN  # never imported as a worker, never run
        assert sup.child_ids() == frozenset({"good"})


async def test_start_misuse() -> None:
    sup = Supervisor(hub_id="hub", node_id="n1", events=Recorder())
    with pytest.raises(HubClosed):
        sup.start(spec("c1", "Sleeper"), fencing_token=1, incarnation=1)
    async with running() as (sup, rec):
        sup.start(spec("c1", "Sleeper"), fencing_token=1, incarnation=1)
        with pytest.raises(ValueError, match="already running"):
            sup.start(spec("c1", "Sleeper"), fencing_token=2, incarnation=1)
        with pytest.raises(RuntimeError, match="already active"):
            await sup.run()
        await wait_until(lambda: bool(rec.started("c1")), TIMEOUT)
    with pytest.raises(HubClosed):  # run() was cancelled
        sup.start(spec("c2", "Sleeper"), fencing_token=1, incarnation=1)


@pytest.mark.parametrize(
    "options",
    [
        {"stop_timeout": 0},
        {"backoff_initial": -1.0},
        {"backoff_initial": 2.0, "backoff_max": 1.0},
    ],
)
def test_constructor_validation(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Supervisor(hub_id="hub", node_id="n1", events=Recorder(), **options)


# ----------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("policy", "exit_as", "restarted", "final"),
    [
        ("permanent", "normal", True, None),
        ("permanent", "crash", True, None),
        ("transient", "normal", False, WorkerExit("c1", ExitKind.NORMAL, "normal")),
        ("transient", "crash", True, None),
        ("temporary", "normal", False, WorkerExit("c1", ExitKind.NORMAL, "normal")),
        ("temporary", "crash", False, WorkerExit("c1", ExitKind.CRASHED, "ValueError: boom")),
    ],
)
async def test_restart_policy(
    no_leaked_tasks: None,
    policy: str,
    exit_as: str,
    restarted: bool,
    final: WorkerExit | None,
) -> None:
    async with running(backoff_initial=0.001, backoff_max=0.001) as (sup, rec):
        sup.start(
            spec("c1", "Scripted", policy, args={"exit": exit_as, "times": 1}),
            fencing_token=9,
            incarnation=1,
        )
        if restarted:
            await wait_until(lambda: rec.started("c1") == [0, 1], TIMEOUT)
            reason = "normal" if exit_as == "normal" else "ValueError: boom"
            assert rec.calls == [
                ("started", "c1", 9, 0),
                ("restarting", "c1", 9, 1, reason),
                ("started", "c1", 9, 1),
            ]
            assert [ctx.restarts for ctx in sample_workers.SEEN["c1"]] == [0, 1]
            # Each instance gets a private copy of args: the first one's mutation is not seen.
            assert "mutated" not in sample_workers.SEEN["c1"][1].args
            assert sup.is_running("c1")
            await sup.stop("c1")
            assert rec.exits("c1") == []
        else:
            await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
            assert rec.calls == [("started", "c1", 9, 0), ("exited", "c1", 9, final)]
            assert not sup.is_running("c1")
            assert sample_workers.runs("c1") == 1


@pytest.mark.parametrize(
    ("policy", "kinds"),
    [
        ("transient", ["started", "exited"]),
        ("temporary", ["started", "exited"]),
    ],
)
async def test_normal_return_inside_start_window_is_a_normal_exit(
    no_leaked_tasks: None, policy: str, kinds: list[str]
) -> None:
    async with running() as (sup, rec):
        sup.start(spec("c1", "return_at_once", policy), fencing_token=1, incarnation=1)
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        assert rec.kinds("c1") == kinds
        assert rec.exits("c1") == [WorkerExit("c1", ExitKind.NORMAL, "normal")]


async def test_cancelled_error_without_a_stop_is_a_crash(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "temporary", args={"exit": "cancel"}),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        (exit_,) = rec.exits("c1")
        assert exit_.kind is ExitKind.CRASHED
        assert exit_.reason.startswith("CancelledError")


async def test_id_is_released_before_the_final_exit_event(no_leaked_tasks: None) -> None:
    class Restarter(Recorder):
        sup: Supervisor | None = None

        def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
            super().worker_exited(child_id, fencing_token, exit)
            assert self.sup is not None
            if fencing_token == 1:  # the hub may start the id again right away
                self.sup.start(spec(child_id, "Sleeper"), fencing_token=2, incarnation=1)

    events = Restarter()
    async with running(events) as (sup, _):
        events.sup = sup
        sup.start(spec("c1", "return_at_once", "temporary"), fencing_token=1, incarnation=1)
        await wait_until(lambda: events.started("c1") == [0, 0], TIMEOUT)
        assert sup.token("c1") == 2


# ----------------------------------------------------------------------------- intensity


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
async def test_intensity_exceeded_is_a_final_crash(
    no_leaked_tasks: None, max_restarts: int
) -> None:
    async with running(backoff_initial=0.001, backoff_max=0.002) as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}, max_restarts=max_restarts),
            fencing_token=5,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        assert rec.started("c1") == list(range(max_restarts + 1))
        assert [n for n, _ in rec.restarting("c1")] == list(range(1, max_restarts + 1))
        (exit_,) = rec.exits("c1")
        assert exit_.kind is ExitKind.CRASHED
        assert exit_.reason == (
            f"restart intensity exceeded: more than {max_restarts} restart(s) within 30s; "
            "last exit: ValueError: boom"
        )
        assert not sup.is_running("c1")


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
async def test_the_final_exit_carries_the_restart_count(
    no_leaked_tasks: None, max_restarts: int
) -> None:
    """The hub writes the parked owner record's ``restarts`` from the final exit."""
    async with running(backoff_initial=0.001, backoff_max=0.002) as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}, max_restarts=max_restarts),
            fencing_token=5,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        (exit_,) = rec.exits("c1")
        assert exit_.restarts == max_restarts == len(rec.restarting("c1"))


async def crash_then_fail_at_start(ctx: Context) -> None:
    """Crashes (past the start window) ``args["crashes"]`` times, then fails at start."""
    if ctx.restarts < ctx.args["crashes"]:
        for _ in range(5):
            await asyncio.sleep(0)
    raise ValueError(f"run {ctx.restarts}")


async def test_a_start_failure_on_a_restart_carries_the_restart_count(
    no_leaked_tasks: None,
) -> None:
    async with running(backoff_initial=0.001, backoff_max=0.002) as (sup, rec):
        sup.start(
            ChildSpec("c1", f"{__name__}:crash_then_fail_at_start", args={"crashes": 2}),
            fencing_token=5,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        assert rec.exits("c1") == [
            WorkerExit("c1", ExitKind.START_FAILED, "ValueError: run 2", restarts=2)
        ]


async def test_permanent_normal_exits_also_count_toward_intensity(no_leaked_tasks: None) -> None:
    async with running(backoff_initial=0.001, backoff_max=0.001) as (sup, rec):
        sup.start(
            spec("c1", "return_at_once", "permanent", max_restarts=2),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        assert rec.started("c1") == [0, 1, 2]
        assert rec.exits("c1")[0].reason.endswith("last exit: normal")


async def test_backoff_grows_and_is_capped(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.core.supervisor")
    async with running(backoff_initial=0.004, backoff_max=0.016) as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}, max_restarts=5),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
    delays = backoffs(caplog, "c1")
    expected = [0.004, 0.008, 0.016, 0.016, 0.016]
    print("backoff delays:", [f"{d:.4f}" for d in delays])
    assert len(delays) == len(expected)
    for delay, base in zip(delays, expected, strict=True):
        assert base * (1 - BACKOFF_JITTER) <= delay <= base


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_backoff_resets_after_running_for_max_seconds(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Each instance "runs" 31 fake seconds (clock advanced on start): never throttled."""
    caplog.set_level(logging.INFO, logger="hub.core.supervisor")
    clock = FakeClock()

    class LongRuns(Recorder):
        def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
            super().worker_started(child_id, fencing_token, restarts)
            clock.now += 31.0

    events = LongRuns()
    async with running(events, backoff_initial=0.002, backoff_max=1.0, clock=clock) as (sup, _):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}, max_restarts=1),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: len(events.started("c1")) >= 6, TIMEOUT)
        await sup.stop("c1")
    assert events.exits("c1") == []  # intensity never exceeded with max_restarts=1
    delays = backoffs(caplog, "c1")
    assert len(delays) >= 5
    assert all(0.002 * (1 - BACKOFF_JITTER) <= d <= 0.002 for d in delays)


async def test_intensity_window_forgets_old_restarts_but_backoff_keeps_growing(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Time passes only during backoff (31 fake seconds): restarts leave the window one by
    one, but no instance ever ran for max_seconds, so the backoff does not reset."""
    caplog.set_level(logging.INFO, logger="hub.core.supervisor")
    clock = FakeClock()

    class SlowBackoff(Recorder):
        def worker_restarting(
            self, child_id: str, fencing_token: int, restarts: int, reason: str
        ) -> None:
            super().worker_restarting(child_id, fencing_token, restarts, reason)
            clock.now += 31.0

    events = SlowBackoff()
    async with running(events, backoff_initial=0.001, backoff_max=0.008, clock=clock) as (
        sup,
        _,
    ):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}, max_restarts=1),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: len(events.started("c1")) >= 6, TIMEOUT)
        await sup.stop("c1")
    assert events.exits("c1") == []
    delays = backoffs(caplog, "c1")
    bases = [0.001, 0.002, 0.004, 0.008, 0.008]
    for delay, base in zip(delays, bases, strict=False):
        assert base * (1 - BACKOFF_JITTER) <= delay <= base


def test_backoff_delay_function() -> None:
    kwargs = {"initial": 0.05, "maximum": 5.0}
    assert [backoff_delay(k, rand=0.0, **kwargs) for k in range(4)] == [0.05, 0.1, 0.2, 0.4]
    assert backoff_delay(20, rand=0.0, **kwargs) == 5.0
    assert backoff_delay(10_000, rand=0.0, **kwargs) == 5.0  # no float overflow
    assert backoff_delay(0, rand=0.999, **kwargs) == pytest.approx(0.05 * (1 - 0.0999))
    assert backoff_delay(0, rand=0.5, initial=0.0, maximum=0.0) == 0.0


# ----------------------------------------------------------------------------- isolation


async def test_a_crash_does_not_affect_other_workers(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(spec("steady", "Sleeper"), fencing_token=1, incarnation=1)
        sup.start(
            spec("crasher", "Scripted", "temporary", args={"exit": "crash"}),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("crasher") and rec.started("steady")), TIMEOUT)
        assert sup.child_ids() == frozenset({"steady"})
        assert "steady" not in sample_workers.STOPPING_AT_CANCEL  # never cancelled
        sup.start(spec("later", "Sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: bool(rec.started("later")), TIMEOUT)


async def test_crash_is_logged_with_child_id_and_fencing_token(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.core.supervisor")
    async with running() as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "temporary", args={"exit": "crash"}),
            fencing_token=77,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
    (record,) = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.child_id == "c1"  # type: ignore[attr-defined]
    assert record.token == 77  # type: ignore[attr-defined]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_long_reasons_are_truncated(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "temporary", args={"exit": "crash", "message": "x" * 10_000}),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.exits("c1")), TIMEOUT)
        (exit_,) = rec.exits("c1")
        assert exit_.reason.startswith("ValueError: xxx")
        assert len(exit_.reason) <= 500


async def test_event_callback_exceptions_are_logged_and_ignored(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(Recorder):
        def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
            super().worker_started(child_id, fencing_token, restarts)
            raise RuntimeError("hub bug")

        def worker_restarting(
            self, child_id: str, fencing_token: int, restarts: int, reason: str
        ) -> None:
            super().worker_restarting(child_id, fencing_token, restarts, reason)
            raise RuntimeError("hub bug")

        def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
            super().worker_exited(child_id, fencing_token, exit)
            raise RuntimeError("hub bug")

    events = Failing()
    async with running(events, backoff_initial=0.001, backoff_max=0.001) as (sup, _):
        sup.start(
            spec("c1", "Scripted", "transient", args={"exit": "crash", "times": 1}),
            fencing_token=1,
            incarnation=1,
        )
        sup.start(spec("c2", "return_at_once", "temporary"), fencing_token=1, incarnation=1)
        await wait_until(
            lambda: bool(events.started("c1") == [0, 1] and events.exits("c2")), TIMEOUT
        )
        assert sup.child_ids() == frozenset({"c1"})
        await sup.stop("c1")
    failures = [r.getMessage() for r in caplog.records if "raised for child" in r.getMessage()]
    assert any(m.startswith("events.worker_started") for m in failures)
    assert any(m.startswith("events.worker_restarting") for m in failures)
    assert any(m.startswith("events.worker_exited") for m in failures)


# ----------------------------------------------------------------------------- stopping


async def test_stop_sets_stopping_cancels_and_awaits(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(spec("c1", "Sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: bool(rec.started("c1")), TIMEOUT)
        await sup.stop("c1")
        assert sample_workers.STOPPING_AT_CANCEL == {"c1": True}
        assert sample_workers.SEEN["c1"][0].stopping.is_set()
        assert not sup.is_running("c1")
        assert rec.calls == [("started", "c1", 1, 0)]  # no event for a requested stop
        await sup.stop("c1")  # already gone: no-op
        await sup.stop("never-started")


async def test_stop_during_restart_backoff(no_leaked_tasks: None) -> None:
    async with running(backoff_initial=60.0, backoff_max=60.0) as (sup, rec):
        sup.start(
            spec("c1", "Scripted", "permanent", args={"exit": "crash"}),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(lambda: bool(rec.restarting("c1")), TIMEOUT)
        assert sup.is_running("c1")  # a live task, waiting for its backoff
        async with asyncio.timeout(TIMEOUT):
            await sup.stop("c1")
        assert not sup.is_running("c1")
        assert rec.kinds("c1") == ["started", "restarting"]


async def test_stop_all_stops_everything(no_leaked_tasks: None) -> None:
    async with running(backoff_initial=60.0, backoff_max=60.0) as (sup, rec):
        ids = [f"s{i}" for i in range(20)]
        for child_id in ids:
            sup.start(spec(child_id, "Sleeper"), fencing_token=1, incarnation=1)
        sup.start(
            spec("backoff", "Scripted", "permanent", args={"exit": "crash"}),
            fencing_token=1,
            incarnation=1,
        )
        await wait_until(
            lambda: all(rec.started(c) for c in ids) and bool(rec.restarting("backoff")), TIMEOUT
        )
        await sup.stop_all()
        assert len(sup) == 0
        assert sample_workers.STOPPING_AT_CANCEL == dict.fromkeys(ids, True)
        assert not any(call[0] == "exited" for call in rec.calls)
        await sup.stop_all()  # nothing left: no-op


async def test_stop_many_stops_only_the_given_ids(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        for child_id in ("a", "b", "c"):
            sup.start(spec(child_id, "Sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: len(rec.calls) == 3, TIMEOUT)
        await sup.stop_many(["a", "c", "a", "unknown"])
        assert sup.child_ids() == frozenset({"b"})
        assert sample_workers.STOPPING_AT_CANCEL == {"a": True, "c": True}
        await sup.stop_many([])
        assert [call[0] for call in rec.calls] == ["started"] * 3


async def test_worker_ignoring_cancellation_is_bounded_by_stop_timeout(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(stop_timeout=0.2) as (sup, rec):
        sup.start(spec("c1", "Stubborn"), fencing_token=4, incarnation=1)
        await wait_until(lambda: bool(rec.started("c1")), TIMEOUT)
        began = time.monotonic()
        await sup.stop("c1")
        elapsed = time.monotonic() - began
        print(f"stop() of a stubborn worker returned after {elapsed:.3f}s (stop_timeout 0.2)")
        assert 0.15 <= elapsed < TIMEOUT
        # Still alive, so its id stays taken: never two instances of one child here.
        assert sup.is_running("c1")
        with pytest.raises(ValueError):
            sup.start(spec("c1", "Sleeper"), fencing_token=5, incarnation=1)
        assert any("ignored cancellation" in r.getMessage() for r in caplog.records)

        # A second stop cancels again: a worker that swallowed one cancellation is
        # interrupted once more (here inside its except block), so self-fencing's stop_all
        # still ends it.
        await sup.stop_all()
        await wait_until(lambda: not sup.is_running("c1"), TIMEOUT)
        assert rec.exits("c1") == []


async def test_cancelling_run_stops_every_worker(no_leaked_tasks: None) -> None:
    recorder = Recorder()
    sup = Supervisor(hub_id="hub", node_id="n1", events=recorder)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as task_group:
        run_task = task_group.create_task(sup.run(ready=ready))
        await ready.wait()
        sup.start(spec("a", "Sleeper"), fencing_token=1, incarnation=1)
        sup.start(spec("b", "sleeper"), fencing_token=1, incarnation=1)
        await wait_until(lambda: bool(recorder.started("a") and recorder.started("b")), TIMEOUT)
        run_task.cancel()
    assert run_task.cancelled()
    assert sample_workers.STOPPING_AT_CANCEL == {"a": True, "b": True}
    assert len(sup) == 0
    assert [call[0] for call in recorder.calls] == ["started", "started"]


async def test_stop_all_of_5000_workers_is_fast(no_leaked_tasks: None) -> None:
    count = 5000
    async with running() as (sup, rec):
        began = time.monotonic()
        for i in range(count):
            sup.start(spec(f"w{i}", "Sleeper"), fencing_token=i, incarnation=1)
        await wait_until(lambda: len(rec.calls) == count, 30.0, interval=0.01)
        started = time.monotonic() - began
        began = time.monotonic()
        await sup.stop_all()
        stopped = time.monotonic() - began
        print(f"{count} workers: started in {started:.3f}s, stop_all in {stopped:.3f}s")
        assert len(sup) == 0
        assert len(sample_workers.STOPPING_AT_CANCEL) == count
        assert stopped < 2.0  # loose sanity ceiling; the printed number is the measurement


# ----------------------------------------------------------------------------- task ownership


@pytest.mark.parametrize(
    "module",
    [
        "worker.py",
        "core/supervisor.py",
        "core/_child_lifecycle.py",
        "core/_restart.py",
        "core/hooks.py",
        "core/hook_events.py",
        "core/hook_handler.py",
        "core/hook_table.py",
        "command.py",
        "messaging/rpc.py",
        "messaging/_rpc_config.py",
        "messaging/_rpc_wire.py",
        "messaging/_rpc_server.py",
        "messaging/_rpc_client.py",
        "operate/cli_ops.py",
        "operate/cli_verb.py",
        "operate/cli_views.py",
        "operate/cli_actions.py",
        "operate/localetcd.py",
        "operate/_etcd_binary.py",
        "operate/_localetcd_server.py",
        "core/reconciler.py",
        "core/executor.py",
        "core/replicas.py",
        "core/owner_records.py",
        "core/worker_state.py",
        "core/workqueue.py",
        "core/plan.py",
        "core/placement_view.py",
    ],
)
def test_no_bare_task_creation(module: str) -> None:
    source = (HUB_DIR / module).read_text()
    bare = re.findall(r"asyncio\.create_task|ensure_future|loop\.create_task", source)
    assert bare == [], f"hub/{module} creates tasks outside a TaskGroup"


async def test_handover_state_not_yet_taken_by_an_instance_is_passed_on(
    no_leaked_tasks: None,
) -> None:
    # A child that received handed-over state and must move on before its first instance
    # ran (a quick second rebalance) hands that state on, not nothing.
    async with running() as (sup, _):
        sup.start(
            spec("k", "Keeper"),
            fencing_token=1,
            incarnation=1,
            state={"hits": 7},
            state_source="handover",
        )
        states = await sup.stop_many(["k"], collect_state=True)
    assert states == {"k": {"hits": 7}}


async def test_handover_state_of_a_running_instance_wins(no_leaked_tasks: None) -> None:
    async with running() as (sup, rec):
        sup.start(
            spec("k", "Keeper"),
            fencing_token=1,
            incarnation=1,
            state={"hits": 7},
            state_source="handover",
        )
        await wait_until(lambda: len(rec.calls) == 1, TIMEOUT)
        states = await sup.stop_many(["k"], collect_state=True)
    assert states == {"k": {"hits": 7}}
