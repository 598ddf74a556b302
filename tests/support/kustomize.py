"""Render kustomizations with the real kustomize, and read containers as the kubelet would.

::

    kz = find_kustomize()                         # or raises KustomizeUnavailable
    objects = kz.build(ROOT / "deploy/overlays/dev")
    env = container_environment(pod_spec["containers"][0], objects, {"status.podIP": "10.0.0.7"})

Rendering is kustomize's own, never a re-implementation: the ``kustomize`` binary, or
``kubectl kustomize`` (kubectl embeds kustomize; Debian's python machine image ships a
kubectl with kustomize v5). Found in this order: ``$KUSTOMIZE`` (path of a kustomize
binary), ``kustomize`` on ``PATH``, ``kubectl`` on ``PATH``. Versions before 5.0 are
refused: the manifests use components and ``labels``.

:func:`container_environment` reproduces how the kubelet builds a container's
environment: ``envFrom`` sources first, then each ``env`` entry in order, whose ``$(VAR)``
references see only variables defined before it (an undefined reference stays as
written, ``$$`` is a literal ``$``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "MIN_VERSION",
    "ContainerEnvironment",
    "Kustomize",
    "KustomizeError",
    "KustomizeUnavailable",
    "container_environment",
    "expand",
    "find_kustomize",
    "find_object",
    "parse_documents",
    "require_kustomize",
]

MIN_VERSION = (5, 0, 0)
"""Oldest kustomize accepted (components, ``labels``, ``replicas``, generators' ``merge``)."""

_TIMEOUT = 60.0
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


class KustomizeError(RuntimeError):
    """kustomize refused to build a kustomization; the message carries its stderr."""


class KustomizeUnavailable(RuntimeError):
    """No kustomize (binary or kubectl) of at least :data:`MIN_VERSION` was found."""


@dataclass(frozen=True)
class Kustomize:
    """A kustomize to run: ``argv`` followed by a directory builds it."""

    argv: tuple[str, ...]
    version: tuple[int, int, int]

    def build_text(self, path: str | os.PathLike[str]) -> str:
        """The rendered YAML stream of the kustomization in ``path``.

        Raises:
            KustomizeError: kustomize exited non-zero (missing file, unknown field...).
        """
        proc = subprocess.run(
            [*self.argv, os.fspath(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise KustomizeError(
                f"{' '.join(self.argv)} {path}: exit {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout

    def build(self, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """The objects the kustomization in ``path`` renders, in kustomize's order."""
        return parse_documents(self.build_text(path))


def parse_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML stream; each must be a mapping with a ``kind``."""
    objects: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ValueError(f"not a Kubernetes object: {str(doc)[:200]!r}")
        objects.append(doc)
    return objects


def _parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def _run(argv: Sequence[str]) -> str | None:
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _standalone(binary: str) -> Kustomize | None:
    out = _run([binary, "version"])
    version = _parse_version(out or "")
    return Kustomize((binary, "build"), version) if version is not None else None


def _kubectl(binary: str) -> Kustomize | None:
    out = _run([binary, "version", "--client", "-o", "json"])
    if out is None:
        return None
    try:
        reported = json.loads(out).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        return None
    version = _parse_version(str(reported))
    return Kustomize((binary, "kustomize"), version) if version is not None else None


def find_kustomize(min_version: tuple[int, int, int] = MIN_VERSION) -> Kustomize:
    """The first usable kustomize: ``$KUSTOMIZE``, ``kustomize``, then ``kubectl kustomize``.

    Raises:
        KustomizeUnavailable: none found, or all older than ``min_version``.
    """
    tried: list[str] = []
    candidates: list[tuple[str, Callable[[str], Kustomize | None]]] = []
    explicit = os.environ.get("KUSTOMIZE")
    if explicit:
        candidates.append((explicit, _standalone))
    for name, probe in (("kustomize", _standalone), ("kubectl", _kubectl)):
        found = shutil.which(name)
        if found is not None:
            candidates.append((found, probe))
        else:
            tried.append(f"{name}: not on PATH")
    for binary, probe in candidates:
        kz = probe(binary)
        if kz is None:
            tried.append(f"{binary}: no kustomize version reported")
        elif kz.version < min_version:
            tried.append(f"{binary}: kustomize {'.'.join(map(str, kz.version))} is too old")
        else:
            return kz
    wanted = ".".join(map(str, min_version))
    raise KustomizeUnavailable(f"need kustomize >= {wanted} ({'; '.join(tried)})")


def require_kustomize() -> Kustomize:
    """:func:`find_kustomize` for tests: skip without one, but fail under ``CI=true``.

    CI never silently skips the manifest tests (as with etcd, see tests/conftest.py).
    """
    import pytest

    try:
        return find_kustomize()
    except KustomizeUnavailable as exc:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"kustomize required under CI=true: {exc}", pytrace=False)
        pytest.skip(str(exc))


def find_object(objects: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name is ``name`` (a generated name's hash ignored).

    Raises:
        LookupError: none, or more than one, matches.
    """
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    found = [
        dict(obj)
        for obj in objects
        if obj.get("kind") == kind and pattern.fullmatch(obj.get("metadata", {}).get("name", ""))
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} objects of kind {kind} named {name}")
    return found[0]


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> tuple[str, list[str]]:
    """Kubernetes ``$(VAR)`` expansion of ``value``; returns it and the undefined names.

    ``$$`` is an escaped ``$``; a reference to a variable not in ``defined`` is left as
    written (that is what the kubelet does), and reported.
    """
    undefined: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name in defined:
            return defined[name]
        undefined.append(name)
        return match.group(0)

    return _REFERENCE.sub(replace, value), undefined


@dataclass
class ContainerEnvironment:
    """A container's environment as the kubelet would build it.

    ``values``: name to value, in definition order. ``undefined``: ``(variable, reference)``
    pairs whose ``$(reference)`` was not defined before the variable. ``missing``:
    ``kind/name[/key]`` sources not among the rendered objects (Secrets the operator
    creates); their variables hold ``<kind name/key>`` placeholders.
    """

    values: dict[str, str] = field(default_factory=dict)
    undefined: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's or Secret's entries as strings (Secret ``data`` is base64)."""
    out = {k: str(v) for k, v in (obj.get("stringData") or {}).items()}
    for key, value in (obj.get("data") or {}).items():
        if obj.get("kind") == "Secret":
            out[key] = base64.b64decode(value).decode()
        else:
            out[key] = str(value)
    return out


def _source(objects: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict[str, str] | None:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return _data(obj)
    return None


def container_environment(
    container: Mapping[str, Any],
    objects: Sequence[Mapping[str, Any]],
    fields: Mapping[str, str],
) -> ContainerEnvironment:
    """Build ``container``'s environment from ``objects`` (a rendered overlay).

    Args:
        container: a container of a pod template, as rendered.
        objects: the rendered objects, where ConfigMaps and Secrets are looked up by name.
        fields: downward-API values by ``fieldPath`` (``metadata.name``, ``status.podIP``).

    Raises:
        KeyError: a ``fieldRef`` names a field missing from ``fields``.
        ValueError: a ``valueFrom`` kind this helper does not know (e.g. resourceFieldRef).
    """
    env = ContainerEnvironment()
    kinds = {"configMapRef": "ConfigMap", "secretRef": "Secret"}
    for source in container.get("envFrom") or []:
        (ref_kind,) = (k for k in source if k in kinds)
        name = source[ref_kind]["name"]
        data = _source(objects, kinds[ref_kind], name)
        if data is None:
            env.missing.append(f"{kinds[ref_kind]}/{name}")
            continue
        prefix = source.get("prefix", "")
        for key, value in data.items():
            env.values[prefix + key] = value
    key_kinds = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "valueFrom" not in entry:
            value, undefined = expand(str(entry.get("value", "")), env.values)
            env.undefined.extend((name, ref) for ref in undefined)
            env.values[name] = value
            continue
        value_from = entry["valueFrom"]
        if "fieldRef" in value_from:
            env.values[name] = fields[value_from["fieldRef"]["fieldPath"]]
            continue
        ref_kind = next((k for k in value_from if k in key_kinds), None)
        if ref_kind is None:
            raise ValueError(f"{name}: unsupported valueFrom {sorted(value_from)}")
        ref = value_from[ref_kind]
        data = _source(objects, key_kinds[ref_kind], ref["name"])
        where = f"{key_kinds[ref_kind]}/{ref['name']}/{ref['key']}"
        if data is None or ref["key"] not in data:
            env.missing.append(where)
            env.values[name] = f"<{where}>"
        else:
            env.values[name] = data[ref["key"]]
    return env
