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
  outcome to a browser; every job frame queued for a node), without a turn of the event
  loop when the kernel takes it all at once;
* :func:`deliver_without_waiting` makes a connection's reader hand over received messages
  without a checkpoint while its queue has room, and :func:`receive_batch` takes every
  message queued, so a node's frames that arrived in one read are handled in one turn.
  A read is at most ``[server] receive_buffer_bytes``, which bounds a turn's work;
* :func:`hand_over_messages` goes one step further for a browser's socket: the reader
  task itself puts each message where its consumer takes it (the session's inbox), so a
  browser's frame costs one task switch instead of two (reader → channel → a task that
  moves it on). The channel is then only the connection's end: it is closed as before,
  and ``get_message`` raises ``ConnectionClosed`` as before.

trio-websocket has no public call for either; these rely on attributes of
:class:`trio_websocket.WebSocketConnection` that are not public. Where they are absent
(another version, a stand-in socket in tests) everything falls back to one message at a
time, and ``tests/test_ws_batches.py`` fails if the installed version no longer offers
them, so an upgrade cannot silently lose the batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import trio
import trio_websocket
from wsproto.events import TextMessage

from trio_scheduler.channels import take_queued

_INTERNALS = ("_close_reason", "_wsproto", "_stream_lock", "_stream", "_abort_web_socket",
              "_send_channel", "_recv_channel")


_known_internals: bool | None = None  # found on the first connection, for all of them


def can_batch(ws: object) -> bool:
    """Whether ``ws`` is a trio-websocket connection whose internals this module knows.

    Asked for every frame sent: the attributes are looked for once, on the first
    connection (they are set by the class's ``__init__``, the same for every instance)."""
    global _known_internals
    if not isinstance(ws, trio_websocket.WebSocketConnection):
        return False
    if _known_internals is None:
        _known_internals = all(hasattr(ws, name) for name in _INTERNALS)
    return _known_internals


async def send_texts(ws, texts: Sequence[str], timeout_s: float = math.inf) -> bool:
    """Send ``texts`` as text messages, in order, in one write; False when the peer did
    not take them within ``timeout_s`` (they may then be partly written: the connection
    is of no further use).

    What the kernel takes at once is written without a checkpoint (see
    ``ReplayStream.send_now``): only a peer that is behind costs a wait, and a deadline.
    Raises ``trio_websocket.ConnectionClosed`` as ``send_message`` does.
    """
    if not can_batch(ws):
        with trio.move_on_after(timeout_s) as scope:
            for text in texts:
                await ws.send_message(text)
        return not scope.cancelled_caught
    if ws._close_reason:
        raise trio_websocket.ConnectionClosed(ws._close_reason)
    data = b"".join([ws._wsproto.send(TextMessage(data=text)) for text in texts])
    lock, sent = ws._stream_lock, 0
    held = not lock.locked()
    if held:
        lock.acquire_nowait()
        sent = _send_now(ws._stream, data)
        if sent == len(data):
            lock.release()
            return True
    try:
        with trio.move_on_after(timeout_s) as scope:
            if not held:
                await lock.acquire()
                held = True
            await ws._stream.send_all(memoryview(data)[sent:])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await ws._abort_web_socket()
        raise trio_websocket.ConnectionClosed(ws._close_reason) from None
    finally:
        if held:
            lock.release()
    return not scope.cancelled_caught


def _send_now(stream: object, data: bytes) -> int:
    send_now = getattr(stream, "send_now", None)
    return send_now(data) if send_now is not None else 0


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


class _HandOver:
    """Stands in for a connection's message channel: ``send`` hands the message to
    ``deliver`` (which may wait: the socket is then read no further), once the messages
    queued before it took over are delivered (``ready``); closing closes the real
    channel, so whoever waits in ``get_message`` learns that the connection ended."""

    def __init__(self, channel: trio.MemorySendChannel[Any], deliver, ready: trio.Event) -> None:
        self._channel = channel
        self._deliver = deliver
        self._ready = ready

    async def send(self, value: Any) -> None:
        if not self._ready.is_set():
            await self._ready.wait()
        await self._deliver(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


async def hand_over_messages(ws, deliver) -> bool:
    """Make ``ws``'s reader task call ``await deliver(message)`` for each message received
    instead of queueing it for ``get_message``; False (and nothing changed) when ``ws`` is
    not a connection whose internals this module knows.

    The messages the reader queued before are delivered first, here, in order (with the
    one it may be blocked on, the queue being full); the reader's next ones wait until
    they are. ``deliver`` then runs in the connection's reader task: it must not raise,
    and once the consumer is gone it must return at once (a reader stuck in it could not
    finish the close handshake). ``get_message`` afterwards only raises
    ``ConnectionClosed``: await it to learn when the connection ended.
    """
    if not can_batch(ws):
        return False
    ready = trio.Event()
    ws._send_channel = _HandOver(ws._send_channel, deliver, ready)
    try:
        for message in take_queued(ws._recv_channel):  # no checkpoint: nothing slips in
            await deliver(message)
    finally:
        ready.set()
    return True


async def receive_batch(ws) -> list[str | bytes]:
    """The next message (waiting for one), and every other one already queued."""
    messages = [await ws.get_message()]
    if can_batch(ws):
        messages += take_queued(ws._recv_channel)
    return messages
