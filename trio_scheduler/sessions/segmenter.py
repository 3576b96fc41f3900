"""Cutting a session's audio stream into utterances: pure and driven by the caller's clock.

The session task feeds chunks and timer ticks in; finished :class:`Segment` objects come
out. Nothing here awaits or reads a clock, so every rule is tested with plain numbers.

Finalize reasons, highest precedence first (PROTOCOL §2.3):

* ``MAX_LENGTH``   buffer above ``max_buffer_bytes``            padding 0
* ``IS_FINAL``     chunk with ``is_final``                       padding ``padding_manual_ms``
* ``MAX_DURATION`` accumulated audio ≥ ``max_duration_ms``       padding ``padding_auto_ms``
* ``TIMEOUT``      no non-empty chunk for ``pause_ms``           padding ``padding_auto_ms``
* ``SESSION_CLOSE`` what is buffered when the client closes      padding ``padding_auto_ms``

A finalize of an empty buffer produces nothing and does not advance the index; neither
does one shorter than ``min_utterance_ms``, nor one with less than ``min_voiced_ms`` of
voiced packets (the web client's bursts of one-chunk silent utterances after a pause: a
node would be given nothing to hear). Silence inside an utterance is kept as it came: the
node hears exactly what the browser sent.

After a cut, the utterance is held for its *hangover* (:class:`HangoverQueue`) before it
is dispatched; chunks arriving meanwhile already belong to the next utterance.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import attrs

from trio_scheduler.sessions.audio import SILENT_PACKET_MAX_BYTES, opus_measure_ms


class FinalizeReason(enum.StrEnum):
    MAX_LENGTH = "MaxLength"
    IS_FINAL = "IsFinal"
    MAX_DURATION = "MaxDuration"
    TIMEOUT = "Timeout"
    SESSION_CLOSE = "SessionClose"


@attrs.frozen
class SegmenterSettings:
    pause_ms: int = 3000
    max_duration_ms: int = 10000
    max_buffer_bytes: int = 512000
    padding_auto_ms: int = 220
    padding_manual_ms: int = 280
    min_utterance_ms: int = 0
    min_voiced_ms: int = 0
    silent_packet_max_bytes: int = SILENT_PACKET_MAX_BYTES

    def padding_for(self, reason: FinalizeReason) -> int:
        if reason is FinalizeReason.MAX_LENGTH:
            return 0
        if reason is FinalizeReason.IS_FINAL:
            return self.padding_manual_ms
        return self.padding_auto_ms


@attrs.frozen
class Segment:
    utterance_index: int
    audio: bytes
    duration_ms: int
    reason: FinalizeReason
    padding_ms: int
    turn_id: str
    first_client_ts_ms: float | None
    first_received_at_ms: int | None  # wall clock when its first chunk reached us
    started_at: float  # clock time of the first chunk
    finalized_at: float

    @property
    def is_manual_cut(self) -> bool:
        return self.reason is FinalizeReason.IS_FINAL

    @property
    def is_timeout_triggered(self) -> bool:
        return self.reason is FinalizeReason.TIMEOUT

    @property
    def is_max_duration_triggered(self) -> bool:
        return self.reason is FinalizeReason.MAX_DURATION


class Segmenter:
    def __init__(self, settings: SegmenterSettings, new_turn_id: Callable[[], str]) -> None:
        self._settings = settings
        self._new_turn_id = new_turn_id
        self._buffer = bytearray()
        self._duration_ms = 0
        self._voiced_ms = 0
        self._next_index = 0
        self._turn_id: str | None = None
        self._first_client_ts_ms: float | None = None
        self._first_received_at_ms: int | None = None
        self._started_at: float | None = None
        self._turn_cut_at: float | None = None  # last MaxDuration cut of the open turn
        self._last_audio_at: float | None = None
        self._pause_suspended_until: float | None = None
        self.discarded_short = 0  # utterances too short to hold speech
        self.discarded_silent = 0  # long enough, but without enough voiced audio

    @property
    def next_index(self) -> int:
        return self._next_index

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def buffered_ms(self) -> int:
        return self._duration_ms

    def add_chunk(
        self,
        now: float,
        payload: bytes,
        is_final: bool,
        client_ts_ms: float | None = None,
        received_at_ms: int | None = None,
    ) -> Segment | None:
        """Append one chunk; returns the utterance it completed, if any."""
        if payload:
            if not self._buffer:
                self._started_at = now
                self._first_client_ts_ms = client_ts_ms
                self._first_received_at_ms = received_at_ms
            self._buffer += payload
            duration_ms, voiced_ms = opus_measure_ms(
                payload, self._settings.silent_packet_max_bytes
            )
            self._duration_ms += duration_ms
            self._voiced_ms += voiced_ms
            self._last_audio_at = now
        if len(self._buffer) > self._settings.max_buffer_bytes:
            return self._finalize(now, FinalizeReason.MAX_LENGTH)
        if is_final:
            return self._finalize(now, FinalizeReason.IS_FINAL)
        if self._duration_ms >= self._settings.max_duration_ms:
            return self._finalize(now, FinalizeReason.MAX_DURATION)
        return None

    def next_deadline(self) -> float:
        """When :meth:`on_timer` has something to do: a pause ends the buffered utterance,
        or the open turn after a MaxDuration cut; ``inf`` when there is neither."""
        if self._pause_suspended_until is not None:
            return self._pause_suspended_until
        if self._last_audio_at is None or (not self._buffer and self._turn_id is None):
            return math.inf
        return self._last_audio_at + self._settings.pause_ms / 1000

    def on_timer(self, now: float) -> Segment | None:
        if self._pause_suspended_until is not None:
            if now >= self._pause_suspended_until:
                self.restart_pause_timer(now)  # playback never reported its end
            return None
        if now >= self.next_deadline():
            return self._finalize(now, FinalizeReason.TIMEOUT)
        return None

    def suspend_pause_timer(self, until: float = math.inf) -> None:
        """TTS is playing: what the microphone hears now is no reason to cut — until
        ``until`` at the latest, in case the end of playback is never reported."""
        self._pause_suspended_until = until

    def restart_pause_timer(self, now: float) -> None:
        """Playback ended: the pause is counted from now."""
        self._pause_suspended_until = None
        if self._last_audio_at is not None:
            self._last_audio_at = now

    def flush(self, now: float) -> Segment | None:
        """Finalize whatever is buffered because the session is closing."""
        return self._finalize(now, FinalizeReason.SESSION_CLOSE)

    def _finalize(self, now: float, reason: FinalizeReason) -> Segment | None:
        # A short buffer is noise (the web client's silent bursts) — unless it is the tail
        # of a long utterance cut by MaxDuration, spoken on without a pause: that segment
        # ends the turn the node is buffering, and it must reach the node with the turn's
        # id. (Audio after a longer gap, e.g. while TTS playback held the pause timer, is
        # a new burst and judged as such.)
        continues_turn = (
            self._turn_id is not None
            and self._turn_cut_at is not None
            and self._started_at is not None
            and self._started_at - self._turn_cut_at <= self._settings.pause_ms / 1000
        )
        if self._buffer and not continues_turn:
            if self._duration_ms < self._settings.min_utterance_ms:
                self.discarded_short += 1
                self._clear_buffer()
            elif self._voiced_ms < self._settings.min_voiced_ms:
                self.discarded_silent += 1
                self._clear_buffer()
        if not self._buffer:
            # Nothing to cut, but a manual cut, pause or close still ends an open turn.
            if reason is not FinalizeReason.MAX_DURATION:
                self._turn_id = None
                self._turn_cut_at = None
                self._last_audio_at = None
            return None
        if self._turn_id is None:
            self._turn_id = self._new_turn_id()
        segment = Segment(
            utterance_index=self._next_index,
            audio=bytes(self._buffer),
            duration_ms=self._duration_ms,
            reason=reason,
            padding_ms=self._settings.padding_for(reason),
            turn_id=self._turn_id,
            first_client_ts_ms=self._first_client_ts_ms,
            first_received_at_ms=self._first_received_at_ms,
            started_at=self._started_at if self._started_at is not None else now,
            finalized_at=now,
        )
        self._next_index += 1
        self._clear_buffer()
        # Consecutive MaxDuration cuts are one long utterance: they share a turn, and the
        # cut that ends it (manual, timeout, …) carries the same turn_id. After a
        # MaxDuration cut the pause timer keeps running, so silence still ends the turn.
        if reason is FinalizeReason.MAX_DURATION:
            self._turn_cut_at = now
        else:
            self._turn_id = None
            self._turn_cut_at = None
            self._last_audio_at = None
        return segment

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._duration_ms = 0
        self._voiced_ms = 0
        self._first_client_ts_ms = None
        self._first_received_at_ms = None
        self._started_at = None


class HangoverQueue:
    """Holds cut utterances for their hangover before they are dispatched.

    IsFinal cuts wait ``manual_ms``, MaxDuration and Timeout cuts ``auto_ms``; MaxLength
    and SessionClose cuts have none and release everything held before them, so
    utterances always leave in index order.
    """

    def __init__(self, auto_ms: int, manual_ms: int) -> None:
        self._hangover_s = {
            FinalizeReason.IS_FINAL: manual_ms / 1000,
            FinalizeReason.MAX_DURATION: auto_ms / 1000,
            FinalizeReason.TIMEOUT: auto_ms / 1000,
        }
        self._held: list[tuple[float, Segment]] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, segment: Segment) -> list[Segment]:
        """Queue a cut; returns what must be dispatched now."""
        hangover = self._hangover_s.get(segment.reason, 0.0)
        if hangover <= 0:
            return self.release_all() + [segment]
        self._held.append((segment.finalized_at + hangover, segment))
        return []

    def next_deadline(self) -> float:
        return self._held[0][0] if self._held else math.inf

    def release_due(self, now: float) -> list[Segment]:
        due = []
        while self._held and self._held[0][0] <= now:
            due.append(self._held.pop(0)[1])
        return due

    def release_all(self) -> list[Segment]:
        held, self._held = [segment for _, segment in self._held], []
        return held
