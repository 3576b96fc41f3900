"""The admin API: list nodes, drain and undrain one (behind ``[admin] token``)."""

from __future__ import annotations

import attrs

from trio_scheduler.dispatch.dispatcher import Dispatcher
from trio_scheduler.http.front_door import Request, Response
from trio_scheduler.management.owner import NodeManager


async def node_rows(manager: NodeManager, dispatcher: Dispatcher) -> list[dict]:
    """Every registered node as the owner knows it, with this instance's reservations."""
    rows = []
    for summary in await manager.list_nodes():
        row = attrs.asdict(summary)
        row["reserved_jobs"] = dispatcher.in_flight(summary.node_id)
        row["load"] = round(row["reserved_jobs"] / summary.max_concurrent_jobs, 3)
        rows.append(row)
    return rows


@attrs.frozen
class AdminApi:
    manager: NodeManager
    dispatcher: Dispatcher

    async def list_nodes(self, request: Request) -> Response:
        return Response.json(200, {"nodes": await node_rows(self.manager, self.dispatcher)})

    async def drain(self, request: Request) -> Response:
        node_id = request.params["node_id"]
        if await self.manager.drain(node_id):
            return Response.json(200, {"node_id": node_id, "status": "draining"})
        return _no_live_node(node_id)

    async def undrain(self, request: Request) -> Response:
        node_id = request.params["node_id"]
        status = await self.manager.undrain(node_id)
        if status is None:
            return _no_live_node(node_id)
        return Response.json(200, {"node_id": node_id, "status": str(status)})


def _no_live_node(node_id: str) -> Response:
    return Response.json(404, {"error": f"no live node {node_id[:64]}"})
