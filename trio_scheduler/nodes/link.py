"""The handle through which the rest of the server reaches one node connection."""

from __future__ import annotations

import trio


class NodeLink:
    """Outbound queue and close request of one node socket.

    ``send`` never waits: a dispatcher must not be blocked by a slow node, so a full queue
    refuses the frame and the dispatcher tries another node. The queue is drained by the
    connection's writer task.
    """

    def __init__(self, queue_size: int) -> None:
        self._send, self.outbound = trio.open_memory_channel[str](queue_size)
        self.close_requested = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def send(self, frame: str) -> bool:
        try:
            self._send.send_nowait(frame)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the connection to close its socket (takeover, heartbeat timeout, …)."""
        if not self.close_requested.is_set():
            self.close_code, self.close_reason = code, reason
            self.close_requested.set()

    def shut(self) -> None:
        """Refuse every later frame: the connection is going away."""
        self._send.close()
