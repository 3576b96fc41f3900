"""The handle through which the rest of the server reaches one node connection."""

from __future__ import annotations

import trio

from trio_scheduler.channels import receive_batch


class NodeLink:
    """Outbound queue and close request of one node socket.

    ``send`` never waits: a dispatcher must not be blocked by a slow node, so a full queue
    refuses the frame and the dispatcher tries another node. The queue is drained by the
    connection's writer task. It is bounded twice: in frames, and in characters of JSON
    text (about bytes: frames are ASCII but for peer text), because a ``job_assign``
    carries a whole utterance of audio.
    """

    def __init__(self, queue_size: int, max_queued_chars: int = 2**62) -> None:
        self._send, self._receive = trio.open_memory_channel[str](queue_size)
        self._max_queued_chars = max_queued_chars
        self.queued_chars = 0
        self.close_requested = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def send(self, frame: str) -> bool:
        # One frame larger than the whole budget still goes when the queue is empty.
        if self.queued_chars and self.queued_chars + len(frame) > self._max_queued_chars:
            return False
        try:
            self._send.send_nowait(frame)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self.queued_chars += len(frame)
        return True

    def cancel(self, job_id: str, frame: str) -> bool:
        """Send a ``job_cancel`` (the job id matters to a link that is a message)."""
        return self.send(frame)

    def assign(self, job_id: str, session_id: str, frame: str) -> bool:
        """Send a ``job_assign`` (the ids matter to a link that is a message; not here)."""
        return self.send(frame)

    async def next_frame(self) -> str:
        """The oldest queued frame (for the writer); ``trio.EndOfChannel`` once shut."""
        frame = await self._receive.receive()
        self.queued_chars -= len(frame)
        return frame

    async def next_frames(self) -> list[str]:
        """Every queued frame, oldest first, waiting for one if there is none.

        A node's socket carries the jobs of many sessions; taking one frame per turn of
        the event loop would let the queue grow whenever a turn takes long (a busy loop),
        so the writer takes what is there and writes it at once.
        """
        frames = await receive_batch(self._receive)
        self.queued_chars -= sum(map(len, frames))
        return frames

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the connection to close its socket (takeover, heartbeat timeout, …)."""
        if not self.close_requested.is_set():
            self.close_code, self.close_reason = code, reason
            self.close_requested.set()

    def shut(self) -> None:
        """Refuse every later frame: the connection is going away."""
        self._send.close()
