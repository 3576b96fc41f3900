"""A fast path for the frames peers send all the time: whole, masked, unfragmented text
frames, parsed here; everything else is left to wsproto. Whole text messages the server
sends are framed here too.

A browser sends four small text frames a second and a node two per job, and each
arrives alone. wsproto is correct for every frame the RFC allows, but a frame passes
through a buffer, a header parser, a masker, an incremental UTF-8 decoder, a message
decoder and two generators: about a tenth of the server's CPU under load went there,
more than decoding the JSON inside. The common frame needs far less: two header bytes
(``FIN`` + text, masked, as a client must), a length, the mask, then the payload.

:class:`FastTextFrames` stands in for the connection's ``WSConnection``. Received bytes
that begin at a frame boundary of an open connection are parsed here as long as the
frames are of that kind and complete; the first byte of anything else (a control frame,
a fragment, a frame cut by the read, a 64-bit length, invalid UTF-8, an unmasked frame)
and everything after it go to wsproto, which then reads on until it is at a frame
boundary again. The events come out in the order of the bytes, so trio-websocket sees
exactly what wsproto would have given it, limits (``max_message_size``) included.

Like ``ws_batches``, this relies on attributes that are not public (trio-websocket's
``_wsproto``, wsproto's frame decoder); where they are missing nothing is changed, and
``tests/test_ws_frames.py`` fails if an upgrade removes them.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterator
from typing import Any

import trio_websocket
from wsproto import ConnectionState
from wsproto.events import CloseConnection, Event, Pong, TextMessage

_FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (text)
_MASKED = 0x80


def parse_text_frames(data: bytes, out: collections.deque[Event]) -> int:
    """Append a ``TextMessage`` to ``out`` for each whole, masked, unfragmented text frame
    at the start of ``data``; the number of bytes they took (the rest is not parsed).

    Stops, leaving the frame to wsproto, at anything it does not handle itself, so that
    what wsproto would refuse is refused by wsproto, with its close code: a 16-bit length
    below 126 (not minimal), invalid UTF-8 (1007), an unmasked client frame (1002).
    """
    pos, end = 0, len(data)
    while end - pos >= 6:
        second = data[pos + 1]
        if data[pos] != _FIN_TEXT or not second & _MASKED:
            break
        length = second & 0x7F
        mask_at = pos + 2
        if length == 126:
            if end - pos < 8:
                break
            length = (data[mask_at] << 8) | data[mask_at + 1]
            if length < 126:
                break
            mask_at += 2
        elif length == 127:
            break
        start = mask_at + 4
        stop = start + length
        if stop > end:
            break
        try:
            text = _unmask(data[mask_at:start], data[start:stop]).decode("utf-8")
        except UnicodeDecodeError:
            break
        out.append(TextMessage(data=text, frame_finished=True, message_finished=True))
        pos = stop
    return pos


def text_frame(text: str) -> bytes:
    """One whole, unmasked text frame (as a server sends them) carrying ``text``."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _FIN_TEXT, 126, n) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, n) + payload


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask``, as one big-integer operation."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FastTextFrames:
    """A ``WSConnection`` that parses the common frames itself (see above)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        proto = connection.connection._proto
        self._proto = proto
        self._decoder = proto._frame_decoder
        self._messages = proto._message_decoder
        self._parsed: collections.deque[Event] = collections.deque()
        self._closed = False  # wsproto gave a CloseConnection: it parses nothing more

    @property
    def state(self) -> ConnectionState:
        return self._connection.state

    def send(self, event: Event) -> bytes:
        """The bytes of ``event``; a whole text message is framed here (a server's frames
        are not masked: a header and the UTF-8 payload), anything else by wsproto.

        Once a close has begun, the pong trio-websocket's reader sends for a peer's ping,
        and a second close (for a message over the size limit), are dropped: wsproto
        refuses them with an exception that nothing in the reader catches, so any peer
        could stop the whole server by pinging after the server closed (trio-websocket
        issue 184). The RFC wants nothing more sent after a close anyway.
        """
        state = self._connection.state
        if type(event) is TextMessage:
            if (event.message_finished and state is ConnectionState.OPEN
                    and self._proto._outbound_opcode is None):
                return text_frame(event.data)
        elif type(event) is Pong:
            if state is not ConnectionState.OPEN:
                return b""
        elif type(event) is CloseConnection and state is ConnectionState.LOCAL_CLOSING:
            return b""
        return self._connection.send(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def receive_data(self, data: bytes | None) -> None:
        if data and self._at_frame_boundary():
            taken = parse_text_frames(data, self._parsed)
            if taken == len(data):
                return
            data = data[taken:]
        self._connection.receive_data(data)

    def events(self) -> Iterator[Event]:
        parsed = self._parsed
        while parsed:
            yield parsed.popleft()
        for event in self._connection.events():
            if type(event) is CloseConnection:
                # wsproto parses nothing more after a close, even one it made up for a
                # bad frame while the state stays OPEN: neither may the fast path.
                self._closed = True
            yield event

    def _at_frame_boundary(self) -> bool:
        """Whether wsproto holds nothing of a frame or message (the next byte starts one)
        and would still parse it."""
        decoder = self._decoder
        return (self._connection.state is ConnectionState.OPEN and not self._closed
                and not decoder.buffer.buffer and decoder.header is None
                and self._messages.opcode is None)


def parse_common_frames(ws: object) -> bool:
    """Make ``ws`` parse the common frames itself (see above); False (and nothing
    changed) when ``ws`` is not the server side of an open trio-websocket connection
    whose internals this module knows, or has extensions that change frames (none are
    offered today)."""
    if not isinstance(ws, trio_websocket.WebSocketConnection):
        return False
    connection = getattr(ws, "_wsproto", None)
    if isinstance(connection, FastTextFrames):
        return True
    try:
        proto = connection.connection._proto
        known = (not connection.client  # a client's frames are masked both ways round
                 and isinstance(proto._frame_decoder.buffer.buffer, bytearray)
                 and hasattr(proto._frame_decoder, "header")
                 and hasattr(proto._message_decoder, "opcode")
                 and hasattr(proto, "_outbound_opcode")
                 and not proto.extensions)
    except AttributeError:
        return False
    if not known:
        return False
    ws._wsproto = FastTextFrames(connection)
    return True
