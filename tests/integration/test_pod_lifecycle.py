"""The Deployment's pod lifecycle without a cluster: SIGTERM, drain, and a rolling update.

Pods are ``processhub node`` subprocesses run with the environment that
``deploy/base/app/deployment.yaml`` gives its ``node`` container, resolved as the kubelet
would (``support.podenv``: literal values, ``$(VAR)`` expansion, the pod name and IP from
the downward API, the RPC token from a stand-in Secret). Overrides, each because three
"pods" share one host and one test etcd rather than a cluster network:

* ``PROCESSHUB_ENDPOINTS``: the test's etcd, not the in-cluster ``etcd-N.etcd`` names;
* ``PROCESSHUB_PREFIX``: a key prefix of this test's own (the etcd is shared by the suite);
* container ports 7070 (rpc), 9100 (http) and 8080 (app) become free host ports, in every
  variable that names them (each pod has its own IP in Kubernetes; here they share one);
* ``PROCESSHUB_SHUTDOWN_DELAY``: 0.5 s instead of the manifest's 5 s, which would add 5 s
  to every SIGTERM of the suite; half a second of 503 before anything stops is still a
  window no probe can miss;
* ``PROCESSHUB_ALLOW`` gains ``support.recorder:RecordedTenant``, the tenants worker that
  also records each activation for the at-most-one checker (tests/support/checker.py). The
  manifest's own pattern stays, and is exercised by tenants the front starts itself.

What a pod must do when the kubelet stops it (SIGTERM): ``/readyz`` answers 503 before the
node stops answering at all, its children run elsewhere with their state (their counts),
no child ever runs twice at once, and it exits 0 within ``terminationGracePeriodSeconds``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import socket
import string
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.checker import load_intervals, violations
from support.cluster import REPO, NodeProcess, http_json
from support.podenv import (
    PodTemplate,
    container_argv,
    free_port,
    load_pod_template,
    remap_ports,
    resolve_env,
)
from support.traffic import Traffic
from support.wait import wait_until, wait_until_sync

from hub import ChildSpec
from hub.client import HubClient
from hub.worker import AllowList

pytestmark = pytest.mark.slow

DEPLOYMENT = REPO / "deploy" / "base" / "app" / "deployment.yaml"
RECORDED = "support.recorder:RecordedTenant"
#: Seconds /readyz answers 503 before a pod stops anything (the manifest says 5; see above).
SHUTDOWN_DELAY = 0.5
FRONT_TARGET = "examples.tenants.worker:TenantLimiter"  # what the front starts
RPC_TOKEN = "pod-lifecycle-test-token"  # stands in for Secret processhub-rpc/token
SECRETS = {("processhub-rpc", "token"): RPC_TOKEN}
CHILDREN = 30


@pytest.fixture(scope="module")
def template() -> PodTemplate:
    return load_pod_template(DEPLOYMENT, container="node")


# -- pods ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Pod:
    """One running "pod": its node process and where its ports ended up."""

    name: str
    node: NodeProcess
    readyz: str  # host:port of the readiness probe
    front: str  # host:port of the app port (the tenants front)


@dataclass
class Deployment:
    """Creates pods the way the Deployment's ReplicaSets name them, and cleans up."""

    template: PodTemplate
    etcd_endpoint: str
    prefix: str
    record_dir: Path
    pods: list[Pod] = field(default_factory=list)
    revision: str = "5d8f7c9b6"

    def environment(self, name: str, ports: dict[int, int]) -> dict[str, str]:
        """The container's environment, with the overrides listed in the module docstring."""
        env = resolve_env(self.template, pod_name=name, pod_ip="127.0.0.1", secrets=SECRETS)
        env = remap_ports(env, ports)
        env["PROCESSHUB_ENDPOINTS"] = self.etcd_endpoint
        env["PROCESSHUB_PREFIX"] = self.prefix
        assert float(env["PROCESSHUB_SHUTDOWN_DELAY"]) > 0  # the manifest sets one
        env["PROCESSHUB_SHUTDOWN_DELAY"] = str(SHUTDOWN_DELAY)
        env["PROCESSHUB_ALLOW"] = f"{env['PROCESSHUB_ALLOW']},{RECORDED}"
        return env

    def create_pod(self) -> Pod:
        """Start a pod of the current revision and wait until it is ready."""
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"processhub-{self.revision}-{suffix}"
        ports = {port: free_port() for port in self.template.ports.values()}
        env = self.environment(name, ports)
        argv = container_argv(self.template, [sys.executable, "-m", "hub.operate.cli"])
        node = NodeProcess.container(node_id=name, argv=argv, env=env, record_dir=self.record_dir)
        readiness = self.template.readiness
        assert readiness is not None
        pod = Pod(
            name=name,
            node=node,
            readyz=f"127.0.0.1:{ports[readiness.port]}",
            front=f"127.0.0.1:{ports[self.template.ports['app']]}",
        )
        self.pods.append(pod)
        node.start(timeout=60)
        wait_until_sync(lambda: probe(pod.readyz, readiness.path) == 200, 60)
        wait_until_sync(lambda: probe(pod.front, "/tenants") == 200, 30)
        return pod

    def close(self) -> None:
        for pod in self.pods:
            if pod.node.alive():
                pod.node.kill()


def probe(address: str, path: str) -> int | str:
    """What a kubelet probe would see: the status, ``refused``, or another failure."""
    try:
        return http_json("GET", address, path, timeout=1.0)[0]
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return type(exc).__name__


class ProbeLog(threading.Thread):
    """Probes a pod's readiness endpoint and its front every few ms until both refuse."""

    def __init__(self, pod: Pod, readiness_path: str, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.targets = {"readyz": (pod.readyz, readiness_path), "front": (pod.front, "/tenants")}
        self.interval = interval
        self.seen: dict[str, list[tuple[float, int | str]]] = {name: [] for name in self.targets}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, (address, path) in self.targets.items():
                began = time.monotonic()
                self.seen[name].append((began, probe(address, path)))
            if all(log[-1][1] == "refused" for log in self.seen.values()):
                return
            self.halt.wait(self.interval)

    def first(self, name: str, outcome: int | str) -> float | None:
        return next((t for t, seen in self.seen[name] if seen == outcome), None)


# -- traffic ------------------------------------------------------------------------------


# -- fixtures and checks ------------------------------------------------------------------


@pytest.fixture
def deployment(
    template: PodTemplate, etcd_endpoint: str, hub_prefix: str, tmp_path: Path
) -> Iterator[Deployment]:
    d = Deployment(template, etcd_endpoint, hub_prefix, tmp_path)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
async def client(
    template: PodTemplate, etcd_endpoint: str, hub_prefix: str
) -> AsyncIterator[HubClient]:
    hub_id = resolve_env(template, pod_name="x", pod_ip="127.0.0.1", secrets=SECRETS)[
        "PROCESSHUB_HUB"
    ]
    async with HubClient(
        hub_id, endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
    ) as c:
        yield c


async def start_recorded(client: HubClient, count: int) -> list[str]:
    ids = [f"tenant-r{i}" for i in range(count)]
    specs = [ChildSpec(id=c, start=RECORDED, metadata={"tag": "tenant"}) for c in ids]
    result = await client.start_children(specs, wait=True, timeout=30)
    assert result.ok, result.errors
    return ids


def tenant_of(child_id: str) -> str:
    return child_id.removeprefix("tenant-")


def running_on(client: HubClient, child_ids: list[str], nodes: set[str]) -> bool:
    handles = client.registry.handles
    return all(
        (h := handles.get(c)) is not None and h.is_running and h.node_id in nodes for c in child_ids
    )


def assert_states(pod: Pod, traffic: Traffic, excluded: set[str]) -> None:
    """Every tenant answers, from a pod not in ``excluded``, with exactly its hits."""
    for tenant, hits in traffic.hits.items():
        status, state = http_json("GET", pod.front, f"/tenants/{tenant}")
        assert status == 200, (tenant, state)
        assert state["node"] not in excluded, (tenant, state)
        assert state["hits"] == hits, (tenant, state, hits)


def assert_handovers_exact(record_dir: Path) -> int:
    """Each handed-over bucket arrived with the counts its predecessor stopped with."""
    starts: dict[str, list[dict[str, Any]]] = {}
    stops: dict[tuple[str, int, int], list[int]] = {}
    for path in record_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if "counts" not in event:
                continue
            if event["ev"] == "start":
                starts.setdefault(event["child"], []).append(event)
            else:
                stops[(event["child"], event["pid"], event["token"])] = event["counts"]
    handovers = 0
    for child, items in starts.items():
        items.sort(key=lambda e: e["t"])
        for earlier, later in itertools.pairwise(items):
            stopped = stops.get((child, earlier["pid"], earlier["token"]))
            assert later["source"] == "handover", (child, later)
            assert later["counts"] == stopped, (child, earlier, later, stopped)
            handovers += 1
    return handovers


def assert_at_most_one(record_dir: Path, expect: list[str], live: list[Pod]) -> None:
    intervals = load_intervals(record_dir, {})
    live_pids = {pod.node.pid for pod in live}
    problems = violations(intervals, expect_running=set(expect), live_pids=live_pids)
    assert not problems, "\n".join(problems[:20])


def gaps(record_dir: Path) -> list[float]:
    """Seconds each child spent without an instance between two of its activations."""
    intervals = load_intervals(record_dir, {})
    return [
        later.start - earlier.end
        for items in intervals.values()
        for earlier, later in itertools.pairwise(items)
        if earlier.end is not None
    ]


def assert_ready_until_it_stops(log: ProbeLog) -> None:
    """/readyz said 503 for the shutdown delay before the port closed, and never 200 again
    after the first 503."""
    readyz = [seen for _, seen in log.seen["readyz"]]
    assert readyz and readyz[-1] == "refused", readyz[-5:]
    closed = readyz.index("refused")
    assert 503 in readyz[:closed], readyz
    assert set(readyz[closed:]) == {"refused"}, readyz
    assert 200 not in readyz[readyz.index(503) :], readyz
    unready, refused = log.first("readyz", 503), log.first("readyz", "refused")
    assert unready is not None and refused is not None
    assert refused - unready >= SHUTDOWN_DELAY * 0.9, (unready, refused)


# -- tests --------------------------------------------------------------------------------


def test_the_manifest_allows_the_apps_worker_and_outlives_the_drain(
    template: PodTemplate,
) -> None:
    env = resolve_env(template, pod_name="p", pod_ip="10.0.0.7", secrets=SECRETS)
    assert AllowList(env["PROCESSHUB_ALLOW"].split(",")).allows(FRONT_TARGET)
    assert env["PROCESSHUB_MIGRATION"] == "hot"  # buckets move with their tenants
    assert float(env["PROCESSHUB_DRAIN_TIMEOUT"]) < template.grace_seconds


def test_the_manifest_publishes_the_rpc_address_other_nodes_dial(template: PodTemplate) -> None:
    """A node's membership record carries the address other nodes call it on: the RPC
    advertise address, which must be the pod IP with the RPC port. (A bare
    PROCESSHUB_ADVERTISE_ADDRESS once replaced it and sent every call astray; HubConfig now
    refuses that combination, so `processhub node` would not even start.)"""
    env = resolve_env(template, pod_name="p", pod_ip="10.0.0.7", secrets=SECRETS)
    rpc_port = env["PROCESSHUB_RPC_BIND"].rsplit(":", 1)[1]
    assert env["PROCESSHUB_RPC_ADVERTISE"] == f"10.0.0.7:{rpc_port}"  # $(POD_IP) expanded
    assert "PROCESSHUB_ADVERTISE_ADDRESS" not in env


async def test_sigterm_drains_within_the_grace_period_and_children_keep_their_state(
    deployment: Deployment, client: HubClient
) -> None:
    pods = [await asyncio.to_thread(deployment.create_pod) for _ in range(3)]
    ids = await start_recorded(client, CHILDREN)
    traffic = Traffic(list(pods))
    await asyncio.to_thread(traffic.hit_each, [tenant_of(c) for c in ids], 3)
    # Tenants the front starts itself, under the manifest's allow-list.
    await asyncio.to_thread(traffic.hit_each, ["f1", "f2", "f3"])
    placed = {c: client.get_pid(c).node_id for c in ids}  # type: ignore[union-attr]
    victim = max(pods, key=lambda p: sum(1 for node in placed.values() if node == p.name))
    moving = [tenant_of(c) for c, node in placed.items() if node == victim.name]
    assert moving
    survivors = [p for p in pods if p is not victim]

    assert deployment.template.readiness is not None
    log = ProbeLog(victim, deployment.template.readiness.path)
    traffic.leave(victim)
    with traffic.running(moving):
        await asyncio.to_thread(wait_until_sync, lambda: traffic.answered > 150, 30)
        log.start()
        await asyncio.to_thread(wait_until_sync, lambda: len(log.seen["readyz"]) > 0, 10)
        sent = victim.node.sigterm()
        code = await asyncio.to_thread(victim.node.proc.wait, deployment.template.grace_seconds)  # type: ignore[union-attr]
        exited = time.monotonic() - sent
        answered = traffic.answered
        await asyncio.to_thread(wait_until_sync, lambda: traffic.answered > answered + 50, 30)
    await asyncio.to_thread(log.join, 10)

    assert code == 0
    assert exited < deployment.template.grace_seconds
    assert_ready_until_it_stops(log)
    assert not traffic.problems, traffic.problems[:10]
    live = {p.name for p in survivors}
    await wait_until(lambda: running_on(client, ids, live), 30)
    await asyncio.to_thread(assert_states, survivors[0], traffic, {victim.name})
    await asyncio.to_thread(assert_at_most_one, deployment.record_dir, ids, survivors)
    handovers = assert_handovers_exact(deployment.record_dir)
    stopped = next(e for e in victim.node.history if e.get("event") == "stopped")
    print(
        f"{victim.name}: {len(moving)} children, exit {code} {exited:.2f}s after SIGTERM "
        f"(drain_seconds {stopped.get('drain_seconds')}); readyz 503 at "
        f"+{(log.first('readyz', 503) or sent) - sent:.3f}s, refused at "
        f"+{(log.first('readyz', 'refused') or sent) - sent:.3f}s; front refused at "
        f"+{(log.first('front', 'refused') or sent) - sent:.3f}s; {handovers} handovers, "
        f"longest gap {max(gaps(deployment.record_dir)) * 1000:.1f} ms; "
        f"{traffic.answered} hits answered"
    )


async def test_rolling_update_keeps_every_child_running_with_its_state(
    deployment: Deployment, client: HubClient
) -> None:
    old = [await asyncio.to_thread(deployment.create_pod) for _ in range(3)]
    ids = await start_recorded(client, CHILDREN)
    traffic = Traffic(list(old))
    await asyncio.to_thread(traffic.hit_each, [tenant_of(c) for c in ids])
    max_surge = deployment.template.rolling_update.get("maxSurge", "25%")  # the default
    surge_first = str(max_surge) not in ("0", "0%")
    deployment.revision = "7b4c6d8f5"  # a new pod template: a new ReplicaSet
    assert deployment.template.readiness is not None
    drains = []
    with traffic.running([tenant_of(c) for c in ids]):
        for pod in old:
            if surge_first:  # maxSurge 1, maxUnavailable 0: the new pod is ready first
                traffic.enter(await asyncio.to_thread(deployment.create_pod))
            traffic.leave(pod)
            log = ProbeLog(pod, deployment.template.readiness.path)
            log.start()
            sent = pod.node.sigterm()
            code = await asyncio.to_thread(pod.node.proc.wait, deployment.template.grace_seconds)  # type: ignore[union-attr]
            drains.append(time.monotonic() - sent)
            await asyncio.to_thread(log.join, 10)
            assert code == 0, pod.name
            assert_ready_until_it_stops(log)
            if not surge_first:
                traffic.enter(await asyncio.to_thread(deployment.create_pod))
            live = {p.name for p in traffic.in_service}
            await wait_until(functools.partial(running_on, client, ids, live), 30)
        answered = traffic.answered
        await asyncio.to_thread(wait_until_sync, lambda: traffic.answered > answered + 50, 30)

    assert not traffic.problems, traffic.problems[:10]
    new = list(traffic.in_service)
    assert len(new) == 3 and not set(new) & set(old)
    assert max(drains) < deployment.template.grace_seconds
    await asyncio.to_thread(assert_states, new[0], traffic, {p.name for p in old})
    await asyncio.to_thread(assert_at_most_one, deployment.record_dir, ids, new)
    handovers = assert_handovers_exact(deployment.record_dir)
    print(
        f"rollout: drains {', '.join(f'{d:.2f}s' for d in drains)}; {handovers} handovers, "
        f"longest gap {max(gaps(deployment.record_dir)) * 1000:.1f} ms; "
        f"{traffic.answered} hits answered"
    )


class InFlight:
    """A request to a pod's front whose head is not complete: in flight until :meth:`finish`.

    The front accepts connections in order, so once a later request was answered, this
    connection is being served.
    """

    def __init__(self, pod: Pod, tenant: str) -> None:
        host, _, port = pod.front.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(f"POST /tenants/{tenant}/hit HTTP/1.1\r\nHost: pod\r\n".encode())
        assert probe(pod.front, "/tenants") == 200

    def finish(self) -> int:
        """Complete the request; the status it was answered with."""
        with self.sock:
            self.sock.sendall(b"Content-Length: 0\r\n\r\n")
            return int(self.sock.makefile("rb").readline().split()[1])


def test_a_request_in_flight_at_sigterm_is_still_answered(deployment: Deployment) -> None:
    pod = deployment.create_pod()
    request = InFlight(pod, "inflight")
    pod.node.sigterm()
    wait_until_sync(lambda: probe(pod.front, "/tenants") == "refused", 10, interval=0.002)
    assert request.finish() == 200
    assert pod.node.proc.wait(deployment.template.grace_seconds) == 0  # type: ignore[union-attr]


def test_readiness_is_false_before_the_front_stops_accepting(deployment: Deployment) -> None:
    """docs/deployment.md promises /readyz 503 first, then the app's front stops."""
    assert deployment.template.readiness is not None
    pod = deployment.create_pod()
    request = InFlight(pod, "inflight")  # keeps the front's shutdown busy for its grace
    pod.node.sigterm()
    wait_until_sync(lambda: probe(pod.front, "/tenants") == "refused", 10, interval=0.002)
    readiness = probe(pod.readyz, deployment.template.readiness.path)
    request.finish()
    assert readiness == 503
