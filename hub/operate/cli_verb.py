"""The frame every operator verb of ``processhub`` runs in: options, connection, output.

A verb is an ``async`` function of the parsed arguments that returns an exit code
(:data:`Command`); :func:`_run` runs it under ``asyncio.run`` and quiets etcd retry chatter
for the one-shot command. :func:`_connect` yields a started :class:`hub.client.HubClient`
and stops it on the way out; before syncing it makes one read (:func:`_probe`), so a
refusal (wrong password, untrusted certificate, plain text against TLS) fails fast as one
line that names the likely cause (:func:`_explain`) instead of waiting out the deadline as
"did not answer". A verb's failure is raised, not printed: :func:`hub.operate.cli.main`
prints it as one line and picks the exit code (:func:`_error` is only for the per-child
errors of a bulk result, which do not end the verb). JSON goes through :func:`_print_json`.

The verbs themselves are in :mod:`hub.operate.cli_views` (read) and
:mod:`hub.operate.cli_actions` (write); :mod:`hub.operate.cli_ops` lists them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from hub.client import HubClient
from hub.errors import ConfigError, StoreAuthError, StoreError, StoreUnavailable
from hub.etcd.store import Store
from hub.model import ChildHandle
from hub.operate.cli_connect import _add_etcd_options, _env, _etcd_kwargs

#: An operator verb: parsed arguments in, exit code out.
Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


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
