"""In-memory WebSocket pairs with trio-websocket's interface.

They let tests drive whole session and node tasks under Trio's ``MockClock`` — timers
of seconds or minutes pass instantly and deterministically — without real sockets, whose
kernel round trips a jumping clock cannot see.
"""

from __future__ import annotations

import math

import trio
from trio_websocket import CloseReason, ConnectionClosed


class _Shared:
    def __init__(self) -> None:
        self.close_reason: CloseReason | None = None


class MemoryWebSocket:
    def __init__(
        self,
        shared: _Shared,
        incoming: trio.MemoryReceiveChannel[str | bytes],
        outgoing: trio.MemorySendChannel[str | bytes],
    ) -> None:
        self._shared = shared
        self._incoming = incoming
        self._outgoing = outgoing
        self.peer: MemoryWebSocket | None = None

    @property
    def closed(self) -> CloseReason | None:
        return self._shared.close_reason

    async def get_message(self) -> str | bytes:
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(self._shared.close_reason) from None

    async def send_message(self, message: str | bytes) -> None:
        if self._shared.close_reason is not None:
            raise ConnectionClosed(self._shared.close_reason)
        await self._outgoing.send(message)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if self._shared.close_reason is None:
            self._shared.close_reason = CloseReason(code, reason)
        self._outgoing.close()
        if self.peer is not None:
            self.peer._outgoing.close()
        await trio.lowlevel.checkpoint()


def memory_websocket_pair() -> tuple[MemoryWebSocket, MemoryWebSocket]:
    """(server side, client side) of one in-memory WebSocket."""
    shared = _Shared()
    to_server_send, to_server_receive = trio.open_memory_channel[str | bytes](math.inf)
    to_client_send, to_client_receive = trio.open_memory_channel[str | bytes](math.inf)
    server = MemoryWebSocket(shared, to_server_receive, to_client_send)
    client = MemoryWebSocket(shared, to_client_receive, to_server_send)
    server.peer, client.peer = client, server
    return server, client
