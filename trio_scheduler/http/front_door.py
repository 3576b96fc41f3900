"""One TCP port for WebSocket upgrades and plain HTTP.

trio-websocket answers any request that is not an upgrade with 400, so the front door
reads the request head itself (with h11), answers plain HTTP requests directly, and hands
upgrades to trio-websocket by replaying the bytes it already read. Routing happens before
the handshake, so a wrong path or a refused peer gets an HTTP status, never a half-open
WebSocket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import math
from http import HTTPStatus

import attrs
import h11
import orjson
import structlog
import trio
import trio_websocket

from trio_scheduler.http.stream import ReplayStream
from trio_scheduler.http.ws_frames import parse_common_frames

log = structlog.get_logger(__name__)


@attrs.frozen
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; the last value wins
    params: Mapping[str, str] = attrs.field(factory=dict)  # from the route's path template

    @property
    def is_websocket(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # beyond content type and length

    @classmethod
    def json(cls, status: int, data: object) -> Response:
        return cls(status, orjson.dumps(data))

    def with_headers(self, *headers: tuple[str, str]) -> Response:
        return attrs.evolve(self, headers=self.headers + headers)


CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001

WebSocketHandler = Callable[[trio_websocket.WebSocketConnection, Request], Awaitable[None]]
HttpHandler = Callable[[Request], Awaitable[Response]]


class RequestHeadTooLarge(Exception):
    pass


def _head_length(raw: bytes | bytearray) -> int:
    """Bytes up to the blank line that ends the head (h11 also accepts bare LFs)."""
    ends = [at + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (at := raw.find(mark)) >= 0]
    return min(ends, default=len(raw))


async def read_request_head(
    stream: trio.abc.Stream, max_bytes: int
) -> tuple[Request | None, bytes]:
    """Parse one request head; returns it (None if the peer left) and every byte read."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=max_bytes)
    raw = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return None, bytes(raw)
            raw += data
            if len(raw) > max_bytes * 2:
                raise RequestHeadTooLarge()
            connection.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            # h11 bounds only a head still incomplete; one that arrived whole is measured.
            if _head_length(raw) > max_bytes:
                raise RequestHeadTooLarge()
            target = event.target.decode("latin-1")
            path, _, query = target.partition("?")
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in event.headers
            }
            return Request(event.method.decode("latin-1"), path, query, headers), bytes(raw)
        return None, bytes(raw)


async def send_response(
    stream: trio.abc.Stream, response: Response, method: str = "GET"
) -> None:
    """Write ``response``; to a ``HEAD`` request, the same head without the body."""
    connection = h11.Connection(h11.SERVER)
    # h11 must see a request before it will write a response (and knows HEAD from it).
    head_only = method == "HEAD"
    connection.receive_data(b"HEAD" if head_only else b"GET")
    connection.receive_data(b" / HTTP/1.1\r\nhost: x\r\n\r\n")
    connection.next_event()
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        *response.headers,
    ]
    reason = HTTPStatus(response.status).phrase.encode()
    data = connection.send(
        h11.Response(status_code=response.status, headers=headers, reason=reason)
    )
    if response.body and not head_only:
        data += connection.send(h11.Data(data=response.body))
    data += connection.send(h11.EndOfMessage())
    await stream.send_all(data)


@attrs.define
class FrontDoor:
    """Routes each TCP connection to a WebSocket handler or an HTTP handler by path.

    ``admit`` may refuse an upgrade with an HTTP response before the handshake (a missing
    token, a server that is draining); None lets it through.
    """

    websocket_routes: dict[str, WebSocketHandler]
    http_handler: HttpHandler
    max_message_bytes: int
    max_head_bytes: int
    handshake_timeout_s: float
    close_timeout_s: float
    max_connections: int
    # How much one read of a socket may take. trio-websocket reads 4 KiB at a time, and
    # every read is a turn of the event loop for that connection: a node's job_result
    # carrying a second of TTS audio would take 20 turns to arrive, each behind every
    # other task of a busy server.
    receive_buffer_bytes: int
    # Where trio-websocket's per-socket protocol tasks run. It must outlive the handlers:
    # on shutdown a handler's closing handshake needs its reader task still running.
    protocol_nursery: trio.Nursery
    admit: Callable[[Request], Response | None] = lambda request: None
    # Messages a socket may have received and not yet handed over, by path (1 elsewhere):
    # a node's socket takes all its frames of one read in one turn (http/ws_batches.py).
    message_queue_sizes: Mapping[str, int] = attrs.Factory(dict)
    open_connections: int = 0
    refused_over_limit: int = 0  # connections answered 503 for max_connections

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection; whatever goes wrong stays inside this connection."""
        self.open_connections += 1
        try:
            await self._handle(stream)
        except Exception:
            log.exception("connection handler failed")
        finally:
            self.open_connections -= 1

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(self.handshake_timeout_s) as scope:
                request, raw = await read_request_head(stream, self.max_head_bytes)
            if scope.cancelled_caught or request is None:
                await stream.aclose()
                return
        except (h11.RemoteProtocolError, RequestHeadTooLarge) as exc:
            why = "request head too large" if isinstance(exc, RequestHeadTooLarge) else str(exc)
            await self._refuse(stream, None, Response.json(400, {"error": "bad request"}), why)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if self.open_connections > self.max_connections:
            # Over the limit: a plain refusal the peer can retry, before any real work.
            self.refused_over_limit += 1
            await self._refuse(stream, request, Response.json(503, {"error": "too many connections"}))
            return
        if not request.is_websocket:
            try:
                response = await self.http_handler(request)
            except Exception:  # a failing endpoint must never take the server down
                log.exception("endpoint failed", path=request.path)
                response = Response.json(500, {"error": "internal error"})
            await self._reply_and_close(stream, response, request.method)
            return
        handler = self.websocket_routes.get(request.path)
        if handler is None:
            await self._refuse(stream, request, Response.json(404, {"error": "no such socket"}))
            return
        refusal = self.admit(request)
        if refusal is not None:
            await self._refuse(stream, request, refusal)
            return
        await self._serve_websocket(ReplayStream(raw, stream), request, handler)

    async def _serve_websocket(
        self, stream: ReplayStream, request: Request, handler: WebSocketHandler
    ) -> None:
        with trio.move_on_after(self.handshake_timeout_s) as scope:
            ws_request = await trio_websocket.wrap_server_stream(
                self.protocol_nursery, stream, max_message_size=self.max_message_bytes,
                receive_buffer_size=self.receive_buffer_bytes,
                message_queue_size=self.message_queue_sizes.get(request.path, 1),
            )
            ws = await ws_request.accept()
        if scope.cancelled_caught:
            await stream.aclose()
            return
        parse_common_frames(ws)
        try:
            await handler(ws, request)
        finally:
            # A handler only ever sees outside cancellation when the server stops.
            if trio.current_effective_deadline() == -math.inf:
                code, reason = CLOSE_GOING_AWAY, "server shutting down"
            else:
                code, reason = CLOSE_NORMAL, None
            # Shielded: on shutdown the peer still gets its close frame (1001).
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout_s):
                await ws.aclose(code, reason)
            await stream.aclose()

    async def _refuse(
        self, stream: trio.abc.Stream, request: Request | None, response: Response,
        why: str | None = None,
    ) -> None:
        """Turn a peer away: one log line saying who and why, then the HTTP answer."""
        log.info("peer refused", status=response.status,
                 path=request.path if request is not None else None,
                 why=why or orjson.loads(response.body).get("error"),
                 peer=_peer_address(stream))
        await self._reply_and_close(stream, response)

    async def _reply_and_close(
        self, stream: trio.abc.Stream, response: Response, method: str = "GET"
    ) -> None:
        try:
            await send_response(stream, response, method)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


def _peer_address(stream: trio.abc.Stream) -> str | None:
    """``host:port`` of the peer of a TCP stream (None for other streams)."""
    try:
        host, port, *_ = stream.socket.getpeername()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return f"{host}:{port}"
