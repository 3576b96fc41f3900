"""A simulated GPU node agent that speaks ``/ws/node`` the way the real agent does.

    node = FakeNode(url, languages=["zh", "en"], max_concurrent_jobs=2, service_time_s=0.3)
    node_id = await nursery.start(node.run)

It registers (frames from :mod:`trio_scheduler.simulate.frames`), heartbeats at once and
then every ``heartbeat_interval_s``, acknowledges each ``job_assign`` with ``job_ack``,
answers it after ``service_time_s`` with a synthetic ``job_result``, and drops a job on
``job_cancel``. Everything it receives and does is recorded for tests and scripts:

* ``jobs`` — every ``job_assign`` frame, in arrival order;
* ``in_flight`` / ``max_in_flight`` — jobs being "processed" now / the most at once;
* ``results`` — every ``job_result`` it sent; ``cancelled`` — job ids dropped on cancel;
* ``frames`` — every frame received (ack, jobs, cancels, controls, errors).

A job counts as in flight from the moment its ``job_assign`` is read until just before its
``job_result`` is written (the job is done when the node reports it), or until its cancel.

The node does not know when the scheduler considers it ``ready`` (nothing on the wire says
so); in-process callers wait on the scheduler's snapshot, remote ones simply retry.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import trio
import trio_websocket

from trio_scheduler.sessions.audio import opus_duration_ms
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame, result_frame
from trio_scheduler.simulate.peer import Peer, connect

EventHook = Callable[[str, dict[str, Any]], None]


def wall_ms() -> int:
    return int(time.time() * 1000)


class NodeRejected(Exception):
    """The scheduler answered ``node_register`` with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame


def synthetic_texts(job: dict[str, Any]) -> tuple[str, str, int]:
    """(text_asr, text_translated, audio_ms) for one ``job_assign``: readable, unique."""
    try:
        audio = base64.b64decode(job.get("audio") or "", validate=True)
    except (binascii.Error, ValueError):
        audio = b""
    audio_ms = opus_duration_ms(audio) if job.get("audio_format", "opus") == "opus" else 0
    index = job.get("utterance_index")
    src = job.get("src_lang")
    if src in (None, "auto"):  # two_way_auto: pretend we detected the first language
        src = job.get("lang_a") or (job.get("auto_langs") or ["?"])[0]
    tgt = job.get("tgt_lang")
    if tgt == src and job.get("lang_b"):
        tgt = job["lang_b"] if src == job.get("lang_a") else job.get("lang_a")
    body = f"utterance {index} ({audio_ms} ms audio)"
    return f"[{src}] {body}", f"[{tgt}] {body}", audio_ms


class FakeNode:
    def __init__(
        self,
        url: str,
        *,
        languages: list[str] | tuple[str, ...] = ("zh", "en", "ja"),
        max_concurrent_jobs: int | None = 4,
        node_id: str | None = None,
        service_time_s: float | Callable[[dict[str, Any]], float] = 0.5,
        heartbeat_interval_s: float = 15.0,
        tts_audio: bytes = b"\x00\x01" * 4,
        tts_format: str = "opus",
        send_ack: bool = True,
        on_event: EventHook | None = None,
        register_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.languages = list(languages)
        self.max_concurrent_jobs = max_concurrent_jobs
        self.node_id = node_id
        self.service_time_s = service_time_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.tts_audio = tts_audio
        self.tts_format = tts_format
        self.send_ack = send_ack
        self.on_event = on_event
        self.register_overrides = dict(register_overrides or {})

        self.jobs: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.heartbeats_sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.close_reason: str | None = None
        self.registered = trio.Event()
        self._running: dict[str, trio.CancelScope] = {}
        self._peer: Peer | None = None

    # -- life ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, then serve jobs until cancelled or until the server closes the socket.

        Reports the node id through ``task_status`` once the ack is in and the first
        heartbeat is sent. A rejected registration raises :class:`NodeRejected`.
        """
        try:
            async with connect(self.url) as peer:
                self._peer = peer
                node_id = await self._register(peer)
                async with trio.open_nursery() as nursery:
                    await self._send_heartbeat()
                    task_status.started(node_id)
                    nursery.start_soon(self._heartbeats)
                    await self._read_frames(nursery)
                    nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionClosed as exc:
            self._closed(exc.reason)
        finally:
            self._peer = None

    async def _register(self, peer: Peer) -> str:
        frame = register_frame(self.languages, node_id=self.node_id, **self.register_overrides)
        if self.max_concurrent_jobs is not None:
            frame["max_concurrent_jobs"] = self.max_concurrent_jobs
        await peer.send(frame)
        ack = await peer.recv()
        self._record(ack)
        if ack.get("type") != "node_register_ack":
            raise NodeRejected(ack)
        self.node_id = ack["node_id"]
        self.registered.set()
        self._emit("registered", ack)
        return self.node_id

    def _closed(self, reason: Any) -> None:
        self.close_reason = str(reason) if reason is not None else "closed"
        self._emit("closed", {"reason": self.close_reason})

    # -- heartbeats --------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        # A timer, not a wait for a condition: the agent heartbeats on a fixed period.
        while True:
            await trio.sleep(self.heartbeat_interval_s)
            await self._send_heartbeat()

    async def _send_heartbeat(self) -> None:
        assert self.node_id is not None
        frame = heartbeat_frame(
            self.node_id, self.languages, timestamp_ms=wall_ms(), running_jobs=self.in_flight
        )
        await self._send(frame)
        self.heartbeats_sent += 1

    # -- jobs --------------------------------------------------------------------------

    async def _read_frames(self, nursery: trio.Nursery) -> None:
        assert self._peer is not None
        try:
            async for frame in self._peer.frames():
                self._record(frame)
                kind = frame.get("type")
                if kind == "job_assign":
                    self._on_job_assign(frame, nursery)
                elif kind == "job_cancel":
                    self._on_job_cancel(frame)
                else:  # node_control, error, …: recorded and shown, nothing to do
                    self._emit(kind or "unknown", frame)
        except trio_websocket.ConnectionClosed as exc:
            self._closed(exc.reason)

    def _on_job_assign(self, job: dict[str, Any], nursery: trio.Nursery) -> None:
        job_id = job.get("job_id")
        if job_id in self._running:  # the real agent refuses a re-sent job id
            self._emit("duplicate_job", job)
            return
        self.jobs.append(job)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        scope = trio.CancelScope()
        self._running[job_id] = scope
        self._emit("job_assign", job)
        nursery.start_soon(self._serve_job, job, scope)

    def _on_job_cancel(self, frame: dict[str, Any]) -> None:
        job_id = frame.get("job_id")
        scope = self._running.pop(job_id, None)
        if scope is not None:
            scope.cancel()
            self.in_flight -= 1
            self.cancelled.append(job_id)
        self._emit("job_cancel", frame)

    async def _serve_job(self, job: dict[str, Any], scope: trio.CancelScope) -> None:
        assert self.node_id is not None
        job_id = job["job_id"]
        started = trio.current_time()
        with scope:
            if self.send_ack:
                await self._send({
                    "type": "job_ack", "job_id": job_id, "attempt_id": job["attempt_id"],
                    "node_id": self.node_id, "session_id": job["session_id"],
                    "trace_id": job["trace_id"],
                })
            delay = (
                self.service_time_s(job) if callable(self.service_time_s)
                else self.service_time_s
            )
            await trio.sleep(delay)
            frame = self._result_for(job, started)
            # The job is over for this node before it reports: leave the in-flight count
            # first, so the slot the scheduler frees on this result is never seen twice.
            self._running.pop(job_id, None)
            self.in_flight -= 1
            if await self._send(frame):
                self.results.append(frame)
                self._emit("job_result", frame)

    def _result_for(self, job: dict[str, Any], started: float) -> dict[str, Any]:
        assert self.node_id is not None
        text_asr, text_translated, _ = synthetic_texts(job)
        total_ms = max(0, round((trio.current_time() - started) * 1000))
        asr_ms, nmt_ms = total_ms * 5 // 10, total_ms * 2 // 10
        timings = {"asr_ms": asr_ms, "nmt_ms": nmt_ms, "tts_ms": total_ms - asr_ms - nmt_ms,
                   "total_ms": total_ms}
        return result_frame(
            job,
            self.node_id,
            text_asr=text_asr,
            text_translated=text_translated,
            tts_audio=base64.b64encode(self.tts_audio).decode("ascii"),
            tts_format=self.tts_format,
            extra={"language_probability": 0.97, "service_timings": timings},
            processing_time_ms=total_ms,
            node_completed_at_ms=wall_ms(),
        )

    # -- plumbing ----------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False when the socket is gone (the reader notices and ends)."""
        if self._peer is None:
            return False
        try:
            await self._peer.send(frame)
        except trio_websocket.ConnectionClosed:
            return False
        return True

    def _record(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def _emit(self, event: str, frame: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event, frame)


def describe_node_event(kind: str, frame: dict[str, Any]) -> str:
    """One readable line for an ``on_event`` callback (used by the scripts)."""
    match kind:
        case "registered":
            return f"registered as {frame.get('node_id')} (status {frame.get('status')})"
        case "job_assign":
            return (f"job {frame.get('job_id')} attempt {frame.get('attempt_id')}: "
                    f"{frame.get('session_id')} utt {frame.get('utterance_index')} "
                    f"{frame.get('src_lang')}->{frame.get('tgt_lang')}")
        case "job_result":
            timings = (frame.get("extra") or {}).get("service_timings") or {}
            return (f"job {frame.get('job_id')}: result {frame.get('text_translated')!r} "
                    f"after {timings.get('total_ms')} ms")
        case "job_cancel":
            return f"job {frame.get('job_id')}: cancelled ({frame.get('reason')})"
        case "duplicate_job":
            return f"job {frame.get('job_id')}: refused, already running"
        case "error":
            return f"ERROR {frame.get('code')}: {frame.get('message')}"
        case "closed":
            return f"socket closed ({frame.get('reason')})"
    return f"{kind}: {frame}"
