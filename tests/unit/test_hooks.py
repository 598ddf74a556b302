"""hub.core.hooks: ordering, sync and async handlers, isolation, timeouts, alter chain, docs
(no etcd).

Synchronisation is by events and ``wait_until``, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.util
import logging
import re
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.wait import wait_until

from hub.core.hooks import (
    AlterPayload,
    ChildrenMigrated,
    ChildrenRegistered,
    ChildrenUnregistered,
    ChildStarted,
    ChildStarting,
    ChildStopped,
    DuplicateHook,
    HookEvent,
    HookHandler,
    HookName,
    HookPayload,
    Hooks,
    HookStats,
    HubStopping,
    NodeJoined,
    NodeLeft,
    hook_name,
    hook_table_markdown,
    payload_type,
)
from hub.model import ChildHandle, ChildSpec, OwnerState

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0


def started(child_id: str = "c1", restarts: int = 0) -> ChildStarted:
    return ChildStarted(child_id=child_id, node_id="n1", fencing_token=7, restarts=restarts)


def starting(*, migrated: bool = True, args: Any = None) -> ChildStarting:
    spec = ChildSpec(id="c1", start="pkg.mod:Worker", args=args if args is not None else {})
    return ChildStarting(
        spec=spec, node_id="n1", fencing_token=7, migrated=migrated, handover=False
    )


def with_args(event: ChildStarting, **changes: Any) -> ChildStarting:
    args = {**event.spec.args, **changes}
    return dataclasses.replace(event, spec=dataclasses.replace(event.spec, args=args))


@contextlib.asynccontextmanager
async def running(hooks: Hooks) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``hooks.run()`` in a task group for the duration of the block."""
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(hooks.run(ready=ready))
        try:
            async with asyncio.timeout(TIMEOUT):
                await ready.wait()
            assert hooks.is_running
            yield task
        finally:
            task.cancel()


def recorder(log: list[str], tag: str) -> Callable[[HookPayload], None]:
    def record(payload: HookPayload) -> None:
        log.append(tag)

    return record


# -- registration and ordering ---------------------------------------------------------


def test_priority_order_ties_in_registration_order() -> None:
    hooks = Hooks()
    calls: list[str] = []
    for handler_id, priority in [("a", 0), ("b", 10), ("c", 0), ("d", 100), ("e", -5), ("f", 10)]:
        hooks.register(
            HookName.CHILD_STARTED, HookHandler(handler_id, recorder(calls, handler_id), priority)
        )
    hooks.dispatch(started())
    assert calls == ["d", "b", "f", "a", "c", "e"]
    assert [h.id for h in hooks.handlers("child_started")] == calls
    assert hooks.stats == HookStats(dispatched=6)


def test_handlers_are_per_hook() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.register(HookName.CHILD_STARTED, HookHandler("x", recorder(calls, "started")))
    hooks.register(HookName.CHILD_STOPPED, HookHandler("x", recorder(calls, "stopped")))
    hooks.dispatch(ChildStopped(child_id="c1", fencing_token=7, reason="released"))
    assert calls == ["stopped"]
    assert hooks.has_handlers(HookName.CHILD_STARTED)
    assert not hooks.has_handlers(HookName.NODE_JOINED)
    hooks.dispatch(NodeJoined(node_id="n2", incarnation=1, revision=3))  # no handlers: no-op
    assert hooks.stats.dispatched == 1


def test_duplicate_id_refused() -> None:
    hooks = Hooks()
    hooks.register(HookName.NODE_JOINED, HookHandler("h", lambda e: None))
    with pytest.raises(DuplicateHook) as info:
        hooks.register(HookName.NODE_JOINED, HookHandler("h", lambda e: None, priority=5))
    assert isinstance(info.value, ValueError)
    assert (info.value.hook, info.value.handler_id) == (HookName.NODE_JOINED, "h")
    # the same id under another hook is fine
    hooks.register(HookName.NODE_LEFT, HookHandler("h", lambda e: None))


def test_register_many_is_all_or_nothing() -> None:
    hooks = Hooks()
    hooks.register(HookName.NODE_JOINED, HookHandler("taken", lambda e: None))
    with pytest.raises(DuplicateHook):
        hooks.register_many(
            HookName.NODE_JOINED,
            [HookHandler("new", lambda e: None), HookHandler("taken", lambda e: None)],
        )
    with pytest.raises(DuplicateHook):
        hooks.register_many(
            HookName.NODE_JOINED, [HookHandler("x", lambda e: None), HookHandler("x", print)]
        )
    assert [h.id for h in hooks.handlers(HookName.NODE_JOINED)] == ["taken"]


def test_cancel_known_and_unknown() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.register(HookName.CHILD_STARTED, HookHandler("a", recorder(calls, "a")))
    hooks.register(HookName.CHILD_STARTED, HookHandler("b", recorder(calls, "b")))
    assert hooks.cancel(HookName.CHILD_STARTED, "a") is True
    assert hooks.cancel(HookName.CHILD_STARTED, "a") is False
    assert hooks.cancel("child_started", "never-registered") is False
    assert hooks.cancel(HookName.NODE_LEFT, "b") is False  # another hook's id
    hooks.dispatch(started())
    assert calls == ["b"]
    assert hooks.cancel(HookName.CHILD_STARTED, "b") is True
    assert not hooks.has_handlers(HookName.CHILD_STARTED)
    # a cancelled id may be registered again
    hooks.register(HookName.CHILD_STARTED, HookHandler("a", recorder(calls, "a2")))
    hooks.dispatch(started())
    assert calls == ["b", "a2"]


def test_changes_during_dispatch_apply_to_the_next_one() -> None:
    hooks = Hooks()
    calls: list[str] = []

    def first(event: ChildStarted) -> None:
        calls.append("first")
        hooks.cancel(HookName.CHILD_STARTED, "second")
        hooks.register(HookName.CHILD_STARTED, HookHandler("third", recorder(calls, "third")))

    hooks.register(HookName.CHILD_STARTED, HookHandler("first", first, priority=1))
    hooks.register(HookName.CHILD_STARTED, HookHandler("second", recorder(calls, "second")))
    hooks.dispatch(started())
    assert calls == ["first", "second"]


def test_unknown_names_and_bad_handlers_are_refused() -> None:
    hooks = Hooks()
    with pytest.raises(ValueError, match=r"unknown hook 'child_spawned'.*child_started"):
        hooks.register("child_spawned", HookHandler("a", print))
    with pytest.raises(ValueError, match="unknown hook"):
        hooks.cancel("nope", "a")
    with pytest.raises(TypeError):
        hooks.register(HookName.NODE_LEFT, print)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HookHandler("", print)
    with pytest.raises(TypeError):
        HookHandler("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HookHandler("a", print, priority=1.5)  # type: ignore[arg-type]
    assert hook_name("node_left") is HookName.NODE_LEFT
    for bad in ({"handler_timeout": 0}, {"queue_size": 0}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            Hooks(**bad)


def test_from_mapping_validates_names() -> None:
    calls: list[str] = []
    hooks = Hooks.from_mapping(
        {
            HookName.CHILD_STARTED: [HookHandler("a", recorder(calls, "a"))],
            "child_stopped": (HookHandler("b", recorder(calls, "b"), priority=3),),
        },
        handler_timeout=1.0,
    )
    assert hooks.handler_timeout == 1.0
    hooks.dispatch(started())
    hooks.dispatch(ChildStopped(child_id="c1", fencing_token=7, reason="normal"))
    assert calls == ["a", "b"]
    assert Hooks.from_mapping(None).handlers(HookName.CHILD_STARTED) == ()
    with pytest.raises(ValueError) as info:
        Hooks.from_mapping({"pre_cluster_join_hook": [HookHandler("a", print)]})
    for name in HookName:
        assert name.value in str(info.value)
    with pytest.raises(DuplicateHook):
        Hooks.from_mapping({"node_left": [HookHandler("a", print), HookHandler("a", print)]})
    with pytest.raises(TypeError, match="sequence of HookHandler"):
        Hooks.from_mapping({"node_left": HookHandler("a", print)})  # type: ignore[dict-item]


# -- sync handler isolation ------------------------------------------------------------


def test_raising_sync_handler_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    calls: list[str] = []

    def boom(event: ChildStarted) -> None:
        raise RuntimeError("handler bug")

    def cancels(event: ChildStarted) -> None:
        raise asyncio.CancelledError  # a sync handler cannot be a cancellation target

    hooks.register(HookName.CHILD_STARTED, HookHandler("boom", boom, priority=2))
    hooks.register(HookName.CHILD_STARTED, HookHandler("cancels", cancels, priority=1))
    hooks.register(HookName.CHILD_STARTED, HookHandler("next", recorder(calls, "next")))
    with caplog.at_level(logging.ERROR, logger="hub.core.hooks"):
        hooks.dispatch(started())  # must not raise
    assert calls == ["next"]
    assert hooks.stats == HookStats(dispatched=3, failed=2)
    messages = [r.getMessage() for r in caplog.records]
    assert any("'boom' raised" in m for m in messages)
    assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


def test_dispatch_refuses_an_alter_payload(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("a", recorder(calls, "a")))
    with caplog.at_level(logging.ERROR, logger="hub.core.hooks"):
        hooks.dispatch(starting())  # type: ignore[arg-type]
    assert calls == []
    assert "dispatch_alter" in caplog.text


# -- async handlers --------------------------------------------------------------------


async def test_sync_runs_at_once_async_runs_on_the_task_group(no_leaked_tasks: None) -> None:
    hooks = Hooks()
    calls: list[str] = []
    done = asyncio.Event()

    async def later(event: ChildStarted) -> None:
        calls.append(f"async:{event.child_id}")
        done.set()

    hooks.register(HookName.CHILD_STARTED, HookHandler("async", later, priority=5))
    hooks.register(HookName.CHILD_STARTED, HookHandler("sync", recorder(calls, "sync")))
    hooks.dispatch(started())
    assert calls == ["sync"]  # queued, not yet run: dispatch never waits
    assert hooks.pending == 1
    async with running(hooks):
        async with asyncio.timeout(TIMEOUT):
            await done.wait()
            await hooks.wait_idle()
    assert calls == ["sync", "async:c1"]
    assert hooks.pending == 0
    assert hooks.stats == HookStats(dispatched=2)


async def test_async_handlers_keep_dispatch_order(no_leaked_tasks: None) -> None:
    hooks = Hooks()
    seen: list[tuple[str, int]] = []

    async def first(event: ChildStarted) -> None:
        seen.append(("first", event.restarts))

    async def second(event: ChildStarted) -> None:
        seen.append(("second", event.restarts))

    hooks.register(HookName.CHILD_STARTED, HookHandler("second", second))
    hooks.register(HookName.CHILD_STARTED, HookHandler("first", first, priority=1))
    async with running(hooks):
        for restarts in range(3):
            hooks.dispatch(started(restarts=restarts))
        async with asyncio.timeout(TIMEOUT):
            await hooks.wait_idle()
    assert seen == [(name, n) for n in range(3) for name in ("first", "second")]


async def test_raising_async_handler_is_isolated(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks()
    calls: list[str] = []

    async def boom(event: ChildStarted) -> None:
        raise RuntimeError("async handler bug")

    async def own_cancel(event: ChildStarted) -> None:
        raise asyncio.CancelledError  # its own, not the worker's: must not stop run()

    async def fine(event: ChildStarted) -> None:
        calls.append(event.child_id)

    hooks.register(HookName.CHILD_STARTED, HookHandler("boom", boom, priority=2))
    hooks.register(HookName.CHILD_STARTED, HookHandler("own-cancel", own_cancel, priority=1))
    hooks.register(HookName.CHILD_STARTED, HookHandler("fine", fine))
    with caplog.at_level(logging.ERROR, logger="hub.core.hooks"):
        async with running(hooks) as task:
            hooks.dispatch(started("c1"))
            hooks.dispatch(started("c2"))
            async with asyncio.timeout(TIMEOUT):
                await hooks.wait_idle()
            assert not task.done()
    assert calls == ["c1", "c2"]
    assert hooks.stats == HookStats(dispatched=6, failed=4)
    assert "async handler bug" in caplog.text


async def test_slow_async_handler_is_cancelled_after_the_timeout(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks(handler_timeout=0.05)
    entered, cancelled = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def stuck(event: ChildStarted) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def after(event: ChildStarted) -> None:
        calls.append("after")

    hooks.register(HookName.CHILD_STARTED, HookHandler("stuck", stuck, priority=1))
    hooks.register(HookName.CHILD_STARTED, HookHandler("after", after))
    with caplog.at_level(logging.WARNING, logger="hub.core.hooks"):
        async with running(hooks) as task:
            hooks.dispatch(started())
            async with asyncio.timeout(TIMEOUT):
                await entered.wait()
                await cancelled.wait()
                await hooks.wait_idle()
            assert not task.done()
    assert calls == ["after"]
    assert hooks.stats == HookStats(dispatched=2, timed_out=1)
    assert "'stuck' timed out" in caplog.text


async def test_timeout_error_raised_by_a_handler_is_a_failure(no_leaked_tasks: None) -> None:
    hooks = Hooks()

    async def raises_timeout(event: ChildStarted) -> None:
        raise TimeoutError("its own deadline")

    hooks.register(HookName.CHILD_STARTED, HookHandler("t", raises_timeout))
    async with running(hooks):
        hooks.dispatch(started())
        async with asyncio.timeout(TIMEOUT):
            await hooks.wait_idle()
    assert hooks.stats == HookStats(dispatched=1, failed=1)


async def test_full_queue_drops_and_counts(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks(queue_size=2)
    calls: list[int] = []

    async def handler(event: ChildStarted) -> None:
        calls.append(event.restarts)

    hooks.register(HookName.CHILD_STARTED, HookHandler("h", handler))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dropped coroutine must be closed, not leaked
        with caplog.at_level(logging.WARNING, logger="hub.core.hooks"):
            for restarts in range(5):
                hooks.dispatch(started(restarts=restarts))  # run() not active yet
        gc.collect()
    assert hooks.stats == HookStats(dispatched=2, dropped=3)
    assert len(re.findall("hook queue full", caplog.text)) == 1  # once per episode
    async with running(hooks):
        async with asyncio.timeout(TIMEOUT):
            await hooks.wait_idle()
    assert calls == [0, 1]


async def test_run_cancels_cleanly_and_drops_queued_jobs(no_leaked_tasks: None) -> None:
    hooks = Hooks()
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck(event: ChildStarted) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def never(event: ChildStopped) -> None:
        raise AssertionError("a job still queued when run() ends must not run")

    hooks.register(HookName.CHILD_STARTED, HookHandler("stuck", stuck))
    hooks.register(HookName.CHILD_STOPPED, HookHandler("never", never))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dropped coroutine is closed, not leaked
        async with running(hooks) as task:
            with pytest.raises(RuntimeError, match="already active"):
                await hooks.run()
            hooks.dispatch(started())
            hooks.dispatch(ChildStopped(child_id="c1", fencing_token=7, reason="shutdown"))
            async with asyncio.timeout(TIMEOUT):
                await entered.wait()
            assert hooks.pending == 1  # queued behind the stuck handler
        gc.collect()
    assert task.cancelled()
    assert not hooks.is_running
    assert cancelled.is_set()  # the running handler was cancelled with run()
    assert hooks.pending == 0
    assert hooks.stats == HookStats(dispatched=1, dropped=1)
    async with asyncio.timeout(TIMEOUT):
        await hooks.wait_idle()  # nothing is left unaccounted for


async def test_concurrent_workers(no_leaked_tasks: None) -> None:
    hooks = Hooks(concurrency=3)
    inside: set[str] = set()
    release = asyncio.Event()

    async def blocks(event: ChildStarted) -> None:
        inside.add(event.child_id)
        await release.wait()

    hooks.register(HookName.CHILD_STARTED, HookHandler("blocks", blocks))
    async with running(hooks):
        for child_id in ("a", "b", "c"):
            hooks.dispatch(started(child_id))
        await wait_until(lambda: inside == {"a", "b", "c"}, TIMEOUT)
        release.set()
        async with asyncio.timeout(TIMEOUT):
            await hooks.wait_idle()
    assert hooks.stats == HookStats(dispatched=3)


# -- alter chain -----------------------------------------------------------------------


async def test_alter_chain_in_priority_order_passes_the_altered_payload() -> None:
    hooks = Hooks()
    seen: list[Any] = []

    def add_mode(event: ChildStarting) -> ChildStarting | None:
        seen.append(("mode", dict(event.spec.args)))
        return with_args(event, mode="store") if event.migrated else None

    async def add_trace(event: ChildStarting) -> ChildStarting:
        seen.append(("trace", dict(event.spec.args)))
        return with_args(event, trace=True)

    def keep(event: ChildStarting) -> None:
        seen.append(("keep", dict(event.spec.args)))

    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("keep", keep, priority=-1))
    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("trace", add_trace))
    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("mode", add_mode, priority=10))
    original = starting(args={"n": 1})
    result = await hooks.dispatch_alter(original)
    assert seen == [
        ("mode", {"n": 1}),
        ("trace", {"n": 1, "mode": "store"}),
        ("keep", {"n": 1, "mode": "store", "trace": True}),
    ]
    assert result.spec.args == {"n": 1, "mode": "store", "trace": True}
    assert result.spec.args_json == '{"mode":"store","n":1,"trace":true}'
    assert original.spec.args == {"n": 1}  # payloads are values: nothing was mutated
    assert hooks.stats == HookStats(dispatched=3)
    # a first start is left alone by add_mode
    assert (await hooks.dispatch_alter(starting(migrated=False))).spec.args == {"trace": True}


async def test_alter_chain_without_handlers_returns_the_payload() -> None:
    payload = starting()
    assert await Hooks().dispatch_alter(payload) is payload


async def test_alter_chain_skips_bad_handlers(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks(handler_timeout=0.05)

    def raises(event: ChildStarting) -> ChildStarting:
        raise RuntimeError("alter bug")

    def wrong_type(event: ChildStarting) -> Any:
        return {"spec": event.spec}

    def renames(event: ChildStarting) -> ChildStarting:
        return dataclasses.replace(event, spec=dataclasses.replace(event.spec, id="other"))

    def refences(event: ChildStarting) -> ChildStarting:
        return dataclasses.replace(event, fencing_token=event.fencing_token + 1)

    def not_a_spec(event: ChildStarting) -> ChildStarting:
        return dataclasses.replace(event, spec={"id": "c1"})  # type: ignore[arg-type]

    async def too_slow(event: ChildStarting) -> ChildStarting:
        await asyncio.Event().wait()
        return event

    async def async_raises(event: ChildStarting) -> ChildStarting:
        raise ValueError("async alter bug")

    def good(event: ChildStarting) -> ChildStarting:
        return with_args(event, good=True)

    bad = [raises, wrong_type, renames, refences, not_a_spec, too_slow, async_raises]
    for priority, callback in enumerate(reversed(bad), start=1):
        hooks.register(
            HookName.CHILD_DATA_ALTER, HookHandler(callback.__name__, callback, priority)
        )
    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("good", good))
    original = starting(args={"n": 1})
    with caplog.at_level(logging.WARNING, logger="hub.core.hooks"):
        result = await hooks.dispatch_alter(original)
    assert result.spec.args == {"n": 1, "good": True}
    assert (result.spec.id, result.fencing_token) == ("c1", 7)
    assert hooks.stats == HookStats(dispatched=8, failed=6, timed_out=1)
    for text in (
        "alter bug",
        "returned dict",
        "spec id changed",
        "fencing_token may not change",
        "spec must be a ChildSpec",
        "'too_slow' timed out",
        "async alter bug",
    ):
        assert text in caplog.text


async def test_alter_chain_does_not_swallow_the_callers_cancellation(
    no_leaked_tasks: None,
) -> None:
    hooks = Hooks()
    entered = asyncio.Event()

    async def stuck(event: ChildStarting) -> None:
        entered.set()
        await asyncio.Event().wait()

    hooks.register(HookName.CHILD_DATA_ALTER, HookHandler("stuck", stuck))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(hooks.dispatch_alter(starting()))
        async with asyncio.timeout(TIMEOUT):
            await entered.wait()
        task.cancel()
    assert task.cancelled()
    assert hooks.stats == HookStats(dispatched=1)


# -- the catalogue: names, payloads, docs ----------------------------------------------


def test_every_hook_has_one_payload_class_and_a_distinct_description() -> None:
    classes = [payload_type(name) for name in HookName]
    assert len(set(classes)) == len(classes)
    descriptions = [name.description for name in HookName]
    assert all(d.strip() and "\n" not in d for d in descriptions)
    assert len(set(descriptions)) == len(descriptions)
    for name in HookName:
        cls = payload_type(name)
        assert cls.hook is name
        assert name.fires_on in {"every node", "this node"}
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert issubclass(cls, AlterPayload if name.is_alter else HookEvent)
        assert re.fullmatch(r"[A-Z][A-Za-z]+", cls.__name__)
    assert [name for name in HookName if name.is_alter] == [HookName.CHILD_DATA_ALTER]
    registry_hooks = {
        HookName.NODE_JOINED,
        HookName.NODE_LEFT,
        HookName.CHILDREN_REGISTERED,
        HookName.CHILDREN_UNREGISTERED,
    }
    assert {name for name in HookName if name.fires_on == "every node"} == registry_hooks


def test_payloads_are_immutable_values() -> None:
    ids: Any = ["a", "b"]
    event = NodeLeft(node_id="n2", incarnation=5, graceful=None, child_ids=ids, revision=9)
    assert event.child_ids == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.node_id = "n3"  # type: ignore[misc]
    migrated = ChildrenMigrated(targets={"a": "n2"})
    with pytest.raises(TypeError):
        migrated.targets["a"] = "n3"  # type: ignore[index]
    handle = ChildHandle("a", "n1", 5, 11, OwnerState.RUNNING, 0.0)
    handles: Any = [handle]
    assert ChildrenRegistered(handles=handles, revision=12).handles == (handle,)
    pairs: Any = [["a", "n1"]]
    assert ChildrenUnregistered(children=pairs, revision=13).children == (("a", "n1"),)
    assert HubStopping(node_id="n1", drain=True).hook is HookName.HUB_STOPPING


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_hooks_doc", ROOT / "scripts/gen_hooks_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_hook_table_is_up_to_date() -> None:
    script = _load_script()
    committed = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert script.render(committed) == committed, "run scripts/gen_hooks_doc.py"
    assert hook_table_markdown() in committed
    for name in HookName:
        assert f"| `{name.value}`" in committed


def test_table_lists_every_payload_field() -> None:
    table = hook_table_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(HookName)
    for row, name in zip(rows, HookName, strict=True):
        cls = payload_type(name)
        assert f"`{cls.__name__}`" in row
        for field in dataclasses.fields(cls):
            assert f"`{field.name}: " in row
        assert row.count(" | ") == 3  # pipes inside cells are escaped
