"""The one place gRPC errors from etcd become hub errors.

:func:`map_errors` wraps every call :class:`~hub.etcd.store.Store` makes and re-raises
``from`` the original, with the most specific class :func:`translate` finds: auth
failures, a lease etcd does not know, a compacted revision, a reply or request too large,
then the status code table (unavailable, deadline, auth), else plain
:class:`~hub.errors.StoreError`. A local ``TimeoutError`` (an ``asyncio.timeout`` around a
stream) is :class:`~hub.errors.StoreTimeout`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import grpc
import grpc.aio

from hub.errors import (
    RequestTooLarge,
    RevisionCompacted,
    StoreAuthError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from hub.etcd.kv import LeaseNotFound, ResponseTooLarge

__all__ = ["is_auth_failure", "map_errors", "translate"]

_CODE_TO_ERROR: dict[grpc.StatusCode, type[StoreError]] = {
    grpc.StatusCode.UNAVAILABLE: StoreUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: StoreTimeout,
    grpc.StatusCode.UNAUTHENTICATED: StoreAuthError,
    grpc.StatusCode.PERMISSION_DENIED: StoreAuthError,
    grpc.StatusCode.CANCELLED: StoreUnavailable,
}


#: etcd reports most auth failures as INVALID_ARGUMENT (wrong password, no user name) or in
#: a watch's cancel reason, so they are recognised by their message.
_AUTH_FAILURES: Final = (
    "authentication failed",
    "user name is empty",
    "invalid auth token",
    "permission denied",
    "revision of auth store is old",
)


def is_auth_failure(details: str) -> bool:
    """Whether an etcd error message (or a watch's cancel reason) is an auth failure."""
    return any(fragment in details for fragment in _AUTH_FAILURES)


def translate(exc: grpc.aio.AioRpcError) -> StoreError:
    """Map a gRPC error to the most specific hub error."""
    code = exc.code()
    details = exc.details() or ""
    if is_auth_failure(details):
        return StoreAuthError(f"etcd {code.name}: {details}")
    if "lease not found" in details:
        return LeaseNotFound(details)
    if "required revision has been compacted" in details:
        return RevisionCompacted(0)
    if "Received message larger than max" in details:
        # gRPC's own client-side check (etcd's server says "received", lower case): the
        # request was executed, its reply did not fit our receive limit.
        return ResponseTooLarge(details)
    if "too large" in details or "larger than max" in details:
        return RequestTooLarge(details)
    cls = _CODE_TO_ERROR.get(code, StoreError)
    return cls(f"etcd {code.name}: {details}")


@contextmanager
def map_errors() -> Iterator[None]:
    """Re-raise gRPC errors and local timeouts as hub errors, ``from`` the original."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise translate(exc) from exc
    except TimeoutError as exc:
        raise StoreTimeout("etcd call timed out") from exc
