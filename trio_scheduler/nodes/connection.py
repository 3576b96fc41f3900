"""One task per ``/ws/node`` socket: registration, heartbeats, and job frames.

The connection task parses frames and forwards them: registrations and heartbeats to the
management owner, job frames to the session that owns the job (through the dispatcher's
job directory). A writer task drains the node's outbound queue, so nothing that sends to
a node ever waits for it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import structlog
import trio
import trio_websocket

from trio_scheduler.config import Config
from trio_scheduler.dispatch.dispatcher import Dispatcher, InvalidResult
from trio_scheduler.http.ws_batches import deliver_without_waiting, receive_batch, send_texts
from trio_scheduler.management.node_state import NodeLimits, check_languages, check_registration
from trio_scheduler.management.owner import NodeManager
from trio_scheduler.management.snapshot import NodeStatus
from trio_scheduler.nodes.identity import NodeIdentity
from trio_scheduler.nodes.link import NodeLink
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.codec import ProtocolError
from trio_scheduler.protocol.errors import CloseCode, ErrorCode, echo
from trio_scheduler.protocol.messages import (
    NODE_INBOUND,
    AsrPartialFromNode,
    JobAck,
    JobResult,
    JobStarted,
    NodeError,
    NodeHeartbeat,
    NodeRegister,
    NodeRegisterAck,
)
from trio_scheduler.sessions.limits import RateLimiter, Verdict

log = structlog.get_logger(__name__)


def new_node_id() -> str:
    return "node-" + secrets.token_hex(4).upper()


async def _no_standing(node_id: str) -> None:
    await trio.lowlevel.checkpoint()


@attrs.define
class NodeServices:
    config: Config
    manager: NodeManager
    dispatcher: Dispatcher
    # The status a node had on another instance it is moving from (None: unknown).
    standing: Callable[[str], Awaitable[NodeStatus | None]] = _no_standing


@attrs.define
class Registration:
    node_id: str
    epoch: int


async def run_node_socket(
    ws: trio_websocket.WebSocketConnection, services: NodeServices,
    identity: NodeIdentity = NodeIdentity(),
):
    """Serve one ``/ws/node`` socket until the node or the server closes it. ``identity``:
    the node ids its credential lets it claim."""
    nodes = services.config.nodes
    link = NodeLink(nodes.outbound_queue_size, nodes.outbound_queue_bytes)
    connection = NodeConnection(ws, services, link, identity)
    send_timeout = services.config.server.send_timeout_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write_frames, ws, link, send_timeout)
        nursery.start_soon(_close_when_asked, ws, link, nursery.cancel_scope, send_timeout)
        nursery.start_soon(_close_unless_registered, connection, link,
                           services.config.nodes.register_timeout_s)
        try:
            await connection.read_frames()
        finally:
            nursery.cancel_scope.cancel()
            # Shielded so cleanup also runs on shutdown, bounded so it cannot hang it.
            with trio.CancelScope(shield=True) as scope:
                scope.relative_deadline = services.config.server.shutdown_grace_s
                await connection.cleanup()


async def _write_frames(ws, link: NodeLink, send_timeout_s: float) -> None:
    try:
        while True:
            try:
                frames = await link.next_frames()
            except trio.EndOfChannel:
                return
            if not await send_texts(ws, frames, send_timeout_s):
                # A node that stops reading would hold its jobs and slots forever.
                link.close_soon(CloseCode.UNRESPONSIVE, "not reading its socket")
                return
    except trio_websocket.ConnectionClosed:
        pass


async def _close_when_asked(
    ws, link: NodeLink, scope: trio.CancelScope, timeout_s: float
) -> None:
    await link.close_requested.wait()
    with trio.move_on_after(timeout_s):
        await ws.aclose(link.close_code or 1000, link.close_reason)
    scope.cancel()


async def _close_unless_registered(connection: NodeConnection, link: NodeLink, timeout_s: float):
    await trio.sleep(timeout_s)
    if not connection.registered:
        link.close_soon(CloseCode.UNRESPONSIVE, "no node_register in time")


class NodeConnection:
    def __init__(
        self, ws, services: NodeServices, link: NodeLink, identity: NodeIdentity = NodeIdentity()
    ) -> None:
        self._ws = ws
        self._services = services
        self._link = link
        self._identity = identity
        self._registration: Registration | None = None
        nodes = services.config.nodes
        self._limits = NodeLimits(nodes.max_languages, nodes.max_concurrent_jobs_limit)
        self._partials = RateLimiter(nodes.max_partials_per_s)

    @property
    def registered(self) -> bool:
        return self._registration is not None

    async def read_frames(self) -> None:
        """Handle the node's frames; all those already received in one turn (a node's
        socket carries the jobs of many sessions, see http/ws_batches.py)."""
        deliver_without_waiting(self._ws)
        try:
            while True:
                for raw in await receive_batch(self._ws):
                    try:
                        await self._on_frame(raw)
                    except Exception:
                        # A bug must not cost the node its connection (nor its users their
                        # jobs): the frame is dropped, logged and answered.
                        log.exception("node frame failed", node_id=self.node_id)
                        await self._send_error(ErrorCode.INTERNAL_ERROR,
                                               "the scheduler failed to handle this frame")
        except trio_websocket.ConnectionClosed:
            pass

    @property
    def node_id(self) -> str | None:
        return self._registration.node_id if self._registration is not None else None

    async def _on_frame(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self._send_error(ErrorCode.INVALID_MESSAGE, "binary frames are not supported")
            return
        try:
            message = codec.decode(
                raw, NODE_INBOUND, self._services.config.server.decode_limits
            )
        except ProtocolError as exc:
            await self._send_error(exc.code, exc.message, exc.details)
            self._fail_unreadable_result(raw, exc)
            return
        if isinstance(message, NodeRegister):
            await self._on_register(message)
            return
        registration = self._registration
        if registration is None:
            if not isinstance(message, NodeHeartbeat):
                await self._send_error(
                    ErrorCode.INVALID_MESSAGE, f"{message.TYPE} before node_register"
                )
            # The real agent heartbeats on a fresh socket before registering: ignore quietly.
            return
        if message.node_id != registration.node_id:
            await self._send_error(
                ErrorCode.INVALID_MESSAGE,
                f"node_id {echo(message.node_id)} is not this socket's node "
                f"{registration.node_id!r}",
                {"field": "node_id"},
            )
            return
        match message:
            case NodeHeartbeat():
                rejection = check_languages(message.language_capabilities, self._limits)
                if rejection is not None:
                    await self._send_error(rejection.code, rejection.message, rejection.details)
                    return
                await self._services.manager.heartbeat(
                    registration.node_id, registration.epoch, message
                )
            case AsrPartialFromNode():
                if await self._partial_allowed(message):
                    self._services.dispatcher.route_from_node(
                        registration.node_id, message.job_id, message.session_id, message, raw
                    )
            case JobAck() | JobStarted() | JobResult():
                self._services.dispatcher.route_from_node(
                    registration.node_id, message.job_id, message.session_id, message, raw
                )
            case NodeError():
                log.warning("node reported an error", node_id=registration.node_id,
                            code=message.code, message=message.message)

    def _fail_unreadable_result(self, raw: str, error: ProtocolError) -> None:
        """A ``job_result`` that names its job but cannot be read fails that job at once
        (the node got its error; the user gets the utterance's ``missing_result``)."""
        if self._registration is None:
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict) or data.get("type") != "job_result":
            return
        job_id, session_id = data.get("job_id"), data.get("session_id")
        if isinstance(job_id, str) and isinstance(session_id, str):
            self._services.dispatcher.route_from_node(
                self._registration.node_id, job_id, session_id,
                InvalidResult(job_id, session_id, error.message),
            )

    async def _partial_allowed(self, message: AsrPartialFromNode) -> bool:
        """Partials are bounded in size and rate; results never are.

        A partial is superseded by the next one and by the job's result, so dropping one
        loses nothing the user keeps; every other job frame carries state and is never
        dropped here.
        """
        counters = self._services.dispatcher.counters
        limit = self._services.config.nodes.max_partial_chars
        if len(message.text) > limit:
            counters.inc("asr_partials_refused")
            await self._send_error(
                ErrorCode.INVALID_MESSAGE,
                f"asr_partial text is longer than {limit} characters",
                {"field": "text"},
            )
            return False
        verdict = self._partials.check(trio.current_time())
        if verdict is Verdict.ALLOW:
            return True
        counters.inc("asr_partials_dropped")
        if verdict is Verdict.REFUSE:
            await self._send_error(
                ErrorCode.RATE_LIMITED,
                f"more than {self._services.config.nodes.max_partials_per_s:g} asr_partial "
                "frames per second; extra ones are dropped",
            )
        return False

    async def _on_register(self, message: NodeRegister) -> None:
        rejection = check_registration(
            message, require_gpu=self._services.config.nodes.require_gpu, limits=self._limits
        )
        if rejection is not None:
            log.info("node refused", code=str(rejection.code), why=rejection.message)
            await self._send_error(rejection.code, rejection.message, rejection.details)
            return
        previous = self._registration
        node_id = (
            message.node_id or (previous.node_id if previous else None)
            or self._identity.new_id() or new_node_id()
        )
        if not self._identity.allows(node_id):
            # One node's credential must not let it take another node (and its users'
            # audio) over.
            why = f"this node's token may not register as {echo(node_id)}"
            log.info("node refused", code=str(ErrorCode.UNAUTHORIZED), why=why)
            await self._send_error(ErrorCode.UNAUTHORIZED, why, {"field": "node_id"})
            return
        if previous is not None and previous.node_id != node_id:
            await self._send_error(
                ErrorCode.NODE_ID_CONFLICT,
                f"this socket is registered as {previous.node_id}; open a new socket for "
                f"{node_id}",
                {"field": "node_id"},
            )
            return
        standing = None
        if message.node_id is not None and previous is None:
            standing = await self._services.standing(node_id)
        registered = await self._services.manager.register(
            node_id, message, self._link, standing
        )
        self._registration = Registration(node_id, registered.epoch)
        structlog.contextvars.bind_contextvars(node_id=node_id)
        # Through the outbound queue, so the ack precedes any job_assign for this node.
        self._link.send(
            codec.encode(
                NodeRegisterAck(
                    node_id=node_id, message="registered", pairing_code=registered.pairing_code
                )
            )
        )

    async def _send_error(self, code: ErrorCode, message: str, details: Any = None) -> None:
        # Through the outbound queue like every frame: one writer, a bounded wait.
        if not self._link.send(codec.encode_error(code, message, details)):
            log.warning("node error frame not sent: outbound queue full", code=str(code))

    async def cleanup(self) -> None:
        """The socket is gone: leave the pools, and fail over the node's jobs — unless a
        newer socket took the node over, in which case nothing here is ours to touch."""
        self._link.shut()
        registration = self._registration
        if registration is None:
            return
        removed = await self._services.manager.disconnect(registration.node_id, registration.epoch)
        if removed:
            self._services.dispatcher.node_lost(registration.node_id, self._link)
