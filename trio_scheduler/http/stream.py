"""The stream under every WebSocket: the bytes of the request head first, then a socket
read and written with as few turns of the event loop as the kernel allows.

Each WebSocket connection's reader task calls ``receive_some`` once per frame it
receives (a browser sends four a second, and each arrives alone), and every frame sent
is a ``send_all``. Trio's ``SocketStream`` is built for correctness on every platform:
a read first tries ``recv`` (nearly always ``EAGAIN`` here, the frame not being there
yet), then waits for readiness, reads again and then yields once more; a write yields
once even when the kernel took every byte at once. Per frame that is a wasted system
call and a second turn of the loop, which on a busy server is a large share of what a
frame costs. :class:`ReplayStream` keeps the semantics (every read is a checkpoint; a
writer that must wait still waits in ``send_all``) and drops the extra turns.
"""

from __future__ import annotations

import errno
import os

import trio

# As trio's SocketStream: these mean "closed on our side", everything else "broken".
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


class ReplayStream(trio.abc.Stream):
    """A stream that first returns ``prefix`` (bytes already read from ``stream``), then
    what ``stream`` receives.

    When ``stream`` is a :class:`trio.SocketStream`, reads go to the socket directly
    (see :meth:`receive_some`); any other stream (tests use memory streams) is used
    through its own methods.
    """

    def __init__(self, prefix: bytes, stream: trio.abc.Stream) -> None:
        self._prefix = prefix
        self.transport_stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        # Whether the last read emptied the kernel's buffer: the next read then waits for
        # readiness first instead of trying a read that would fail.
        self._drained = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """At most ``max_bytes`` (64 KiB by default); ``b""`` at the end of the stream.

        One turn of the loop per read: after a read that emptied the kernel's buffer
        (shorter than asked), wait for readiness, then read; after a full one, more is
        probably there, so read first and yield after, as trio does.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._prefix:
            await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled read takes nothing
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        socket = self._socket
        if socket is None:
            return await self.transport_stream.receive_some(max_bytes)
        if max_bytes is None:
            max_bytes = 65536
        if not self._drained:
            await trio.lowlevel.checkpoint_if_cancelled()
            data = _read(socket, max_bytes)
            if data is not None:
                self._drained = len(data) < max_bytes
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        while True:
            if socket.fileno() < 0:  # closed here: epoll would refuse the number
                raise trio.ClosedResourceError("this socket was already closed")
            await trio.lowlevel.wait_readable(socket)
            data = _read(socket, max_bytes)
            if data is not None:
                self._drained = len(data) < max_bytes
                return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    def send_now(self, data: bytes) -> int:
        """Write what the kernel takes at once, without waiting and without a checkpoint;
        the number of bytes written (0 when it takes nothing now, or when this is not a
        plain socket). The caller must be the stream's only writer at this moment.

        ``send_all`` always yields to the scheduler once, even when the kernel took every
        byte at once, which is nearly always the case for a frame: that turn of the loop
        is most of what a small write costs. An error is left for ``send_all`` to raise.
        """
        socket = self._socket
        fd = socket.fileno() if socket is not None else -1
        if fd < 0:  # not a socket, or closed (its number may already be another's)
            return 0
        try:
            return os.write(fd, data)
        except OSError:
            return 0

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


def _read(socket: trio.socket.SocketType, max_bytes: int) -> bytes | None:
    """What the socket has, up to ``max_bytes``; None when it has nothing yet."""
    fd = socket.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("this socket was already closed")
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in _CLOSED_ERRNOS:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
