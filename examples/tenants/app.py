"""What ``processhub node --app examples.tenants.app`` loads: the tenants HTTP front.

``processhub node`` runs :func:`processhub_node` beside the node once it has joined, and
cancels it when the node starts draining (SIGTERM, or ``processhub drain``). Configuration,
from the environment:

==============================  ===================  ======================================
``TENANTS_HTTP``                ``0.0.0.0:8080``     where the front listens (port 0: any)
``TENANTS_CAPACITY``            ``10``               burst: tokens a new tenant starts with
``TENANTS_REFILL_PER_SECOND``   ``1``                tokens a tenant earns back per second
==============================  ===================  ======================================

Allow the worker with ``PROCESSHUB_ALLOW=examples.tenants.*`` (its target is
:data:`examples.tenants.worker.TARGET`) and run the node with ``--migration hot``
(``PROCESSHUB_MIGRATION=hot``) so that buckets move with their tenants. Once listening, the
front prints one JSON line on stdout, like the node's own ``ready`` line:
``{"event": "tenants_http", "node_id": ..., "address": "host:port"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from examples.tenants.front import TenantsFront
from examples.tenants.httpd import serve
from examples.tenants.limiter import Policy
from hub import ClusterApi

__all__ = ["policy_from_env", "processhub_node"]

DEFAULT_BIND = "0.0.0.0:8080"


def policy_from_env(env: Mapping[str, str]) -> Policy:
    """The limits of new tenants, from ``TENANTS_CAPACITY``/``TENANTS_REFILL_PER_SECOND``.

    Raises:
        ValueError: a value is not a number, or out of range (see :class:`Policy`).
    """
    defaults = Policy()
    return Policy(
        capacity=float(env.get("TENANTS_CAPACITY", defaults.capacity)),
        refill_per_second=float(env.get("TENANTS_REFILL_PER_SECOND", defaults.refill_per_second)),
    )


async def processhub_node(hub: ClusterApi) -> None:
    """Serve the tenants API for ``hub`` until cancelled (the node drains)."""
    front = TenantsFront(hub, policy_from_env(os.environ))

    def announce(address: str) -> None:
        line = {"event": "tenants_http", "node_id": hub.node_id, "address": address}
        print(json.dumps(line), flush=True)

    await serve(os.environ.get("TENANTS_HTTP", DEFAULT_BIND), front.handle, on_listening=announce)
