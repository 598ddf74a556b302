"""Logs of live hubs on an etcd with auth and an RPC token: every event on one line (JSON
and text), child start lines carry ``child_id``/``node_id``/``token``, and no secret (etcd
password, etcd auth token, RPC token, right or wrong) ever reaches the output, even at
DEBUG. Spec args are user data: never logged at INFO or above."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from hub import ChildSpec, Hub
from hub.client import HubClient
from hub.errors import RpcAuthError, StoreAuthError
from hub.logs import make_handler
from hub.messaging.rpc import RpcConfig
from hub.operate.localetcd import LocalEtcd
from integration import state_workers

PASSWORD = "etcd-pw-7f3Kq9"
WRONG_PASSWORD = "etcd-wrong-Q1zT"
RPC_TOKEN = "rpc-token-Xw82pL"
WRONG_TOKEN = "rpc-wrong-J5mR"
ARG_SECRET = "user-arg-V9cW"
ECHO = f"{state_workers.__name__}:Echo"


def etcdctl(etcd: LocalEtcd, *args: str) -> None:
    subprocess.run(
        [str(etcd.etcdctl), f"--endpoints={etcd.url}", "--command-timeout=5s", *args],
        capture_output=True,
        timeout=30,
        check=True,
    )


@pytest.fixture
def auth_etcd(own_etcd: LocalEtcd) -> LocalEtcd:
    """A fresh etcd with auth on: user root, password :data:`PASSWORD`."""
    etcdctl(own_etcd, "user", "add", f"root:{PASSWORD}")
    etcdctl(own_etcd, "auth", "enable")
    return own_etcd


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Everything logged at DEBUG and above, through hub.logs' JSON and text handlers."""
    root = logging.getLogger()
    as_json, as_text = io.StringIO(), io.StringIO()
    handlers = [make_handler(True, as_json), make_handler(False, as_text)]
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield as_json, as_text
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


async def test_no_secrets_and_child_fields_in_live_logs(
    auth_etcd: LocalEtcd, hub_prefix: str, captured: tuple[io.StringIO, io.StringIO]
) -> None:
    options: dict[str, Any] = {
        "endpoints": [auth_etcd.endpoint],
        "username": "root",
        "password": PASSWORD,
        "lease_ttl": 3,
        "prefix": hub_prefix,
        "rpc": RpcConfig(token=RPC_TOKEN),
    }
    ids = [f"log-{i}" for i in range(8)]
    async with (
        Hub("lg", node_id="l1", **options) as l1,
        Hub("lg", node_id="l2", **options) as l2,
    ):
        result = await l1.start_children(
            [ChildSpec(id=c, start=ECHO, args={"secret": ARG_SECRET}) for c in ids],
            wait=True,
            timeout=10,
        )
        assert result.ok
        started = {(h.child_id, h.node_id, h.fencing_token) for h in result.started}
        remote = next(h for h in result.started if h.node_id == "l2")
        reply = await l1.call(remote.child_id, "hi", timeout=5)  # RPC carrying the token
        assert reply["node"] == "l2"
        intruder_options = {**options, "rpc": RpcConfig(token=WRONG_TOKEN)}
        async with HubClient("lg", **intruder_options) as intruder:
            with pytest.raises(RpcAuthError):
                await intruder.call(remote.child_id, "hi", timeout=5)
        etcd_tokens = {str(h.store._metadata[0][1]) for h in (l1, l2) if h.store._metadata}
        assert etcd_tokens
    with pytest.raises(StoreAuthError):
        async with Hub("lg", node_id="l3", **{**options, "password": WRONG_PASSWORD}):
            pass

    as_json, as_text = (stream.getvalue() for stream in captured)
    for secret in (PASSWORD, WRONG_PASSWORD, RPC_TOKEN, WRONG_TOKEN, *etcd_tokens):
        assert secret not in as_json and secret not in as_text
    events = [json.loads(line) for line in as_json.splitlines()]
    assert len(events) == len(as_text.splitlines())  # one line per event in both formats
    assert any(e["message"].startswith("refused an RPC") for e in events)  # path exercised
    for event in events:
        if event["level"] != "debug":
            assert ARG_SECRET not in json.dumps(event), event

    start_lines = [
        e for e in events if e["logger"] == "hub.core.supervisor" and " started " in e["message"]
    ]
    assert {(e["child_id"], e["node_id"], e["token"]) for e in start_lines} >= started
    for line in as_text.splitlines():
        if "logger=hub.core.supervisor" in line and "started" in line:
            assert " node_id=" in line and " child_id=" in line and " token=" in line
