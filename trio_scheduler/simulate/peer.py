"""A JSON-speaking WebSocket peer: the building block of simulated nodes and clients."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import trio
import trio_websocket

#: How long :meth:`Peer.recv` waits for a frame by default (Trio clock seconds). A peer
#: that expects an answer and gets none is stuck: it fails instead of waiting forever.
RECV_BOUND_S = 10.0


class Peer:
    def __init__(
        self, ws: trio_websocket.WebSocketConnection, *, recv_bound_s: float = RECV_BOUND_S
    ) -> None:
        self.ws = ws
        self.recv_bound_s = recv_bound_s

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.ws.send_message(frame)

    async def recv(self, *, within: float | None = None) -> dict[str, Any]:
        """The next frame; :class:`trio.TooSlowError` if none comes ``within`` seconds
        (default: the peer's ``recv_bound_s``)."""
        with trio.fail_after(self.recv_bound_s if within is None else within):
            return orjson.loads(await self.ws.get_message())

    async def recv_type(self, *types: str, within: float | None = None) -> dict[str, Any]:
        """The next frame of one of ``types``, skipping others, within one bound."""
        with trio.fail_after(self.recv_bound_s if within is None else within):
            while True:
                frame = orjson.loads(await self.ws.get_message())
                if frame.get("type") in types:
                    return frame

    async def frames(self, *types: str) -> AsyncIterator[dict[str, Any]]:
        """Every frame (of one of ``types``, if given) until the socket closes, without a
        bound: for a peer whose job is to wait (a node waiting for work, a browser
        listening for results). Ends with :class:`trio_websocket.ConnectionClosed`."""
        while True:
            frame = orjson.loads(await self.ws.get_message())
            if not types or frame.get("type") in types:
                yield frame


class CannotConnect(ConnectionError):
    """The WebSocket could not be opened; the message says why, in one line, and
    ``status_code`` is the HTTP status when the server refused the upgrade."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def connect_failure(url: str, exc: BaseException) -> str:
    """Why connecting to ``url`` failed, in words (for people running the scripts)."""
    if isinstance(exc, ValueError):  # trio-websocket's judgement of the URL
        return f"{url!r} is not a WebSocket URL (ws://host:port/…): {exc}"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"").decode(errors="replace").strip()
        return f"{url} refused the connection: HTTP {exc.status_code} {body}".rstrip()
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return f"cannot connect to {url}: no WebSocket handshake in time"
    cause = exc.__cause__ or exc
    if isinstance(cause, socket.gaierror):
        return f"cannot connect to {url}: the host cannot be resolved ({cause.strerror})"
    return f"cannot connect to {url}: {cause} (is the server running?)"


@asynccontextmanager
async def connect(url: str, *, max_message_size: int = 16 * 1024 * 1024):
    """A :class:`Peer` on ``url``; :class:`CannotConnect` if the socket cannot be opened."""
    async with AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(
                trio_websocket.open_websocket_url(url, max_message_size=max_message_size)
            )
        except (OSError, ValueError, trio_websocket.HandshakeError) as exc:
            status = getattr(exc, "status_code", None)
            raise CannotConnect(connect_failure(url, exc), status) from exc
        yield Peer(ws)
