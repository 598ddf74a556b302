"""Operator verbs of the ``processhub`` command: ``ls``, ``nodes``, ``inspect``, ``start``,
``stop``, ``move``, ``drain`` and ``watch``.

Each verb connects to etcd as a :class:`hub.client.HubClient`, does one job, prints the
result (a table, or one JSON document with ``--json``) and exits with a code scripts can
rely on: 0 ok, 1 runtime failure (etcd unreachable or refusing us, timeout), 2 usage or
configuration error, 3 unknown child or node. Errors are one line on stderr (see
:func:`hub.operate.cli.main`); bulk starts and drains show a progress bar on an interactive stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from hub.client import HubClient
from hub.errors import (
    ConfigError,
    InvalidSpec,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
    UnknownChild,
    UnknownNode,
)
from hub.etcd.store import Store
from hub.model import ChildHandle, ChildSpec
from hub.operate.cli_connect import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    _add_etcd_options,
    _env,
    _etcd_kwargs,
)
from hub.operate.cli_render import Column, Screen, progress_bar, progress_wanted, track

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

# -- plumbing ----------------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"processhub: error: {message}", file=sys.stderr)


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run an async verb; errors go up to :func:`hub.operate.cli.main`, which prints one line."""

    def runner(args: argparse.Namespace) -> int:
        if not args.debug and str(args.log_level).lower() == "warning":
            # A one-shot command: etcd retry chatter would only bury the one-line error.
            logging.getLogger("hub").setLevel(logging.ERROR)
        return asyncio.run(command(args))

    return runner


def _common_options(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--hub", default=_env("HUB"), help="hub id (env PROCESSHUB_HUB)")
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        help="give up if etcd does not answer within this many seconds (default 5)",
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    _add_etcd_options(p)


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@contextlib.asynccontextmanager
async def _connect(args: argparse.Namespace) -> AsyncIterator[HubClient]:
    if not args.hub:
        raise ConfigError("--hub (or PROCESSHUB_HUB) is required")
    if not args.connect_timeout > 0:
        raise ConfigError("--connect-timeout must be > 0")
    client = HubClient(args.hub, startup_timeout=args.connect_timeout, **_etcd_kwargs(args))
    await _probe(client, args)
    try:
        await client.start()
    except TimeoutError:
        raise StoreUnavailable(_no_answer(args)) from None
    try:
        yield client
    finally:
        await client.stop()


async def _probe(client: HubClient, args: argparse.Namespace) -> None:
    """One read before syncing, so a refusal is reported as what it is.

    The client's informer retries every failure until its deadline, which would turn a
    wrong password or certificate into "did not answer". A single read fails fast with
    the real reason, which :func:`_explain` turns into one line.
    """
    try:
        async with asyncio.timeout(args.connect_timeout), Store(client.config.etcd) as store:
            await store.get(client.keys.root, timeout=args.connect_timeout)
    except TimeoutError:
        raise StoreUnavailable(_no_answer(args)) from None
    except StoreAuthError as exc:
        raise StoreAuthError(_explain(exc, args)) from exc
    except StoreError as exc:
        raise StoreUnavailable(_explain(exc, args)) from exc


def _no_answer(args: argparse.Namespace) -> str:
    return f"etcd at {args.endpoints} did not answer within {args.connect_timeout:g}s"


#: Fragments of gRPC/etcd failure details, and what they mean for the operator.
_TLS_REASONS = (
    ("CERTIFICATE_VERIFY_FAILED", "its certificate is not trusted (check --etcd-ca)"),
    (
        "Hostname Verification Check failed",
        "its certificate does not name this address (check --etcd-server-name)",
    ),
    ("BAD_CERTIFICATE", "refused our client certificate (check --etcd-cert/--etcd-key)"),
    ("CERTIFICATE_REQUIRED", "requires a client certificate (--etcd-cert/--etcd-key)"),
    ("Handshake read failed", "TLS handshake failed: does it serve plain text?"),
    ("WRONG_VERSION_NUMBER", "TLS handshake failed: does it serve plain text?"),
)
_PLAIN_REASONS = (("Socket closed", "closed the connection: does it require TLS (--etcd-ca)?"),)
_AUTH_REASONS = (
    ("user name is empty", "requires authentication (--etcd-user, --etcd-password-env)"),
    ("invalid user ID or password", "refused the user name or password"),
    ("permission denied", "denied access to the hub's keys"),
)
_COMMON_REASONS = (
    ("Connection refused", "connection refused"),
    ("timed out", "did not answer (the connection opened, then nothing: is it etcd?)"),
)


def _explain(exc: StoreError, args: argparse.Namespace) -> str:
    """A refusal or failure to connect, as one line an operator can act on."""
    detail = " ".join(str(exc).split())
    where = f"etcd at {args.endpoints}"
    reasons: tuple[tuple[str, str], ...] = _PLAIN_REASONS
    if isinstance(exc, StoreAuthError):
        reasons = _AUTH_REASONS
    elif args.etcd_ca or args.etcd_cert:
        reasons = _TLS_REASONS
    for fragment, meaning in (*reasons, *_COMMON_REASONS):
        if fragment in detail:
            return f"{where}: {meaning}"
    return f"{where}: {detail.removeprefix('etcd ')}"


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def _handle_json(handle: ChildHandle, now: float) -> dict[str, Any]:
    return {
        "child_id": handle.child_id,
        "node_id": handle.node_id,
        "incarnation": handle.incarnation,
        "fencing_token": handle.fencing_token,
        "state": str(handle.state),
        "role": handle.role,
        "started_at": handle.started_at,
        "age": round(max(0.0, now - handle.started_at), 3) if handle.started_at else None,
        "restarts": handle.restarts,
        "last_exit": handle.last_exit,
    }


def _spec_json(spec: ChildSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "start": spec.start,
        "args": spec.args,
        "restart": str(spec.restart),
        "max_restarts": spec.max_restarts,
        "max_seconds": spec.max_seconds,
        "metadata": dict(spec.metadata),
        "nodes": list(spec.nodes),
    }


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


# -- ls ----------------------------------------------------------------------------------


def ls_parser(sub: Any) -> None:
    p = sub.add_parser("ls", help="list children")
    p.add_argument("--node", help="only children on this node")
    p.add_argument("--tag", help="only children with this tag")
    p.add_argument("--state", help="only children in this state (pending = not placed yet)")
    _common_options(p)
    p.set_defaults(func=_run(_cmd_ls))


async def _cmd_ls(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        now = time.time()
        rows: list[dict[str, Any]] = []
        for child_id, (spec, instances, _meta) in sorted(client.registry_dump().items()):
            if args.tag is not None and spec.tag != args.tag:
                continue
            handles: list[ChildHandle | None] = [*instances.values()] or [None]
            for handle in handles:
                row = {
                    "id": child_id,
                    "node": handle.node_id if handle else None,
                    "state": str(handle.state) if handle else "pending",
                    "role": handle.role if handle else None,
                    "token": handle.fencing_token if handle else None,
                    "restarts": handle.restarts if handle else 0,
                    "age": round(max(0.0, now - handle.started_at), 3)
                    if handle and handle.started_at
                    else None,
                    "tag": spec.tag,
                }
                if args.node is not None and row["node"] != args.node:
                    continue
                if args.state is not None and row["state"] != args.state:
                    continue
                rows.append(row)
        revision = client.revision
    if args.json:
        _print_json({"revision": revision, "children": rows})
    else:
        Screen().table(LS_COLUMNS, rows)
    return EXIT_OK


LS_COLUMNS = (
    Column("ID", "id"),
    Column("NODE", "node"),
    Column("STATE", "state", styled=True),
    Column("TOKEN", "token", "right"),
    Column("RESTARTS", "restarts", "right"),
    Column("AGE(S)", "age", "right"),
    Column("TAG", "tag"),
)


# -- nodes -------------------------------------------------------------------------------


def nodes_parser(sub: Any) -> None:
    p = sub.add_parser("nodes", help="list member nodes")
    _common_options(p)
    p.set_defaults(func=_run(_cmd_nodes))


async def _cmd_nodes(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        counts: dict[str, int] = {}
        for instances in client.process_list("global").values():
            for node_id in instances:
                counts[node_id] = counts.get(node_id, 0) + 1
        rows: list[dict[str, Any]] = []
        for node_id, entry in sorted(client.registry.nodes.items()):
            info = entry.info
            rows.append(
                {
                    "node_id": node_id,
                    "incarnation": info.incarnation,
                    "address": info.address,
                    "weight": info.weight,
                    "state": str(info.state),
                    "children": counts.get(node_id, 0),
                    "load": info.load,
                    "capacity": info.capacity,
                    "version": info.version,
                    "started_at": info.started_at,
                    "lease": f"{entry.lease:x}",
                }
            )
        revision = client.revision
    if args.json:
        _print_json({"revision": revision, "nodes": rows})
    else:
        Screen().table(NODES_COLUMNS, rows)
    return EXIT_OK


NODES_COLUMNS = (
    Column("NODE", "node_id"),
    Column("ADDRESS", "address"),
    Column("STATE", "state", styled=True),
    Column("CHILDREN", "children", "right"),
    Column("LOAD", "load", "right"),
    Column("CAPACITY", "capacity", "right"),
    Column("VERSION", "version"),
    Column("LEASE", "lease"),
)


# -- inspect -----------------------------------------------------------------------------


def inspect_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show one child: spec, owner, replicas, placement")
    p.add_argument("id", help="child id")
    _common_options(p)
    p.set_defaults(func=_run(_cmd_inspect))


async def _cmd_inspect(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        found = client.child_lookup(args.id)
        if found is None:
            raise UnknownChild(args.id)
        spec: ChildSpec = found[0]
        now = time.time()
        owner = client.get_pid(args.id)
        doc = {
            "id": args.id,
            "spec": _spec_json(spec),
            "owner": _handle_json(owner, now) if owner is not None else None,
            "replicas": [_handle_json(h, now) for h in client.get_pids(args.id)],
            "fencing_token": owner.fencing_token if owner is not None else None,
            "placement": client.placement(args.id),
            "revision": client.revision,
        }
    if args.json:
        _print_json(doc)
        return EXIT_OK
    _show_child(spec, owner, doc)
    return EXIT_OK


REPLICA_COLUMNS = (
    Column("NODE", "node_id"),
    Column("ROLE", "role"),
    Column("STATE", "state", styled=True),
    Column("TOKEN", "fencing_token", "right"),
    Column("RESTARTS", "restarts", "right"),
    Column("AGE(S)", "age", "right"),
    Column("LAST EXIT", "last_exit"),
)


def _show_child(spec: ChildSpec, owner: ChildHandle | None, doc: dict[str, Any]) -> None:
    """``inspect`` for people: the spec and owner as fields, then one row per instance."""
    screen = Screen()
    screen.fields(
        f"child {spec.id}",
        [
            ("id", spec.id),
            ("start", spec.start),
            ("args", json.dumps(spec.args, sort_keys=True)),
            ("restart", f"{spec.restart} (max {spec.max_restarts} in {spec.max_seconds:g}s)"),
            ("metadata", json.dumps(dict(spec.metadata), sort_keys=True)),
            ("pinned to", list(spec.nodes)),
            ("owner", owner.node_id if owner is not None else None),
            ("state", str(owner.state) if owner is not None else "pending"),
            ("fencing token", doc["fencing_token"]),
            ("placement", doc["placement"]),
            ("revision", doc["revision"]),
        ],
    )
    if doc["replicas"]:
        screen.line()
        screen.table(REPLICA_COLUMNS, doc["replicas"], title="instances")


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


# -- watch -------------------------------------------------------------------------------


def watch_parser(sub: Any) -> None:
    p = sub.add_parser("watch", help="stream what the cluster does: starts, moves, stops, nodes")
    _common_options(p)
    p.add_argument("--count", type=int, default=0, help="exit after this many events (0: never)")
    p.set_defaults(func=_run(_cmd_watch))


async def _cmd_watch(args: argparse.Namespace) -> int:
    """Print one line (or JSON object) per change the registry applies, until interrupted."""
    async with _connect(args) as client:
        registry = client.registry
        seen_nodes = {n: e.info.incarnation for n, e in registry.nodes.items()}
        seen = {
            cid: (h.node_id, h.fencing_token, str(h.state)) for cid, h in registry.handles.items()
        }
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def observe(child_ids: set[str], nodes_changed: bool, full: bool) -> None:
            now = time.time()
            if nodes_changed or full:
                current = {n: e.info.incarnation for n, e in registry.nodes.items()}
                for node_id in current.keys() - seen_nodes.keys():
                    queue.put_nowait({"at": now, "event": "node_joined", "node_id": node_id})
                for node_id in seen_nodes.keys() - current.keys():
                    queue.put_nowait({"at": now, "event": "node_left", "node_id": node_id})
                seen_nodes.clear()
                seen_nodes.update(current)
            for child_id in sorted(child_ids):
                handle = registry.handles.get(child_id)
                before = seen.get(child_id)
                if handle is None:
                    if before is not None:
                        del seen[child_id]
                        kind = (
                            "child_stopped" if child_id not in registry.specs else "child_released"
                        )
                        queue.put_nowait(
                            {"at": now, "event": kind, "child_id": child_id, "node_id": before[0]}
                        )
                    continue
                after = (handle.node_id, handle.fencing_token, str(handle.state))
                if after == before:
                    continue
                seen[child_id] = after
                kind = "child_" + (
                    "moved" if before is not None and before[0] != after[0] else after[2]
                )
                queue.put_nowait(
                    {
                        "at": now,
                        "event": kind,
                        "child_id": child_id,
                        "node_id": handle.node_id,
                        "fencing_token": handle.fencing_token,
                        "restarts": handle.restarts,
                    }
                )

        registry.observers.append(observe)
        if args.json:  # a readiness line for scripts: changes after this one are streamed
            print(json.dumps({"event": "watching", "revision": registry.revision}), flush=True)
        printed = 0
        try:
            while not args.count or printed < args.count:
                event = await queue.get()
                if args.json:
                    print(json.dumps(event, sort_keys=True), flush=True)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
                    detail = " ".join(
                        f"{k}={v}" for k, v in event.items() if k not in ("at", "event")
                    )
                    print(f"{stamp}  {event['event']:<16} {detail}", flush=True)
                printed += 1
        finally:
            registry.observers.remove(observe)
    return EXIT_OK
