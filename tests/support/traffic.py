"""Client traffic for the tenants example: hits through the fronts of the nodes in service.

Used by the pod-lifecycle and mixed-version tests: a thread hits tenants round robin while
pods come and go, the way a Service spreads requests over the pods it has as endpoints.
Each answer must carry the tenant's next count, so a lost or double-counted hit shows.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from support.cluster import http_json


class Front(Protocol):
    """What a pod or node offers the traffic: a name and its front's address."""

    @property
    def name(self) -> str: ...

    @property
    def front(self) -> str: ...


F = TypeVar("F", bound=Front)


class Traffic(Generic[F]):
    """Hits tenants through the fronts in service, one hit at a time.

    Connection refused means not delivered (the next front is tried); any other failure
    leaves the hit's fate unknown and is recorded in ``problems``. Remembers which node's
    front sent each answered call and which node's worker answered it (``routes``).
    """

    def __init__(self, in_service: list[F]) -> None:
        self.in_service = in_service
        self.tenants: list[str] = []  # what running() hits when given no list
        self.hits: dict[str, int] = {}
        self.routes: set[tuple[str, str]] = set()  # (front's name, answering node)
        self.problems: list[str] = []
        self.answered = 0
        self.lock = threading.Lock()  # one hit at a time: counts stay predictable

    def hit(self, tenant: str, via: F | None = None) -> dict[str, Any]:
        """One hit through ``via`` or any front in service; the answer ({} if none)."""
        with self.lock:
            fronts = (
                [via] if via is not None else random.sample(self.in_service, len(self.in_service))
            )
            expected = self.hits.get(tenant, 0) + 1
            for front in fronts:
                try:
                    status, body = http_json("POST", front.front, f"/tenants/{tenant}/hit")
                except ConnectionRefusedError:
                    continue
                except OSError as exc:
                    self.problems.append(f"{tenant}: hit {expected} via {front.name}: {exc!r}")
                    return {}
                if status not in (200, 429):
                    self.problems.append(
                        f"{tenant}: hit {expected} via {front.name}: {status} {body}"
                    )
                    return {}
                if body["hits"] != expected:
                    self.problems.append(f"{tenant}: hit {expected} counted as {body['hits']}")
                self.hits[tenant] = body["hits"]
                self.routes.add((front.name, body["node"]))
                self.answered += 1
                return dict(body)
            self.problems.append(f"{tenant}: hit {expected}: no front in service answered")
            return {}

    def add(self, tenant: str, via: F) -> dict[str, Any]:
        """Create a tenant by hitting it through ``via`` (its front writes the spec)."""
        body = self.hit(tenant, via)
        assert body, self.problems
        with self.lock:
            self.tenants.append(tenant)
        return body

    def hit_each(self, tenants: Sequence[str], times: int = 1) -> None:
        """Hit every tenant ``times`` times; stop at the first problem."""
        for tenant in tenants:
            for _ in range(times):
                self.hit(tenant)
                assert not self.problems, self.problems

    @contextlib.contextmanager
    def running(self, tenants: Sequence[str] | None = None) -> Iterator[None]:
        """Hit ``tenants`` (default: ``self.tenants``, as it grows) round robin from a
        thread while the block runs."""
        halt = threading.Event()

        def loop() -> None:
            for i in itertools.count():
                with self.lock:
                    pool = self.tenants if tenants is None else tenants
                    tenant = pool[i % len(pool)]
                if halt.is_set():
                    return
                self.hit(tenant)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            halt.set()
            thread.join(30)

    def enter(self, front: F) -> None:
        """Into service: the endpoints controller's part once a pod is ready."""
        with self.lock:
            self.in_service.append(front)

    def leave(self, front: F) -> None:
        """Out of service before SIGTERM, as the endpoints controller does for a pod."""
        with self.lock:
            self.in_service.remove(front)
