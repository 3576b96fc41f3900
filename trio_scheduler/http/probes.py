"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from trio_scheduler.http.front_door import Request, Response
from trio_scheduler.store.base import Store


async def health(request: Request) -> Response:
    """Alive: the event loop answers. Says nothing about the store or the nodes."""
    return Response.json(200, {"status": "ok"})


@attrs.frozen
class Readiness:
    """Ready: the server takes new work (not draining, not overloaded) and its store
    answers. ``overloaded`` is admission control's verdict: a load balancer that reads
    it sends new browsers to another instance meanwhile."""

    store: Store
    accepting: Callable[[], bool]
    overloaded: Callable[[], bool] = lambda: False

    async def ready(self, request: Request) -> Response:
        if not self.accepting():
            return Response.json(503, {"status": "not ready", "reason": "shutting down"})
        if self.overloaded():
            return Response.json(503, {"status": "not ready", "reason": "overloaded"})
        if not await self.store.ping():
            return Response.json(503, {"status": "not ready", "reason": "store unreachable"})
        return Response.json(200, {"status": "ready"})
