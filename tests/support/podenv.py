"""A Deployment's pod, outside Kubernetes: read the manifest, build the container's environment.

Tests run ``processhub node`` subprocesses with the environment the manifest gives the
container, resolved the way the kubelet resolves it:

* ``value``: kept, after ``$(VAR)`` expansion against the variables defined *before* it
  (``$$`` is a literal ``$``; a reference to an unknown variable stays as written);
* ``valueFrom.fieldRef``: ``metadata.name`` is the pod name the test chose,
  ``status.podIP`` (and ``status.hostIP``) the pod IP it chose, ``metadata.namespace`` its
  namespace, ``metadata.labels[...]``/``metadata.annotations[...]`` from the pod template;
* ``valueFrom.secretKeyRef``/``configMapKeyRef``: from the values the test passes in (an
  ``optional`` reference without one is left out, like the kubelet does).

Anything else (``resourceFieldRef``, ``envFrom``, other field paths) raises
:class:`UnsupportedManifest`: the test must not silently run a different environment than
the pod would get.

:func:`remap_ports` then moves the container ports to free host ports, the one change that
pods sharing a host need (like ``docker run -p``).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import kustomize

__all__ = [
    "PodTemplate",
    "Probe",
    "UnsupportedManifest",
    "container_argv",
    "expand",
    "free_port",
    "load_pod_template",
    "remap_ports",
    "resolve_env",
]

#: What Kubernetes assumes when a pod spec sets no terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30.0


class UnsupportedManifest(ValueError):
    """The manifest uses something this loader cannot reproduce faithfully."""


@dataclass(frozen=True, slots=True)
class Probe:
    """An ``httpGet`` probe: path and container port (names resolved to numbers)."""

    path: str
    port: int


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """The parts of one container of a Deployment's pod template that a test reproduces."""

    container: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[Mapping[str, Any], ...]
    #: container port name -> number (unnamed ports under their number as a string)
    ports: Mapping[str, int]
    grace_seconds: float
    readiness: Probe | None
    liveness: Probe | None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: ``spec.strategy.rollingUpdate`` of the Deployment (``maxSurge``, ``maxUnavailable``)
    rolling_update: Mapping[str, Any] = field(default_factory=dict)


def load_pod_template(path: Path, *, container: str) -> PodTemplate:
    """The container ``container`` of the (only) Deployment in the YAML file ``path``.

    Raises:
        UnsupportedManifest: no such Deployment or container, or ``envFrom`` is used.
    """
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    deployments = [doc for doc in documents if doc.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise UnsupportedManifest(f"{path}: expected one Deployment, found {len(deployments)}")
    deployment = deployments[0]
    template = deployment["spec"]["template"]
    pod_spec = template["spec"]
    matches = [c for c in pod_spec.get("containers", []) if c.get("name") == container]
    if not matches:
        raise UnsupportedManifest(f"{path}: no container named {container!r}")
    spec = matches[0]
    if spec.get("envFrom"):
        raise UnsupportedManifest(f"{path}: envFrom is not supported by this loader")
    ports = {
        str(port.get("name") or port["containerPort"]): int(port["containerPort"])
        for port in spec.get("ports", [])
    }
    metadata = template.get("metadata") or {}
    strategy = deployment["spec"].get("strategy") or {}
    return PodTemplate(
        container=container,
        command=tuple(spec.get("command") or ()),
        args=tuple(spec.get("args") or ()),
        env=tuple(spec.get("env") or ()),
        ports=ports,
        grace_seconds=float(pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
        readiness=_probe(spec.get("readinessProbe"), ports),
        liveness=_probe(spec.get("livenessProbe"), ports),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        rolling_update=dict(strategy.get("rollingUpdate") or {}),
    )


def _probe(probe: Mapping[str, Any] | None, ports: Mapping[str, int]) -> Probe | None:
    if not probe or "httpGet" not in probe:
        return None
    port = probe["httpGet"]["port"]
    number = int(port) if isinstance(port, int) or str(port).isdigit() else ports.get(str(port))
    if number is None:
        raise UnsupportedManifest(f"probe port {port!r} names no container port")
    return Probe(path=str(probe["httpGet"].get("path", "/")), port=number)


def resolve_env(
    template: PodTemplate,
    *,
    pod_name: str,
    pod_ip: str,
    namespace: str = "default",
    secrets: Mapping[tuple[str, str], str] | None = None,
    config_maps: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    """The container's environment, resolved in manifest order like the kubelet does.

    ``secrets`` and ``config_maps`` map ``(object name, key)`` to a value.

    Raises:
        UnsupportedManifest: a source this loader does not reproduce, or a required
            Secret/ConfigMap key that was not given.
    """
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": pod_ip,
    }
    env: dict[str, str] = {}
    for entry in template.env:
        name = str(entry["name"])
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = _field(source["fieldRef"]["fieldPath"], fields, template)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "secretKeyRef" if "secretKeyRef" in source else "configMapKeyRef"
            ref = source[kind]
            values = (secrets if kind == "secretKeyRef" else config_maps) or {}
            key = (str(ref["name"]), str(ref["key"]))
            if key in values:
                env[name] = values[key]
            elif not ref.get("optional", False):
                raise UnsupportedManifest(f"{name}: no test value for {kind} {key}")
        elif not source:
            env[name] = ""  # a bare name: the empty string
        else:
            raise UnsupportedManifest(f"{name}: unsupported valueFrom {sorted(source)}")
    return env


_LABEL_PATH = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field(path: str, fields: Mapping[str, str], template: PodTemplate) -> str:
    if path in fields:
        return fields[path]
    match = _LABEL_PATH.fullmatch(path)
    if match:
        source = template.labels if match.group(1) == "labels" else template.annotations
        return str(source.get(match.group(2), ""))
    raise UnsupportedManifest(f"unsupported fieldRef {path!r}")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion of one value (see :func:`support.kustomize.expand`);
    an undefined reference is kept as written, as the kubelet does."""
    return kustomize.expand(value, defined)[0]


def remap_ports(env: Mapping[str, str], ports: Mapping[int, int]) -> dict[str, str]:
    """``env`` with every ``host:port`` naming a container port moved to its host port.

    Values are comma-separated lists of ``host:port`` or single ones; other values are
    left alone. ``ports`` maps container port -> host port.
    """

    def remap(item: str) -> str:
        host, sep, port = item.rpartition(":")
        if sep and host and port.isdigit() and int(port) in ports:
            return f"{host}:{ports[int(port)]}"
        return item

    return {name: ",".join(remap(item) for item in value.split(",")) for name, value in env.items()}


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def container_argv(template: PodTemplate, entrypoint: Sequence[str]) -> list[str]:
    """The process a container runs: its ``command`` (else the image's ``entrypoint``)
    plus ``args``. ``processhub`` as the first word becomes ``entrypoint``."""
    command = list(template.command) or ["processhub"]
    if command[0] != "processhub":
        raise UnsupportedManifest(f"container command {command!r} is not processhub")
    return [*entrypoint, *command[1:], *template.args]
