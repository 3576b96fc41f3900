"""A JSON-speaking WebSocket peer: the building block of simulated nodes and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def connect(url: str, *, max_message_size: int = 16 * 1024 * 1024):
    async with trio_websocket.open_websocket_url(url, max_message_size=max_message_size) as ws:
        yield Peer(ws)
