"""Taking every connection the kernel holds for us in one turn of the event loop.

``trio.serve_listeners`` accepts one connection per turn of the loop: each ``accept``
yields to the scheduler once. On a busy server a turn takes milliseconds, so a wave of
browsers (a restart, a rush hour) queues in the kernel's accept queue, and a load
balancer's ``GET /ready`` or an operator's ``/admin`` request waits behind it for
seconds though the loop itself is not behind. :class:`BurstListener` takes what is
waiting (at most ``[server] accept_burst``) with non-blocking ``accept`` calls as soon as
one connection came, and hands them out without waiting.
"""

from __future__ import annotations

import collections
import os
import socket

import trio


class BurstListener(trio.abc.Listener[trio.SocketStream]):
    """A :class:`trio.SocketListener` whose ``accept`` also takes, without waiting, up to
    ``burst - 1`` more connections already in the kernel's queue, and returns those
    first, without a checkpoint (``serve_listeners`` then starts their handlers in one
    turn; ``burst`` bounds how long that turn is)."""

    def __init__(self, listener: trio.SocketListener, burst: int) -> None:
        self.listener = listener
        self._burst = burst
        # The same listening socket under a second descriptor, for plain non-blocking
        # accept calls (trio's own socket only offers an accept that yields). Without one
        # (no descriptor left), it accepts one connection at a time, as trio does.
        self._socket: socket.socket | None = None
        try:
            self._socket = socket.socket(fileno=os.dup(listener.socket.fileno()))
            self._socket.setblocking(False)
        except OSError:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        self._waiting: collections.deque[trio.SocketStream] = collections.deque()

    async def accept(self) -> trio.SocketStream:
        if self._waiting:
            return self._waiting.popleft()
        stream = await self.listener.accept()
        self._take_waiting()
        return stream

    def _take_waiting(self) -> None:
        if self._socket is None:
            return
        for _ in range(self._burst - 1):
            try:
                connection, _ = self._socket.accept()
            except OSError:
                # None waiting (BlockingIOError), or an error the next ``accept`` of the
                # trio listener meets and handles as usual.
                return
            self._waiting.append(trio.SocketStream(trio.socket.from_stdlib_socket(connection)))

    async def aclose(self) -> None:
        if self._socket is not None:
            self._socket.close()
        while self._waiting:
            await trio.aclose_forcefully(self._waiting.popleft())
        await self.listener.aclose()
