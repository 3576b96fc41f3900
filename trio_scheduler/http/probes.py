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
    """Ready: the server takes new work (not draining) and its store answers."""

    store: Store
    accepting: Callable[[], bool]

    async def ready(self, request: Request) -> Response:
        if not self.accepting():
            return Response.json(503, {"status": "not ready", "reason": "shutting down"})
        if not await self.store.ping():
            return Response.json(503, {"status": "not ready", "reason": "store unreachable"})
        return Response.json(200, {"status": "ready"})
