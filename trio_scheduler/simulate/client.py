"""A simulated browser client that streams audio on ``/ws/session`` like the web client.

    client = FakeClient(url, two_way=("zh", "en"), utterances=3, utterance_chunks=4)
    summary = await client.run()

Per utterance it sends ``utterance_chunks`` ``audio_chunk`` frames, one every
``chunk_interval_s`` (the web client's 256 ms: 13 Opus packets of 20 ms in Plan A framing),
each stamped with ``client_timestamp_ms``, then an ``audio_chunk`` with ``is_final: true`` and
an empty payload ("send now"). ``seq`` grows across the whole session, as in the browser.

Everything received is collected in a :class:`ClientSummary`; the end-to-end latency of an
utterance is measured from sending its ``is_final`` chunk to receiving its
``translation_result`` (on the Trio clock, so it also works under a ``MockClock``).

The server assigns ``utterance_index`` 0, 1, 2, … to non-empty utterances, so the k-th
utterance sent is index k. ``run`` returns once every index has an outcome
(``translation_result`` or ``missing_result``), or after ``result_timeout_s`` past the last
``is_final``, and closes the socket — as the real web client does, which never sends
``session_close``. With ``send_session_close=True`` it first sends ``session_close`` and
waits (at most ``close_timeout_s``) for ``session_close_ack``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio_websocket

from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    opus_chunk_payload,
    session_init_frame,
)
from trio_scheduler.simulate.peer import Peer, connect

EventHook = Callable[[str, dict[str, Any]], None]


def wall_ms() -> int:
    return int(time.time() * 1000)


class ClientRejected(Exception):
    """The scheduler answered ``session_init`` with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame


@attrs.define
class UtteranceRecord:
    index: int
    chunks: int
    audio_ms: int
    final_sent_at: float | None = None  # Trio clock
    final_sent_at_ms: int | None = None  # wall clock
    result: dict[str, Any] | None = None
    missing: dict[str, Any] | None = None
    outcome_at: float | None = None  # Trio clock
    ui_events: dict[str, float] = attrs.Factory(dict)  # event name -> first receipt (Trio)
    done: trio.Event = attrs.Factory(trio.Event)

    @property
    def latency_ms(self) -> float | None:
        """is_final sent → translation_result received; None without a result."""
        if self.result is None or self.final_sent_at is None or self.outcome_at is None:
            return None
        return (self.outcome_at - self.final_sent_at) * 1000

    @property
    def dispatch_to_result_ms(self) -> float | None:
        """``ui_event DISPATCHED`` received → ``translation_result`` received."""
        dispatched = self.ui_events.get("DISPATCHED")
        if self.result is None or dispatched is None or self.outcome_at is None:
            return None
        return (self.outcome_at - dispatched) * 1000


@attrs.define
class ClientSummary:
    session_id: str | None = None
    ack: dict[str, Any] | None = None
    utterances: list[UtteranceRecord] = attrs.Factory(list)
    results: list[dict[str, Any]] = attrs.Factory(list)  # translation_result, arrival order
    missing: list[dict[str, Any]] = attrs.Factory(list)  # missing_result, arrival order
    ui_events: list[dict[str, Any]] = attrs.Factory(list)
    errors: list[dict[str, Any]] = attrs.Factory(list)
    backpressure: list[dict[str, Any]] = attrs.Factory(list)
    frames: list[dict[str, Any]] = attrs.Factory(list)  # everything, arrival order
    close_acked: bool = False
    closed_reason: str | None = None  # why the socket ended, if it ended under us

    @property
    def result_indices(self) -> list[int]:
        return [r["utterance_index"] for r in self.results]

    @property
    def complete(self) -> bool:
        """Every utterance sent has an outcome (result or missing_result)."""
        return all(u.done.is_set() for u in self.utterances)

    @property
    def latencies_ms(self) -> dict[int, float]:
        return {u.index: u.latency_ms for u in self.utterances if u.latency_ms is not None}

    def ui_event_names(self, index: int) -> list[str]:
        return [e["event"] for e in self.ui_events if e.get("utterance_index") == index]


class FakeClient:
    def __init__(
        self,
        url: str,
        *,
        src: str = "zh",
        tgt: str = "en",
        two_way: tuple[str, str] | None = None,
        utterances: int = 3,
        utterance_chunks: int = 4,
        chunk_interval_s: float = 0.256,
        packets_per_chunk: int = 13,
        pause_between_s: float = 0.0,
        wait_for_result: bool = False,
        result_timeout_s: float = 30.0,
        send_session_close: bool = False,
        close_timeout_s: float = 10.0,
        trace_id: str | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        if utterance_chunks < 1:
            raise ValueError("utterance_chunks must be >= 1 (an empty utterance gets no index)")
        self.url = url
        self.src, self.tgt, self.two_way = src, tgt, two_way
        self.utterances = utterances
        self.utterance_chunks = utterance_chunks
        self.chunk_interval_s = chunk_interval_s
        self.packets_per_chunk = packets_per_chunk
        self.pause_between_s = pause_between_s
        self.wait_for_result = wait_for_result
        self.result_timeout_s = result_timeout_s
        self.send_session_close = send_session_close
        self.close_timeout_s = close_timeout_s
        self.trace_id = trace_id
        self.on_event = on_event
        self.summary = ClientSummary()
        self._seq = 0
        self._close_ack = trio.Event()
        self._gone = trio.Event()

    def init_frame(self) -> dict[str, Any]:
        """The web client's ``session_init``; no ``trace_id`` lets the server pick one."""
        if self.two_way is not None:
            a, b = self.two_way
            return session_init_frame(
                src_lang="auto", tgt_lang=b, mode="two_way_auto", lang_a=a, lang_b=b,
                auto_langs=[a, b], trace_id=self.trace_id,
            )
        return one_way_init(self.src, self.tgt, trace_id=self.trace_id)

    # -- life ------------------------------------------------------------------------

    async def run(self) -> ClientSummary:
        """Open a session, stream every utterance, collect outcomes, close; the summary.

        Raises :class:`~trio_scheduler.simulate.peer.CannotConnect` when the server
        cannot be reached and :class:`ClientRejected` when it refuses the ``session_init``.
        """
        async with connect(self.url) as peer:
            await self._init(peer)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_frames, peer)
                await self._stream(peer)
                with trio.move_on_after(self.result_timeout_s):
                    for record in self.summary.utterances:
                        await self._wait_done(record)
                if self.send_session_close and not self._gone.is_set():
                    await self._send(peer, {"type": "session_close",
                                            "session_id": self.summary.session_id,
                                            "reason": "done"})
                    with trio.move_on_after(self.close_timeout_s):
                        await self._close_ack.wait()
                nursery.cancel_scope.cancel()
        return self.summary

    async def _init(self, peer: Peer) -> None:
        await peer.send(self.init_frame())
        ack = await peer.recv()
        self._record(ack)
        if ack.get("type") != "session_init_ack":
            raise ClientRejected(ack)
        self.summary.ack = ack
        self.summary.session_id = ack["session_id"]
        self._emit("session_init_ack", ack)

    async def _wait_done(self, record: UtteranceRecord) -> None:
        """Until the utterance has an outcome or the server closed the socket."""
        async with trio.open_nursery() as nursery:
            async def first(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, record.done)
            nursery.start_soon(first, self._gone)

    # -- sending -----------------------------------------------------------------------

    async def _stream(self, peer: Peer) -> None:
        session_id = self.summary.session_id
        assert session_id is not None
        for index in range(self.utterances):
            if self._gone.is_set():
                return
            # A different byte per utterance: the node sees distinct audio each time.
            payload = opus_chunk_payload(self.packets_per_chunk, fill=0x40 + index % 64)
            record = UtteranceRecord(
                index, self.utterance_chunks,
                self.utterance_chunks * self.packets_per_chunk * 20,
            )
            self.summary.utterances.append(record)
            start = trio.current_time()
            for k in range(self.utterance_chunks):
                # A chunk leaves once its 256 ms of audio are recorded: a timer, like the mic.
                await trio.sleep_until(start + (k + 1) * self.chunk_interval_s)
                await self._send(peer, audio_chunk_frame(
                    session_id, self._next_seq(), payload=payload,
                    client_timestamp_ms=wall_ms(),
                ))
            record.final_sent_at = trio.current_time()
            record.final_sent_at_ms = wall_ms()
            await self._send(peer, audio_chunk_frame(
                session_id, self._next_seq(), is_final=True, payload="",
                client_timestamp_ms=record.final_sent_at_ms,
            ))
            self._emit("utterance_sent", {"utterance_index": index,
                                          "chunks": self.utterance_chunks,
                                          "audio_ms": record.audio_ms})
            if self.wait_for_result:
                await self._wait_done(record)
            if self.pause_between_s > 0 and index + 1 < self.utterances:
                await trio.sleep(self.pause_between_s)

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    async def _send(self, peer: Peer, frame: dict[str, Any]) -> None:
        try:
            await peer.send(frame)
        except trio_websocket.ConnectionClosed as exc:
            self._on_closed(exc.reason)

    # -- receiving ---------------------------------------------------------------------

    async def _read_frames(self, peer: Peer) -> None:
        try:
            async for frame in peer.frames():
                self._on_frame(frame, trio.current_time())
        except trio_websocket.ConnectionClosed as exc:
            self._on_closed(exc.reason)

    def _on_frame(self, frame: dict[str, Any], now: float) -> None:
        self._record(frame)
        summary = self.summary
        kind = frame.get("type")
        if kind == "translation_result":
            summary.results.append(frame)
            self._outcome(frame, now, result=True)
        elif kind == "missing_result":
            summary.missing.append(frame)
            self._outcome(frame, now, result=False)
        elif kind == "ui_event":
            summary.ui_events.append(frame)
            index = frame.get("utterance_index")
            if isinstance(index, int) and 0 <= index < len(summary.utterances):
                summary.utterances[index].ui_events.setdefault(frame.get("event"), now)
        elif kind == "error":
            summary.errors.append(frame)
        elif kind == "backpressure":
            summary.backpressure.append(frame)
        elif kind == "session_close_ack":
            summary.close_acked = True
            self._close_ack.set()
        self._emit(kind or "unknown", frame)

    def _outcome(self, frame: dict[str, Any], now: float, *, result: bool) -> None:
        index = frame.get("utterance_index")
        if not isinstance(index, int) or not 0 <= index < len(self.summary.utterances):
            return
        record = self.summary.utterances[index]
        if record.done.is_set():
            return
        if result:
            record.result = frame
        else:
            record.missing = frame
        record.outcome_at = now
        record.done.set()

    def _on_closed(self, reason: Any) -> None:
        if not self._gone.is_set():
            self.summary.closed_reason = str(reason) if reason is not None else "closed"
            self._gone.set()
            self._emit("closed", {"reason": self.summary.closed_reason})

    def _record(self, frame: dict[str, Any]) -> None:
        self.summary.frames.append(frame)

    def _emit(self, event: str, frame: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event, frame)


def describe_client_event(kind: str, frame: dict[str, Any]) -> str:
    """One readable line for an ``on_event`` callback (used by the scripts)."""
    index = frame.get("utterance_index")
    match kind:
        case "session_init_ack":
            return f"session {frame['session_id']} opened (trace {frame.get('trace_id')})"
        case "utterance_sent":
            return (f"utt {index}: sent {frame['chunks']} chunks "
                    f"({frame['audio_ms']} ms audio) + is_final")
        case "ui_event":
            extra = ""
            if frame.get("status") == "error":
                extra = f" {frame.get('error_code')}: {frame.get('hint')}"
            return f"utt {index}: ui_event {frame.get('event')}{extra}"
        case "translation_result":
            timings = frame.get("service_timings") or {}
            return (f"utt {index}: RESULT {frame.get('text_asr')!r} -> "
                    f"{frame.get('text_translated')!r} (node total {timings.get('total_ms')} ms)")
        case "missing_result":
            return f"utt {index}: missing_result ({frame.get('reason')})"
        case "error":
            return f"ERROR {frame.get('code')}: {frame.get('message')}"
        case "backpressure":
            return f"backpressure {frame.get('action')}"
        case "closed":
            return f"socket closed ({frame.get('reason')})"
    return f"{kind}: {frame}"
