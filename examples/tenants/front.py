"""The tenants HTTP API, served by every node: any node's front reaches any tenant.

=============================  ==========================================================
``POST /tenants/{id}/hit``     take a token: 200 when allowed, 429 (with ``Retry-After``
                               when the bucket refills) when limited; the body has the
                               counts. Starts the tenant's worker on first use.
``GET /tenants/{id}``          the tenant's bucket and counts, the node that runs it and
                               its fencing token; 404 for a tenant never hit.
``GET /tenants``               every tenant the cluster knows, where it runs (this node's
                               registry: no calls).
=============================  ==========================================================

Errors are JSON ``{"error": ...}``: 400 bad tenant id, 404 unknown tenant or path, 405 wrong
method, 503 the cluster cannot serve the tenant now, 504 no reply in time.

Requests go through ``hub.call``, so the tenant's worker answers wherever it runs, and a
request that races a move follows the tenant to its next node (processhub retries a call
that was not delivered). A hit is counted at most once: a call either reaches the worker
and is counted, or fails as "not delivered" and is retried.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from examples.tenants.httpd import Request, Response
from examples.tenants.limiter import Policy
from examples.tenants.worker import TARGET
from hub import ChildSpec, ClusterApi
from hub.errors import CallTimeout, ChildNotFound, HubError

__all__ = ["TAG", "TenantsFront", "child_id_of"]

#: ``metadata["tag"]`` of tenant children, for ``tag_query``.
TAG = "tenant"
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CHILD_PREFIX = "tenant-"


def child_id_of(tenant: str) -> str:
    """The child id of a tenant's worker: ``tenant-{id}``."""
    return _CHILD_PREFIX + tenant


class _Unavailable(Exception):
    """The tenant's worker could not be started."""


class TenantsFront:
    """Routes HTTP requests to tenant workers through ``hub`` (a node or a client).

    Args:
        hub: the node this front runs in (or a :class:`~hub.HubClient`: any
            :class:`~hub.ClusterApi`).
        policy: the limits of tenants this front creates.
        call_timeout: seconds a request may take, starting the tenant included.
    """

    def __init__(self, hub: ClusterApi, policy: Policy, *, call_timeout: float = 5.0) -> None:
        self.hub = hub
        self.policy = policy
        self.call_timeout = call_timeout

    async def handle(self, request: Request) -> Response:
        """Answer one request (see the module docstring)."""
        action: Callable[[], Awaitable[Response]]
        tenant: str | None = None
        match [unquote(part) for part in request.path.strip("/").split("/")]:
            case ["tenants"]:
                method, action = "GET", self._list
            case ["tenants", tenant]:
                method, action = "GET", functools.partial(self._get, tenant)
            case ["tenants", tenant, "hit"]:
                method, action = "POST", functools.partial(self._hit, tenant)
            case _:
                return _error(HTTPStatus.NOT_FOUND, "no such path")
        if request.method != method:
            return Response(405, {"error": f"use {method}"}, {"Allow": method})
        if tenant is not None and not _TENANT_ID.fullmatch(tenant):
            return _error(HTTPStatus.BAD_REQUEST, "tenant ids are [A-Za-z0-9][A-Za-z0-9_.-]*")
        try:
            return await action()
        except ChildNotFound:
            return _error(HTTPStatus.NOT_FOUND, "unknown tenant")
        except CallTimeout as exc:
            return _error(HTTPStatus.GATEWAY_TIMEOUT, str(exc))
        except (HubError, _Unavailable) as exc:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"{type(exc).__name__}: {exc}")

    async def _list(self) -> Response:
        tenants = []
        for child_id, handles in sorted(self.hub.tag_query(TAG).items()):
            handle = next(iter(handles.values()), None)
            tenants.append(
                {
                    "tenant": child_id.removeprefix(_CHILD_PREFIX),
                    "node": handle.node_id if handle else None,
                    "fencing_token": handle.fencing_token if handle else None,
                    "state": handle.state.value if handle else "pending",
                }
            )
        return Response(200, {"tenants": tenants})

    async def _get(self, tenant: str) -> Response:
        reply = await self.hub.call(child_id_of(tenant), {"op": "get"}, timeout=self.call_timeout)
        return Response(200, {"tenant": tenant, **reply})

    async def _hit(self, tenant: str) -> Response:
        reply = await self._call_starting(child_id_of(tenant), {"op": "hit"})
        if reply["allowed"]:
            return Response(200, {"tenant": tenant, **reply})
        retry_after = reply.get("retry_after")
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        return Response(429, {"tenant": tenant, **reply}, headers)

    async def _call_starting(self, child_id: str, message: Any) -> Any:
        """``hub.call``, starting the child first if the cluster does not know it yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise CallTimeout(child_id, None, f"not started within {self.call_timeout}s")
            try:
                return await self.hub.call(child_id, message, timeout=left)
            except ChildNotFound:
                await self._start(child_id, left)

    async def _start(self, child_id: str, timeout: float) -> None:
        spec = ChildSpec(
            id=child_id, start=TARGET, args=self.policy.to_args(), metadata={"tag": TAG}
        )
        result = await self.hub.start_child(spec, wait=True, timeout=timeout, check_existing=False)
        for failure in result.errors:
            if failure.reason != "already_started":
                raise _Unavailable(failure.reason)
            # Started by another front a moment ago: wait until this node's registry sees it.
            await asyncio.sleep(0.05)


def _error(status: HTTPStatus, message: str) -> Response:
    return Response(int(status), {"error": message})
