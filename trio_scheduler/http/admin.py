"""The admin API: list nodes and instances, drain and undrain a node (behind
``[admin] token``). A node on another instance is drained through that instance."""

from __future__ import annotations

from typing import Any

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


def instance_rows(instances: dict[str, dict[str, str]], own_id: str) -> list[dict[str, Any]]:
    """The live instances, this one first, with their node and session counts."""
    rows = []
    for instance_id, fields in instances.items():
        rows.append({
            "instance_id": instance_id,
            "this": instance_id == own_id,
            "host": fields.get("host"),
            "port": int(fields["port"]) if fields.get("port", "").isdigit() else None,
            "nodes": int(fields.get("nodes", "0") or 0),
            "sessions": int(fields.get("sessions", "0") or 0),
            "accepting": fields.get("accepting") == "1",
        })
    rows.sort(key=lambda row: (not row["this"], row["instance_id"]))
    return rows


@attrs.frozen
class AdminApi:
    manager: NodeManager
    dispatcher: Dispatcher
    instance_id: str
    describe: Any  # () -> this instance's fields
    cluster: Any = None  # the other instances, when several share a store

    async def list_nodes(self, request: Request) -> Response:
        return Response.json(200, {"nodes": await node_rows(self.manager, self.dispatcher)})

    async def list_instances(self, request: Request) -> Response:
        instances = (
            self.cluster.instances() if self.cluster is not None
            else {self.instance_id: self.describe()}
        )
        return Response.json(200, {"instances": instance_rows(instances, self.instance_id)})

    async def drain(self, request: Request) -> Response:
        node_id = request.params["node_id"]
        if (forwarded := self._forward("drain", node_id)) is not None:
            return forwarded
        if await self.manager.drain(node_id):
            return Response.json(200, {"node_id": node_id, "status": "draining"})
        return _no_live_node(node_id)

    async def undrain(self, request: Request) -> Response:
        node_id = request.params["node_id"]
        if (forwarded := self._forward("undrain", node_id)) is not None:
            return forwarded
        status = await self.manager.undrain(node_id)
        if status is None:
            return _no_live_node(node_id)
        return Response.json(200, {"node_id": node_id, "status": str(status)})

    def _forward(self, command: str, node_id: str) -> Response | None:
        """A node on another instance: the command goes there (202, done shortly)."""
        node = self.dispatcher.snapshot.nodes.get(node_id)
        if node is None or node.local or self.cluster is None:
            return None
        self.cluster.forward(node.instance, command, node_id)
        return Response.json(202, {"node_id": node_id, "instance": node.instance,
                                   "status": f"{command} sent to its instance"})


def _no_live_node(node_id: str) -> Response:
    return Response.json(404, {"error": f"no live node {node_id[:64]}"})
