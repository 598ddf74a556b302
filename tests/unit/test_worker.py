"""hub.worker: Context, AllowList, resolve_target and validate_target (no etcd)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sample_workers

from hub.errors import ConfigError, TargetNotAllowed, WorkerStartFailed
from hub.worker import (
    MAX_REASON_CHARS,
    AllowList,
    Context,
    describe_exception,
    resolve_target,
    validate_target,
)

MOD = sample_workers.__name__


@pytest.fixture(autouse=True)
def _reset_samples() -> Iterator[None]:
    sample_workers.reset()
    yield
    sample_workers.reset()


def make_ctx(child_id: str = "c1", **overrides: object) -> Context:
    fields: dict[str, object] = {
        "hub_id": "hub",
        "child_id": child_id,
        "node_id": "n1",
        "fencing_token": 7,
        "incarnation": 0x1234,
        "args": {"k": 1},
        "metadata": {"tag": "t"},
    }
    fields.update(overrides)
    return Context(**fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- Context


def test_context_fields_defaults_and_immutability() -> None:
    ctx = make_ctx()
    assert (ctx.hub_id, ctx.child_id, ctx.node_id) == ("hub", "c1", "n1")
    assert (ctx.fencing_token, ctx.incarnation) == (7, 0x1234)
    assert ctx.args == {"k": 1}
    assert ctx.metadata == {"tag": "t"}
    assert ctx.restarts == 0
    assert isinstance(ctx.stopping, asyncio.Event)
    assert not ctx.stopping.is_set()
    assert not hasattr(ctx, "__dict__")  # slots
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.fencing_token = 8  # type: ignore[misc]
    assert make_ctx().stopping is not ctx.stopping


# ----------------------------------------------------------------------------- AllowList


@pytest.mark.parametrize(
    ("patterns", "target", "allowed"),
    [
        (["app.rooms:*"], "app.rooms:Room", True),
        (["app.rooms:*"], "app.rooms:Lobby.Worker", True),
        (["app.rooms:*"], "app.roomsx:Room", False),
        (["app.*"], "app.rooms:Room", True),
        (["app.*"], "apps.rooms:Room", False),
        (["app.rooms:Room"], "app.rooms:Room", True),
        (["app.rooms:Room"], "app.rooms:Room2", False),
        (["app.rooms:Room"], "App.rooms:Room", False),  # case-sensitive
        (["x:*", "hub.command:Command"], "hub.command:Command", True),
        ([], "app.rooms:Room", False),
    ],
)
def test_allow_list_matches_full_target(patterns: list[str], target: str, allowed: bool) -> None:
    allow = AllowList(patterns)
    assert allow.allows(target) is allowed
    if allowed:
        allow.check(target)
    else:
        with pytest.raises(TargetNotAllowed) as info:
            allow.check(target)
        assert info.value.target == target


def test_allow_list_value_semantics_and_misuse() -> None:
    assert AllowList(["a:*", "b:*"]).patterns == ("a:*", "b:*")
    assert AllowList(("a:*",)) == AllowList(["a:*"])
    assert hash(AllowList(["a:*"])) == hash(AllowList(("a:*",)))
    assert "a:*" in repr(AllowList(["a:*"]))
    with pytest.raises(ConfigError):
        AllowList("app.*")  # a bare string would be split into characters
    with pytest.raises(ConfigError):
        AllowList(["ok:*", ""])
    with pytest.raises(ConfigError):
        AllowList(["ok:*", 3])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- resolve_target


async def test_class_target_builds_a_fresh_instance_per_resolution() -> None:
    run_a = resolve_target(f"{MOD}:Outer.Inner")
    run_b = resolve_target(f"{MOD}:Outer.Inner")
    assert getattr(run_a, "__self__", None) is not None
    assert run_a.__self__ is not run_b.__self__  # type: ignore[attr-defined]
    await run_a(make_ctx("inner"))
    assert [c.child_id for c in sample_workers.SEEN["inner"]] == ["inner"]


async def test_function_target_is_returned_as_is() -> None:
    run = resolve_target(f"{MOD}:return_at_once")
    assert run is sample_workers.return_at_once
    ctx = make_ctx("fn")
    await run(ctx)
    assert sample_workers.SEEN["fn"] == [ctx]


def test_allow_list_is_checked_before_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    with pytest.raises(TargetNotAllowed):
        resolve_target("evil.module:run", AllowList([f"{MOD}:*"]))
    assert imported == []
    assert validate_target("evil.module:run", AllowList([f"{MOD}:*"])) == (
        "start target 'evil.module:run' is not in the allow-list"
    )


def test_allowed_target_resolves() -> None:
    allow = AllowList([f"{MOD}:*"])
    assert resolve_target(f"{MOD}:sleeper", allow) is sample_workers.sleeper
    assert validate_target(f"{MOD}:Sleeper", allow) is None


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (
            "no_such_module_xyz:run",
            "unknown module 'no_such_module_xyz': No module named 'no_such_module_xyz'",
        ),
        (
            "no_such_pkg_xyz.sub:run",
            "unknown module 'no_such_pkg_xyz.sub': No module named 'no_such_pkg_xyz'",
        ),
        (f"{MOD}:Nope", f"module '{MOD}' has no attribute 'Nope'"),
        (f"{MOD}:Outer.Nope", f"module '{MOD}' has no attribute 'Outer.Nope'"),
        (
            f"{MOD}:sync_function",
            f"target '{MOD}:sync_function' is not an async function or a class with async run(ctx)",
        ),
        (
            f"{MOD}:SyncRun",
            f"target '{MOD}:SyncRun' is not an async function or a class with async run(ctx)",
        ),
        (
            f"{MOD}:NOT_CALLABLE",
            f"target '{MOD}:NOT_CALLABLE' is not an async function or a class with async run(ctx)",
        ),
        ("no_colon", "target 'no_colon' must look like 'package.module:attr'"),
        ("mod:", "target 'mod:' must look like 'package.module:attr'"),
        (".rel:run", "target '.rel:run' must look like 'package.module:attr'"),
        ("a b:run", "target 'a b:run' must look like 'package.module:attr'"),
    ],
)
def test_resolution_errors_have_clear_reasons(target: str, reason: str) -> None:
    with pytest.raises(WorkerStartFailed) as info:
        resolve_target(target, child_id="c9")
    assert info.value.reason == reason
    assert info.value.child_id == "c9"
    assert validate_target(target) == reason


def test_constructor_failure_is_a_start_failure_but_validation_does_not_construct() -> None:
    with pytest.raises(WorkerStartFailed) as info:
        resolve_target(f"{MOD}:BrokenInit", child_id="c1")
    assert info.value.reason == (
        f"constructing '{MOD}:BrokenInit' failed: RuntimeError: no constructor for you"
    )
    assert validate_target(f"{MOD}:BrokenInit") is None


def test_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ph_broken_mod.py").write_text("raise RuntimeError('bad import')\n")
    (tmp_path / "ph_missing_dep.py").write_text("import ph_not_installed_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert validate_target("ph_broken_mod:run") == (
        "module 'ph_broken_mod' failed to import: RuntimeError: bad import"
    )
    # The module exists; what is missing is one of its imports: not "unknown module".
    assert validate_target("ph_missing_dep:run") == (
        "module 'ph_missing_dep' failed to import: "
        "ModuleNotFoundError: No module named 'ph_not_installed_dep'"
    )


# ----------------------------------------------------------------------------- reasons


def test_describe_exception_is_short_and_typed() -> None:
    assert describe_exception(ValueError("boom")) == "ValueError: boom"
    assert describe_exception(KeyError()) == "KeyError"
    long = describe_exception(RuntimeError("x" * 10_000))
    assert len(long) == MAX_REASON_CHARS
    assert long.startswith("RuntimeError: xxx")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert describe_exception(Unprintable()) == "Unprintable: <unprintable>"
