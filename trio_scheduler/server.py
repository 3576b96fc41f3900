"""The nursery tree: ``serve(config)`` runs the whole scheduler until cancelled.

    serve
    ├── store (memory, or the Redis bridge task)
    ├── management owner (+ heartbeat sweeper)
    ├── snapshot mirror to the store
    └── listener → one task per connection (session task / node task / HTTP reply)

Cancelling ``serve`` is the graceful stop: listeners stop accepting, every WebSocket is
closed with 1001 (shielded, bounded by ``shutdown_grace_s``), sessions release their
reservations, then the store closes.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import parse_qs
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import structlog
import trio
import trio_websocket

from trio_scheduler.config import Config
from trio_scheduler.dispatch.dispatcher import Dispatcher
from trio_scheduler.http.front_door import FrontDoor, Request, Response
from trio_scheduler.management.node_state import HealthRules
from trio_scheduler.management.owner import NodeManager
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.nodes.connection import NodeServices, run_node_socket
from trio_scheduler.sessions.session import SessionServices, run_session_socket
from trio_scheduler.store import open_store
from trio_scheduler.store.base import Store
from trio_scheduler.trace import RecordingSocket, TraceRecorder

log = structlog.get_logger(__name__)


@attrs.define
class Scheduler:
    """The scheduler's parts, wired together; independent of how sockets arrive.

    ``serve`` puts it behind a TCP port; tests may also feed it in-memory sockets.
    """

    config: Config
    store: Store
    publisher: SnapshotPublisher
    manager: NodeManager
    dispatcher: Dispatcher
    sessions: SessionServices
    nodes: NodeServices
    instance_id: str
    port: int | None = None
    accepting: bool = True
    recorder: TraceRecorder | None = None

    @classmethod
    def build(cls, config: Config, store: Store, instance_id: str | None = None) -> Scheduler:
        publisher = SnapshotPublisher()
        nodes = config.nodes
        manager = NodeManager(
            publisher,
            default_max_concurrent_jobs=nodes.default_max_concurrent_jobs,
            heartbeat_interval_s=nodes.heartbeat_interval_s,
            heartbeat_timeout_s=nodes.heartbeat_timeout_s,
            health=HealthRules(
                required_services=frozenset(nodes.required_services),
                resource_threshold_percent=nodes.resource_threshold_percent,
                max_gpu_queue=nodes.max_gpu_queue,
            ),
            pairing_code_ttl_s=nodes.pairing_code_ttl_s,
        )
        dispatcher = Dispatcher(
            publisher,
            store,
            job_timeout_ms=config.jobs.timeout_ms,
            reservation_margin_ms=config.jobs.reservation_margin_ms,
            max_waiting_per_pool=config.jobs.max_waiting_per_pool,
            dedup_window_ms=config.jobs.dedup_window_ms,
        )
        recorder = None
        if config.trace.path:
            recorder = TraceRecorder(
                Path(config.trace.path), audio=config.trace.audio,
                queue_size=config.trace.queue_size,
            )
        return cls(
            recorder=recorder,
            config=config,
            store=store,
            publisher=publisher,
            manager=manager,
            dispatcher=dispatcher,
            sessions=SessionServices(config, dispatcher),
            nodes=NodeServices(config, manager, dispatcher),
            instance_id=instance_id or "inst-" + secrets.token_hex(4),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background tasks: management owner and the store mirror."""
        async with trio.open_nursery() as nursery:
            if self.recorder is not None:
                await nursery.start(self.recorder.run)
            await nursery.start(self.manager.run)
            await nursery.start(self.publisher.mirror_to_store, self.store, self.instance_id)
            task_status.started()

    @asynccontextmanager
    async def background_tasks(self) -> AsyncIterator[trio.Nursery]:
        """Run the background tasks around the body (which serves the sockets).

        The owner and the mirror must outlive the connections, whose cleanup still talks
        to them during a graceful stop: they run shielded and are cancelled after the body.
        The nursery yielded is just as long-lived, for tasks that must also see a stop
        through (the WebSocket protocol tasks that carry the closing handshakes).
        """
        background = trio.CancelScope(shield=True)

        async def run_background(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
            with background:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.run)
                    task_status.started(nursery)

        async with trio.open_nursery() as nursery:
            service_nursery = await nursery.start(run_background)
            try:
                yield service_nursery
            finally:
                self.accepting = False
                background.cancel()

    async def session_socket(self, ws: trio_websocket.WebSocketConnection, _: Request | None = None):
        if self.recorder is not None:
            ws = RecordingSocket(ws, self.recorder, "session")
        await run_session_socket(ws, self.sessions)

    async def node_socket(self, ws: trio_websocket.WebSocketConnection, _: Request | None = None):
        if self.recorder is not None:
            ws = RecordingSocket(ws, self.recorder, "node")
        await run_node_socket(ws, self.nodes)

    def authorize(self, request: Request) -> Response | None:
        """Refuse a WebSocket upgrade before the handshake (None: let it through).

        With ``[nodes] auth_tokens`` set, a node must present one of them: an
        unauthenticated peer must never receive a user's audio. Sessions may be limited to
        ``[sessions] allowed_origins`` and/or ``[sessions] auth_tokens``.
        """
        tokens = self.config.nodes.auth_tokens
        if request.path == "/ws/node" and tokens:
            if not any(_token_matches(request, token) for token in tokens):
                return Response.json(401, {"error": "a valid node token is required"})
        if request.path == "/ws/session":
            sessions = self.config.sessions
            origin = request.headers.get("origin")
            if sessions.allowed_origins and origin not in sessions.allowed_origins:
                return Response.json(403, {"error": "origin not allowed"})
            if sessions.auth_tokens and not any(
                _token_matches(request, token) for token in sessions.auth_tokens
            ):
                return Response.json(401, {"error": "a valid session token is required"})
        return None

    async def http(self, request: Request) -> Response:
        if request.path.startswith("/admin/"):
            return await self._admin(request)
        if request.method != "GET":
            return Response.json(405, {"error": "method not allowed"})
        if request.path == "/health":
            return Response.json(200, {"status": "ok"})
        if request.path == "/ready":
            if not self.accepting:
                return Response.json(503, {"status": "not ready", "reason": "shutting down"})
            if not await self.store.ping():
                return Response.json(503, {"status": "not ready", "reason": "store unreachable"})
            return Response.json(200, {"status": "ready"})
        return Response.json(404, {"error": "not found"})


    async def _admin(self, request: Request) -> Response:
        token = self.config.admin.token
        if not token:
            return Response.json(403, {"error": "the admin API is off ([admin] token unset)"})
        if not _token_matches(request, token, query=False):
            return Response.json(401, {"error": "admin token required"})
        parts = request.path.strip("/").split("/")
        if parts == ["admin", "nodes"] and request.method == "GET":
            return Response.json(200, {"nodes": await self._node_rows()})
        if len(parts) == 4 and parts[:2] == ["admin", "nodes"] and parts[3] == "drain":
            if request.method != "POST":
                return Response.json(405, {"error": "method not allowed"})
            if await self.manager.drain(parts[2]):
                return Response.json(200, {"node_id": parts[2], "status": "draining"})
            return Response.json(404, {"error": f"no live node {parts[2]}"})
        return Response.json(404, {"error": "not found"})

    async def _node_rows(self) -> list[dict]:
        rows = []
        for summary in await self.manager.list_nodes():
            row = attrs.asdict(summary)
            row["reserved_jobs"] = self.dispatcher.in_flight(summary.node_id)
            row["load"] = round(row["reserved_jobs"] / summary.max_concurrent_jobs, 3)
            rows.append(row)
        return rows


def _token_matches(request: Request, token: str, *, query: bool = True) -> bool:
    presented = []
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        presented.append(authorization[7:].strip())
    if query:
        presented.extend(parse_qs(request.query).get("token", []))
    return any(secrets.compare_digest(p.encode(), token.encode()) for p in presented)


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the scheduler; reports the running :class:`Scheduler` (with its bound port)."""
    async with open_store(
        config.store.redis_url,
        key_prefix=config.store.key_prefix,
        socket_timeout_s=config.store.socket_timeout_s,
        call_timeout_s=config.store.call_timeout_ms / 1000,
    ) as store:
        scheduler = Scheduler.build(config, store)
        async with scheduler.background_tasks() as service_nursery:
            await _serve_connections(scheduler, service_nursery, task_status)


async def _serve_connections(
    scheduler: Scheduler, service_nursery: trio.Nursery, task_status: trio.TaskStatus[Scheduler]
) -> None:
    config = scheduler.config
    listeners = await trio.open_tcp_listeners(config.server.port, host=config.server.host)
    scheduler.port = listeners[0].socket.getsockname()[1]
    front_door = FrontDoor(
        websocket_routes={
            "/ws/session": scheduler.session_socket,
            "/ws/node": scheduler.node_socket,
        },
        http_handler=scheduler.http,
        max_message_bytes=config.server.max_message_bytes,
        max_head_bytes=config.server.max_request_head_bytes,
        handshake_timeout_s=config.server.handshake_timeout_s,
        close_timeout_s=config.server.shutdown_grace_s,
        max_connections=config.server.max_connections,
        protocol_nursery=service_nursery,
        authorize=scheduler.authorize,
    )
    if not config.nodes.auth_tokens:
        log.warning(
            "node authentication is OFF: any peer can register as a node and receive "
            "users' audio; set [nodes] auth_tokens in production"
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, front_door.handle, listeners)
        log.info(
            "scheduler listening",
            host=config.server.host,
            port=scheduler.port,
            store="redis" if config.store.redis_url else "memory",
            instance=scheduler.instance_id,
        )
        task_status.started(scheduler)
        await trio.sleep_forever()
