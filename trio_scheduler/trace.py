"""Recording every frame in and out, for replay and for finding out what happened.

Connection tasks hand each frame's text to :meth:`TraceRecorder.record`, which only puts
it on a channel; the recorder's own task has the lines parsed, redacted and written in
batches by worker threads, so the event loop pays one non-blocking channel send per frame.

One JSON object per line::

    {"t": 12.345, "conn": 3, "kind": "session", "dir": "in", "frame": {...}}

``t`` is the scheduler's monotonic clock in seconds, ``conn`` numbers the connections,
``dir`` is ``in`` (peer → scheduler) or ``out``. With ``audio = "redact"`` (the default)
audio payloads keep their length and Plan A framing — so durations and segmentation
replay exactly — but every audio byte is zeroed: a trace holds no user speech.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from pathlib import Path
from typing import Any

import orjson
import structlog
import trio

from trio_scheduler.channels import take_queued
from trio_scheduler.sessions.audio import plan_a_frame, plan_a_packet_count

log = structlog.get_logger(__name__)

AUDIO_FIELDS = ("payload", "audio", "tts_audio")


def redact_audio(text: str) -> str:
    """Same length and framing, no content."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    if plan_a_packet_count(data):
        packets, offset = [], 0
        while offset < len(data):
            length = data[offset] | (data[offset + 1] << 8)
            packets.append(bytes(length))
            offset += 2 + length
        zeroed = plan_a_frame(packets)
    else:
        zeroed = bytes(len(data))
    return base64.b64encode(zeroed).decode("ascii")


def trace_line(t: float, conn: int, kind: str, direction: str, raw: str | bytes, audio: str):
    try:
        frame: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        frame = raw if isinstance(raw, str) else {"binary_bytes": len(raw)}
    if audio == "redact" and isinstance(frame, dict):
        for field in AUDIO_FIELDS:
            if isinstance(frame.get(field), str) and frame[field]:
                frame[field] = redact_audio(frame[field])
    return orjson.dumps({"t": round(t, 6), "conn": conn, "kind": kind, "dir": direction,
                         "frame": frame})


class TraceRecorder:
    def __init__(self, path: Path, *, audio: str = "redact", queue_size: int = 100_000) -> None:
        self._path = path
        self._audio = audio
        self._send, self._receive = trio.open_memory_channel[tuple](queue_size)
        self._connections = itertools.count(1)
        self._recorded = 0
        self._written = 0
        self._progress = trio.Event()
        self.dropped = 0

    def new_connection(self) -> int:
        return next(self._connections)

    def record(self, conn: int, kind: str, direction: str, raw: str | bytes) -> None:
        try:
            self._send.send_nowait((trio.current_time(), conn, kind, direction, raw))
        except trio.WouldBlock:
            self.dropped += 1  # the disk is not keeping up; counted, never blocking
        else:
            self._recorded += 1

    async def wait_written(self) -> None:
        """Wait until every frame recorded so far is in the file (tests, tools)."""
        target = self._recorded
        while self._written < target:
            await self._progress.wait()

    def _render(self, batch: list[tuple]) -> bytes:
        return b"".join(trace_line(*entry, self._audio) + b"\n" for entry in batch)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        async with await trio.open_file(self._path, "ab") as file:
            task_status.started()
            try:
                async for entry in self._receive:
                    batch = [entry, *take_queued(self._receive, 10_000 - 1)]
                    # Parsing and redacting run in a worker thread, off the event loop.
                    lines = await trio.to_thread.run_sync(self._render, batch)
                    await file.write(lines)
                    await file.flush()
                    self._written += len(batch)
                    self._progress.set()
                    self._progress = trio.Event()
            finally:
                with trio.CancelScope(shield=True):
                    rest = take_queued(self._receive)
                    if rest:
                        await file.write(self._render(rest))
                    await file.flush()
                    if self.dropped:
                        log.warning("trace frames dropped", dropped=self.dropped)


class RecordingSocket:
    """A WebSocket whose frames in and out are also handed to a recorder."""

    def __init__(self, ws: Any, recorder: TraceRecorder, kind: str) -> None:
        self._ws = ws
        self._recorder = recorder
        self._kind = kind
        self._conn = recorder.new_connection()

    @property
    def closed(self):
        return self._ws.closed

    async def get_message(self) -> str | bytes:
        message = await self._ws.get_message()
        self._recorder.record(self._conn, self._kind, "in", message)
        return message

    async def send_message(self, message: str | bytes) -> None:
        await self._ws.send_message(message)
        self._recorder.record(self._conn, self._kind, "out", message)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await self._ws.aclose(code, reason)
