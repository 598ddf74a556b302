"""Read verbs of ``processhub``: ``ls``, ``nodes``, ``inspect`` and ``watch``.

Each connects as a :class:`hub.client.HubClient` (see :mod:`hub.operate.cli_verb`), reads the
registry once it has synced and prints a table, or one JSON document with ``--json``; the
documents carry the etcd revision they were read at. ``watch`` instead streams one line (or
JSON object) per change the registry applies until ``--count`` events or an interrupt.
None of them writes to etcd. Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 unknown child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from hub.errors import UnknownChild
from hub.model import ChildHandle, ChildSpec
from hub.operate.cli_connect import EXIT_OK
from hub.operate.cli_render import Column, Screen
from hub.operate.cli_verb import _common_options, _connect, _handle_json, _print_json, _run

__all__ = [
    "LS_COLUMNS",
    "NODES_COLUMNS",
    "REPLICA_COLUMNS",
    "inspect_parser",
    "ls_parser",
    "nodes_parser",
    "watch_parser",
]


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
