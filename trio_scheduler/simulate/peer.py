"""A JSON-speaking WebSocket peer: the building block of simulated nodes and clients."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio_websocket


class Peer:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.ws.send_message(frame)

    async def recv(self) -> dict[str, Any]:
        return orjson.loads(await self.ws.get_message())

    async def recv_type(self, *types: str) -> dict[str, Any]:
        """The next frame of one of ``types``, skipping others."""
        while True:
            frame = await self.recv()
            if frame.get("type") in types:
                return frame


@asynccontextmanager
async def connect(url: str, *, max_message_size: int = 16 * 1024 * 1024):
    async with trio_websocket.open_websocket_url(url, max_message_size=max_message_size) as ws:
        yield Peer(ws)
