"""Several WebSocket text messages in one write to the socket.

A job's outcome reaches the browser as up to three frames (``ui_event ASR_FINAL``,
``ui_event NMT_DONE``, ``translation_result``), and the contract requires each of them.
trio-websocket writes every message with its own ``send_all``: a lock, a system call and a
trip through Trio's I/O machinery per frame, which a profile under load shows among the
largest costs of an utterance. Framing them all with wsproto and writing the bytes once
costs one of each, and the peer sees exactly the same frames in the same order.

trio-websocket has no public call for this, so :func:`send_texts` does what its
``send_message`` does (check the close state, frame with wsproto, write under the
connection's send lock, turn a broken stream into ``ConnectionClosed``) for a list. It
relies on attributes of :class:`trio_websocket.WebSocketConnection` that are not public;
where they are absent (another version, or a stand-in socket in tests) it sends the
messages one by one, and ``tests/test_batch_send.py`` fails if the installed version no
longer offers them, so an upgrade cannot silently lose the saving.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio_websocket
from wsproto.events import TextMessage

_INTERNALS = ("_close_reason", "_wsproto", "_stream_lock", "_stream", "_abort_web_socket")


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
