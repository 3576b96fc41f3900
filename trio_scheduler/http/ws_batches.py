"""WebSocket frames in batches: several written with one write, every frame already
received read in one turn of the event loop.

trio-websocket moves one message per turn of the event loop in each direction: each
``send_message`` is its own ``send_all`` (a lock, a system call, a checkpoint), and its
reader task hands each received message to the connection's channel with a ``send``
that checkpoints too, so the consumer gets one message per turn however many arrived
together. For a browser (four frames a second) that is fine. A node's socket carries the
jobs of many sessions: when a busy server's turns grow long, a node's results would queue
behind one-per-turn, holding their slots while the node itself sits idle. So:

* :func:`send_texts` frames a list with wsproto and writes it once (the frames of one
  outcome to a browser; every job frame queued for a node);
* :func:`deliver_without_waiting` makes a connection's reader hand over received messages
  without a checkpoint while its queue has room, and :func:`receive_batch` takes every
  message queued, so a node's frames that arrived in one read are handled in one turn.
  A read is at most ``[server] receive_buffer_bytes``, which bounds a turn's work.

trio-websocket has no public call for either; these rely on attributes of
:class:`trio_websocket.WebSocketConnection` that are not public. Where they are absent
(another version, a stand-in socket in tests) everything falls back to one message at a
time, and ``tests/test_ws_batches.py`` fails if the installed version no longer offers
them, so an upgrade cannot silently lose the batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio_websocket
from wsproto.events import TextMessage

from trio_scheduler.channels import take_queued

_INTERNALS = ("_close_reason", "_wsproto", "_stream_lock", "_stream", "_abort_web_socket",
              "_send_channel", "_recv_channel")


def can_batch(ws: object) -> bool:
    """Whether ``ws`` is a trio-websocket connection whose internals this module knows."""
    return isinstance(ws, trio_websocket.WebSocketConnection) and all(
        hasattr(ws, name) for name in _INTERNALS
    )


async def send_texts(ws, texts: Sequence[str]) -> None:
    """Send ``texts`` as text messages, in order; one write when there are several.

    Raises ``trio_websocket.ConnectionClosed`` as ``send_message`` does.
    """
    if len(texts) == 1 or not can_batch(ws):
        for text in texts:
            await ws.send_message(text)
        return
    if ws._close_reason:
        raise trio_websocket.ConnectionClosed(ws._close_reason)
    data = b"".join(ws._wsproto.send(TextMessage(data=text)) for text in texts)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            raise trio_websocket.ConnectionClosed(ws._close_reason) from None


class _SendWithoutWaiting:
    """A memory channel's send side whose ``send`` does not checkpoint while there is room
    (it waits, as usual, when the queue is full: the socket is then read no further)."""

    def __init__(self, channel: trio.MemorySendChannel[Any]) -> None:
        self._channel = channel

    async def send(self, value: Any) -> None:
        try:
            self._channel.send_nowait(value)
        except trio.WouldBlock:
            await self._channel.send(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def deliver_without_waiting(ws) -> None:
    """Let ``ws``'s reader queue every message of one read in one turn (see above).

    The connection should have been made with a ``message_queue_size`` above 1, or the
    queue is full after one message and nothing changes.
    """
    if can_batch(ws) and not isinstance(ws._send_channel, _SendWithoutWaiting):
        ws._send_channel = _SendWithoutWaiting(ws._send_channel)


async def receive_batch(ws) -> list[str | bytes]:
    """The next message (waiting for one), and every other one already queued."""
    messages = [await ws.get_message()]
    if can_batch(ws):
        messages += take_queued(ws._recv_channel)
    return messages
