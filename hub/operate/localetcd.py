"""A single-member etcd on loopback, for development, the demo, benchmarks and tests.

Not for production: one member, bound to ``127.0.0.1`` only; optional client TLS
(:class:`LocalTls`) for tests of TLS clients.

::

    with LocalEtcd() as etcd:          # free ports, temporary data dir
        hub = Hub(endpoints=[etcd.endpoint], ...)

The process is always managed by PID: :meth:`LocalEtcd.stop` sends ``SIGTERM`` to
that PID (then ``SIGKILL`` after a grace period) and reaps it; nothing is ever
killed by name.

Command line (runs in the foreground until SIGINT/SIGTERM)::

    python -m hub.operate.localetcd --port 2379 --data-dir ./etcd-data

Layout: this module is the public namespace and the command line (:func:`main`). The
process itself is :class:`LocalEtcd` in the private ``_localetcd_server``; finding the
binaries (:func:`find_etcd_binary`, :func:`find_etcdctl_binary`) is ``_etcd_binary``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from hub.errors import ConfigError
from hub.operate._etcd_binary import ENV_BINARY, find_etcd_binary, find_etcdctl_binary
from hub.operate._localetcd_server import QUOTA_BACKEND_BYTES, LocalEtcd, LocalEtcdError, LocalTls

__all__ = [
    "ENV_BINARY",
    "QUOTA_BACKEND_BYTES",
    "LocalEtcd",
    "LocalEtcdError",
    "LocalTls",
    "find_etcd_binary",
    "find_etcdctl_binary",
    "main",
]


# ----------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hub.operate.localetcd",
        description="Run a single-member development etcd on 127.0.0.1 in the foreground.",
    )
    parser.add_argument("--port", type=int, default=2379, help="client port (0: pick a free one)")
    parser.add_argument(
        "--peer-port", type=int, default=2380, help="peer port (0: pick a free one)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="data directory (default: a temporary one)"
    )
    parser.add_argument("--name", default="processhub-dev", help="member name")
    parser.add_argument("--binary", default=None, help=f"etcd binary (default: ${ENV_BINARY}, …)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for health")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run etcd in the foreground until SIGINT/SIGTERM; return the exit status."""
    args = _parser().parse_args(argv)
    stop_requested = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            etcd = LocalEtcd(
                data_dir=args.data_dir,
                client_port=args.port,
                peer_port=args.peer_port,
                binary=args.binary,
                name=args.name,
            )
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with contextlib.closing(etcd):
            try:
                etcd.start(timeout=args.timeout)
            except LocalEtcdError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(
                f"etcd {etcd.endpoint} (pid {etcd.pid}) data-dir {etcd.data_dir}\n"
                f"log: {etcd.log_path}\nCtrl-C to stop",
                flush=True,
            )
            while not stop_requested.wait(0.5):
                if not etcd.is_running():
                    print(
                        f"error: etcd exited unexpectedly; log tail:\n{etcd.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
            print("stopping etcd", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
