"""Between the parent of ``serve --workers`` and one of its workers: a socket pair.

The worker sends one byte once it listens, so the parent knows it started (a worker that
exits first closes its end unsent). The parent sends nothing and keeps its end open for
as long as it runs, so the worker reads end-of-file exactly when the parent is gone,
however it went (SIGKILL included): it then drains and stops, as on SIGTERM, rather than
serve on unsupervised, holding the port.
"""

from __future__ import annotations

import socket

import trio

READY = b"!"


def socket_pair() -> tuple[trio.socket.SocketType, socket.socket]:
    """The parent's end (a Trio socket) and the worker's (its descriptor is passed on)."""
    parent_end, worker_end = socket.socketpair()
    return trio.socket.from_stdlib_socket(parent_end), worker_end


async def wait_listening(parent_end: trio.socket.SocketType) -> bool:
    """True once the worker says it listens; False if it exited without saying so."""
    return await parent_end.recv(len(READY)) == READY


class ParentLink:
    """The worker's end, from the descriptor named by ``--supervisor-fd``."""

    def __init__(self, fd: int) -> None:
        self._socket = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))

    async def say_listening(self) -> None:
        await self._socket.send(READY)

    async def wait_parent_gone(self) -> None:
        while await self._socket.recv(64):
            pass  # the parent sends nothing; whatever comes is not news
