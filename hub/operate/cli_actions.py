"""Write verbs of ``processhub``: ``start``, ``stop``, ``move`` and ``drain``.

Each connects as a :class:`hub.client.HubClient` (see :mod:`hub.operate.cli_verb`), writes
its request through the client and, with ``--wait`` (``start``, ``stop``) or unless
``--no-wait`` (``move``, ``drain``), waits up to ``--timeout`` for the cluster to carry it
out. Usage errors (a bad spec file, both ``--file`` and ``ID TARGET``, a timeout <= 0) are
raised before anything connects. Bulk starts and drains show a progress bar on an
interactive stderr. Exit codes: 0 ok, 1 some child failed or a runtime failure, 2 usage,
3 unknown child or node (``stop``: any id not found).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from hub.errors import ConfigError, InvalidSpec, UnknownChild, UnknownNode
from hub.model import ChildSpec
from hub.operate.cli_connect import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK
from hub.operate.cli_render import progress_bar, progress_wanted, track
from hub.operate.cli_verb import (
    _common_options,
    _connect,
    _error,
    _handle_json,
    _print_json,
    _progress_option,
    _run,
)

__all__ = ["drain_parser", "move_parser", "start_parser", "stop_parser"]


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


# -- start -------------------------------------------------------------------------------

_SPEC_FIELDS = frozenset(
    {"id", "start", "args", "restart", "metadata", "max_restarts", "max_seconds", "nodes", "tag"}
)


def start_parser(sub: Any) -> None:
    p = sub.add_parser("start", help="start a child (or many with --file)")
    p.add_argument("id", nargs="?", help="child id")
    p.add_argument("target", nargs="?", help="start target 'package.module:attr'")
    p.add_argument("--args", dest="child_args", default=None, help="worker args as JSON")
    p.add_argument("--tag", help="metadata tag")
    p.add_argument("--restart", help="permanent, transient or temporary")
    p.add_argument("--node", action="append", default=[], help="pin to node (repeatable)")
    p.add_argument(
        "--file",
        help="specs {id, start, args, ...}: a JSON list, or JSON Lines (one spec per line)",
    )
    p.add_argument("--wait", action="store_true", help="wait until the children run")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    _progress_option(p)
    _common_options(p)
    p.set_defaults(func=_run(_cmd_start))


def _specs_from_args(args: argparse.Namespace) -> list[ChildSpec]:
    if args.file:
        if args.id or args.target or args.child_args is not None or args.node:
            raise ConfigError("start: give either ID TARGET [options] or --file, not both")
        return [_spec_from_item(item, args, where) for where, item in _spec_items(args.file)]
    if not args.id or not args.target:
        raise ConfigError("start: ID and TARGET are required (or --file)")
    item: dict[str, Any] = {"id": args.id, "start": args.target}
    if args.child_args is not None:
        item["args"] = _parse_json(args.child_args, "--args")
    if args.node:
        item["nodes"] = args.node
    return [_spec_from_item(item, args, "start")]


def _spec_items(path: str) -> list[tuple[str, Any]]:
    """The items of a spec file, each with where it came from (for error messages).

    A file starting with ``[`` is one JSON list; anything else is JSON Lines, where blank
    lines and ``#`` comments are skipped.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text.lstrip().startswith("["):
        items = _parse_json(text, path)
        if not isinstance(items, list):
            raise ConfigError(f"{path}: expected a JSON list of specs")
        numbered = [(f"{path}[{i}]", item) for i, item in enumerate(items)]
    else:
        numbered = [
            (f"{path} line {n}", _parse_json(line, f"{path} line {n}"))
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not numbered:
        raise ConfigError(f"{path}: no specs in it")
    return numbered


def _spec_from_item(item: Any, args: argparse.Namespace, where: str) -> ChildSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: a spec must be a JSON object")
    unknown = set(item) - _SPEC_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown spec fields {sorted(unknown)}")
    if "id" not in item or "start" not in item:
        raise ConfigError(f"{where}: 'id' and 'start' are required")
    fields = dict(item)
    metadata = fields.pop("metadata", None) or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: metadata must be an object")
    tag = fields.pop("tag", None) or args.tag
    if tag is not None:
        metadata = {**metadata, "tag": tag}
    fields["metadata"] = metadata
    if args.restart and "restart" not in fields:
        fields["restart"] = args.restart
    nodes = fields.get("nodes")
    if nodes is not None:
        if isinstance(nodes, str) or not isinstance(nodes, list):
            raise ConfigError(f"{where}: nodes must be a list of node ids")
        fields["nodes"] = tuple(nodes)
    try:
        return ChildSpec(**fields)
    except (InvalidSpec, TypeError, ValueError) as exc:  # a wrongly typed field
        raise InvalidSpec(f"{where}: {exc}") from None


async def _cmd_start(args: argparse.Namespace) -> int:
    specs = _specs_from_args(args)  # usage errors before connecting
    if not args.timeout > 0:
        raise ConfigError("--timeout must be > 0")
    async with _connect(args) as client:
        members = client.registry.nodes
        for spec in specs:
            for node in spec.nodes:
                if node not in members:
                    raise UnknownNode(node)
        wanted = {spec.id for spec in specs}

        def running() -> int:
            handles = client.registry.handles
            return sum(1 for cid in wanted if (h := handles.get(cid)) is not None and h.is_running)

        show = progress_wanted(args.no_progress) and len(specs) > 1
        with progress_bar("starting children", len(specs), enabled=show) as bar:
            work = client.start_children(specs, wait=args.wait, timeout=args.timeout)
            result = await track(work, bar, running)
    now = time.time()
    doc = {
        "started": [_handle_json(h, now) for h in result.started],
        "pending": list(result.pending),
        "errors": [
            {"child_id": e.child_id, "node_id": e.node_id, "reason": e.reason}
            for e in result.errors
        ],
    }
    if args.json:
        _print_json(doc)
    else:
        for handle in result.started:
            print(f"started {handle.child_id} on {handle.node_id} (token {handle.fencing_token})")
        for child_id in result.pending:
            print(f"accepted {child_id}")
        for error in result.errors:
            _error(f"{error.child_id}: {error.reason}")
    return EXIT_FAILURE if result.errors else EXIT_OK


# -- stop --------------------------------------------------------------------------------


def stop_parser(sub: Any) -> None:
    p = sub.add_parser("stop", help="stop children cluster-wide")
    p.add_argument("ids", nargs="+", metavar="ID", help="child ids")
    p.add_argument("--wait", action="store_true", help="wait until their workers stopped")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    _common_options(p)
    p.set_defaults(func=_run(_cmd_stop))


async def _cmd_stop(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError("--timeout must be > 0")
    async with _connect(args) as client:
        result = await client.stop_children(args.ids, wait=args.wait, timeout=args.timeout)
    errors = [
        {"child_id": e.child_id, "node_id": e.node_id, "reason": e.reason} for e in result.errors
    ]
    if args.json:
        _print_json(
            {
                "stopped": [
                    {"child_id": s.child_id, "node_ids": list(s.node_ids)} for s in result.stopped
                ],
                "pending": list(result.pending),
                "errors": errors,
            }
        )
    else:
        for stopped in result.stopped:
            where = ",".join(stopped.node_ids) or "-"
            print(f"stopped {stopped.child_id} (was on {where})")
        for child_id in result.pending:
            print(f"stopping {child_id}")
        for error in result.errors:
            reason = "no such child" if error.reason == "not_found" else error.reason
            _error(f"{error.child_id}: {reason}")
    if any(e.reason == "not_found" for e in result.errors):
        return EXIT_NOT_FOUND
    return EXIT_FAILURE if result.errors else EXIT_OK


# -- move --------------------------------------------------------------------------------


def move_parser(sub: Any) -> None:
    p = sub.add_parser("move", help="move a child to a node and pin it there")
    p.add_argument("id", help="child id")
    p.add_argument("node", help="target node id")
    p.add_argument("--no-wait", action="store_true", help="return once the pin is written")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    _common_options(p)
    p.set_defaults(func=_run(_cmd_move))


async def _cmd_move(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError("--timeout must be > 0")
    async with _connect(args) as client:
        if client.child_lookup(args.id) is None:
            raise UnknownChild(args.id)
        handle = await client.move(args.id, args.node, wait=not args.no_wait, timeout=args.timeout)
    now = time.time()
    if args.json:
        _print_json(
            {
                "id": args.id,
                "node": args.node,
                "handle": _handle_json(handle, now) if handle else None,
            }
        )
    elif handle is not None:
        print(f"moved {args.id} to {handle.node_id} (token {handle.fencing_token})")
    else:
        print(f"pinned {args.id} to {args.node}")
    return EXIT_OK


# -- drain -------------------------------------------------------------------------------


def drain_parser(sub: Any) -> None:
    p = sub.add_parser("drain", help="hand a node's children over and make it leave")
    p.add_argument("node", help="node id")
    p.add_argument("--no-wait", action="store_true", help="return once the request is written")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    _progress_option(p)
    _common_options(p)
    p.set_defaults(func=_run(_cmd_drain))


async def _cmd_drain(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError("--timeout must be > 0")
    async with _connect(args) as client:
        handles = client.registry.handles

        def remaining() -> int:
            return sum(1 for h in handles.values() if h.node_id == args.node)

        total = remaining()
        show = progress_wanted(args.no_progress) and not args.no_wait
        with progress_bar(f"draining {args.node}", total, enabled=show) as bar:
            work = client.drain(args.node, wait=not args.no_wait, timeout=args.timeout)
            await track(work, bar, lambda: total - min(total, remaining()))
    if args.json:
        _print_json({"node": args.node, "drained": not args.no_wait})
    else:
        print(f"{'drained' if not args.no_wait else 'draining'} {args.node}")
    return EXIT_OK
