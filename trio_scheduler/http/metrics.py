"""``GET /metrics``: the Prometheus text exposition of the scheduler's registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from trio_scheduler.http.front_door import HttpHandler, Request, Response
from trio_scheduler.metrics.exposition import CONTENT_TYPE, render


def metrics_endpoint(registry: CollectorRegistry, labels: Mapping[str, str]) -> HttpHandler:
    async def metrics(request: Request) -> Response:
        return Response(200, render(registry, labels), CONTENT_TYPE)

    return metrics
