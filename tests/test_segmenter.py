"""Unit tests of server-side segmentation (sessions/segmenter.py), driven by plain floats.

Times are seconds on the caller's clock; audio is Plan A framed Opus, so durations are
exact: a 13-packet chunk is 260 ms (the web client's chunk), a 50-packet chunk 1000 ms.
"""

from __future__ import annotations

import base64
import itertools
import math

import pytest

from trio_scheduler.sessions.audio import plan_a_frame
from trio_scheduler.sessions.segmenter import (
    FinalizeReason,
    Segment,
    Segmenter,
    SegmenterSettings,
)
from trio_scheduler.simulate.frames import opus_chunk_payload

R = FinalizeReason

CHUNK = base64.b64decode(opus_chunk_payload())  # 13 packets = 260 ms, 806 bytes
SECOND = base64.b64decode(opus_chunk_payload(packets=50))  # 50 packets = 1000 ms, 3100 bytes
assert (len(CHUNK), len(SECOND)) == (806, 3100)


def audio(packets: int, packet_bytes: int = 60) -> bytes:
    return plan_a_frame([b"\x5a" * packet_bytes] * packets)


def make(settings: SegmenterSettings | None = None) -> tuple[Segmenter, list[str]]:
    issued: list[str] = []
    counter = itertools.count(1)

    def new_turn_id() -> str:
        turn = f"turn-{next(counter)}"
        issued.append(turn)
        return turn

    return Segmenter(settings or SegmenterSettings(), new_turn_id), issued


def flags(segment: Segment) -> tuple[bool, bool, bool]:
    return (segment.is_manual_cut, segment.is_timeout_triggered, segment.is_max_duration_triggered)


def test_default_settings_match_protocol():
    s = SegmenterSettings()
    assert (s.pause_ms, s.max_duration_ms, s.max_buffer_bytes) == (3000, 10000, 512000)
    assert (s.padding_auto_ms, s.padding_manual_ms) == (220, 280)


@pytest.mark.parametrize(
    ("reason", "padding", "manual", "timeout", "max_duration"),
    [
        (R.MAX_LENGTH, 0, False, False, False),
        (R.IS_FINAL, 280, True, False, False),
        (R.MAX_DURATION, 220, False, False, True),
        (R.TIMEOUT, 220, False, True, False),
        (R.SESSION_CLOSE, 220, False, False, False),
    ],
)
def test_padding_and_flags_per_reason(reason, padding, manual, timeout, max_duration):
    assert SegmenterSettings().padding_for(reason) == padding
    segment = Segment(
        utterance_index=0, audio=b"x", duration_ms=20, reason=reason, padding_ms=padding,
        turn_id="t", first_client_ts_ms=None, first_received_at_ms=None, started_at=0.0,
        finalized_at=0.0,
    )
    assert flags(segment) == (manual, timeout, max_duration)


# ---------------------------------------------------------------------------------------
# IsFinal


def test_is_final_with_empty_payload_cuts_the_buffer():
    seg, _ = make()
    assert seg.add_chunk(0.0, CHUNK, False, client_ts_ms=1000.0, received_at_ms=5000) is None
    assert seg.add_chunk(0.25, CHUNK, False, client_ts_ms=1256.0, received_at_ms=5256) is None
    assert seg.add_chunk(0.5, CHUNK, False, client_ts_ms=1512.0, received_at_ms=5512) is None
    assert (seg.buffered_bytes, seg.buffered_ms) == (3 * 806, 780)
    segment = seg.add_chunk(0.75, b"", True, client_ts_ms=1768.0, received_at_ms=5768)
    assert segment == Segment(
        utterance_index=0,
        audio=CHUNK * 3,
        duration_ms=780,
        reason=R.IS_FINAL,
        padding_ms=280,
        turn_id="turn-1",
        first_client_ts_ms=1000.0,
        first_received_at_ms=5000,
        started_at=0.0,
        finalized_at=0.75,
    )
    assert flags(segment) == (True, False, False)
    assert (seg.next_index, seg.buffered_bytes, seg.buffered_ms) == (1, 0, 0)
    assert seg.next_deadline() == math.inf


def test_is_final_with_payload_includes_it():
    seg, _ = make()
    seg.add_chunk(0.0, CHUNK, False)
    segment = seg.add_chunk(0.25, SECOND, True)
    assert segment is not None
    assert segment.audio == CHUNK + SECOND
    assert segment.duration_ms == 1260
    assert segment.reason is R.IS_FINAL
    assert segment.padding_ms == 280


def test_is_final_single_chunk():
    seg, _ = make()
    segment = seg.add_chunk(2.0, CHUNK, True, client_ts_ms=42.0)
    assert segment is not None
    assert (segment.utterance_index, segment.duration_ms, segment.first_client_ts_ms) == (
        0, 260, 42.0
    )
    assert segment.started_at == segment.finalized_at == 2.0


# ---------------------------------------------------------------------------------------
# Pause timeout


@pytest.mark.parametrize(
    ("chunks", "deadline"),
    [
        pytest.param([(0.0, CHUNK)], 3.0, id="one-chunk"),
        pytest.param([(0.0, CHUNK), (0.25, CHUNK), (0.5, CHUNK)], 3.5, id="last-non-empty"),
        pytest.param([(0.0, CHUNK), (1.0, b""), (2.0, b""), (2.75, b"")], 3.0,
                     id="empty-chunks-do-not-extend"),
        pytest.param([(0.0, CHUNK), (1.5, CHUNK), (4.0, b"")], 4.5, id="mixed"),
        pytest.param([(5.0, b""), (6.0, CHUNK)], 9.0, id="empty-before-audio"),
    ],
)
def test_next_deadline_is_pause_after_last_non_empty_chunk(chunks, deadline):
    seg, _ = make()
    for now, payload in chunks:
        assert seg.add_chunk(now, payload, False) is None
    assert seg.next_deadline() == deadline


def test_next_deadline_infinite_when_empty():
    seg, _ = make()
    assert seg.next_deadline() == math.inf
    seg.add_chunk(0.0, b"", False)
    assert seg.next_deadline() == math.inf


def test_timeout_fires_at_the_deadline_not_before():
    seg, _ = make()
    seg.add_chunk(0.0, CHUNK, False, client_ts_ms=7.0)
    seg.add_chunk(0.25, CHUNK, False)
    seg.add_chunk(1.0, b"", False)
    seg.add_chunk(2.0, b"", False)
    seg.add_chunk(3.0, b"", False)  # empty: does not extend the pause
    assert seg.next_deadline() == 3.25
    assert seg.on_timer(3.0) is None
    assert seg.on_timer(3.2) is None
    segment = seg.on_timer(3.25)
    assert segment is not None
    assert segment.reason is R.TIMEOUT
    assert segment.padding_ms == 220
    assert flags(segment) == (False, True, False)
    assert (segment.utterance_index, segment.duration_ms) == (0, 520)
    assert (segment.started_at, segment.finalized_at) == (0.0, 3.25)
    assert segment.first_client_ts_ms == 7.0
    assert seg.next_deadline() == math.inf
    assert seg.on_timer(100.0) is None
    assert seg.next_index == 1


def test_timeout_with_custom_pause():
    seg, _ = make(SegmenterSettings(pause_ms=500))
    seg.add_chunk(10.0, CHUNK, False)
    assert seg.next_deadline() == 10.5
    assert seg.on_timer(10.25) is None
    segment = seg.on_timer(11.0)
    assert segment is not None and segment.reason is R.TIMEOUT


def test_on_timer_on_empty_buffer_does_nothing():
    seg, issued = make()
    assert seg.on_timer(0.0) is None
    assert seg.on_timer(1e9) is None
    assert seg.next_index == 0
    assert issued == []


# ---------------------------------------------------------------------------------------
# MaxDuration


def test_max_duration_at_exactly_10000_ms():
    seg, _ = make()
    for i in range(9):
        assert seg.add_chunk(float(i), SECOND, False) is None
    assert seg.buffered_ms == 9000
    segment = seg.add_chunk(9.0, SECOND, False)
    assert segment is not None
    assert segment.reason is R.MAX_DURATION
    assert segment.duration_ms == 10000
    assert segment.padding_ms == 220
    assert flags(segment) == (False, False, True)
    assert segment.audio == SECOND * 10


def test_max_duration_with_web_client_chunks():
    """39 chunks of 260 ms: 9880 ms after 38, 10140 ms after 39."""
    seg, _ = make()
    for i in range(38):
        assert seg.add_chunk(i * 0.26, CHUNK, False) is None
    assert seg.buffered_ms == 9880
    segment = seg.add_chunk(38 * 0.26, CHUNK, False)
    assert segment is not None
    assert (segment.reason, segment.duration_ms, segment.padding_ms) == (
        R.MAX_DURATION, 10140, 220
    )


def test_max_duration_counts_packets_not_bytes():
    """Big packets: 10 × 50 packets of 300 bytes is still exactly 10000 ms."""
    seg, _ = make()
    big_second = audio(50, packet_bytes=300)
    for i in range(9):
        assert seg.add_chunk(float(i), big_second, False) is None
    segment = seg.add_chunk(9.0, big_second, False)
    assert segment is not None and segment.reason is R.MAX_DURATION
    assert segment.duration_ms == 10000


def test_max_duration_custom():
    seg, _ = make(SegmenterSettings(max_duration_ms=520))
    assert seg.add_chunk(0.0, CHUNK, False) is None
    segment = seg.add_chunk(0.25, CHUNK, False)
    assert segment is not None and segment.reason is R.MAX_DURATION
    assert segment.duration_ms == 520


# ---------------------------------------------------------------------------------------
# MaxLength


def test_max_length_when_buffer_exceeds_limit():
    seg, _ = make(SegmenterSettings(max_buffer_bytes=2000))
    assert seg.add_chunk(0.0, CHUNK, False) is None  # 806
    assert seg.add_chunk(0.25, CHUNK, False) is None  # 1612
    segment = seg.add_chunk(0.5, CHUNK, False)  # 2418 > 2000
    assert segment is not None
    assert segment.reason is R.MAX_LENGTH
    assert segment.padding_ms == 0
    assert flags(segment) == (False, False, False)
    assert len(segment.audio) == 2418
    assert segment.duration_ms == 780


def test_buffer_exactly_at_limit_is_not_cut():
    seg, _ = make(SegmenterSettings(max_buffer_bytes=1612))
    assert seg.add_chunk(0.0, CHUNK, False) is None
    assert seg.add_chunk(0.25, CHUNK, False) is None
    assert seg.buffered_bytes == 1612
    segment = seg.add_chunk(0.5, b"\x01\x00z", False)
    assert segment is not None and segment.reason is R.MAX_LENGTH


def test_max_length_with_default_limit():
    """Two 1000 ms chunks of 260 100 bytes each: 520 200 > 512 000 bytes."""
    seg, _ = make()
    heavy = audio(50, packet_bytes=5200)
    assert len(heavy) == 260100
    assert seg.add_chunk(0.0, heavy, False) is None
    segment = seg.add_chunk(1.0, heavy, False)
    assert segment is not None
    assert (segment.reason, segment.padding_ms, segment.duration_ms) == (R.MAX_LENGTH, 0, 2000)


# ---------------------------------------------------------------------------------------
# Precedence: MaxLength > IsFinal > MaxDuration


@pytest.mark.parametrize(
    ("settings", "chunks", "expected"),
    [
        pytest.param(SegmenterSettings(max_buffer_bytes=1000), [(CHUNK, False), (CHUNK, True)],
                     R.MAX_LENGTH, id="max-length-over-is-final"),
        pytest.param(SegmenterSettings(max_buffer_bytes=1000, max_duration_ms=500),
                     [(CHUNK, False), (CHUNK, False)], R.MAX_LENGTH,
                     id="max-length-over-max-duration"),
        pytest.param(SegmenterSettings(max_buffer_bytes=1000, max_duration_ms=500),
                     [(CHUNK, False), (CHUNK, True)], R.MAX_LENGTH, id="max-length-over-both"),
        pytest.param(SegmenterSettings(max_duration_ms=500), [(CHUNK, False), (CHUNK, True)],
                     R.IS_FINAL, id="is-final-over-max-duration"),
    ],
)
def test_precedence(settings, chunks, expected):
    seg, _ = make(settings)
    results = [seg.add_chunk(i * 0.25, payload, final) for i, (payload, final) in enumerate(chunks)]
    assert results[:-1] == [None] * (len(chunks) - 1)
    assert results[-1] is not None
    assert results[-1].reason is expected
    assert results[-1].padding_ms == settings.padding_for(expected)


# ---------------------------------------------------------------------------------------
# Empty finalize


def test_empty_finalizes_do_nothing():
    seg, issued = make()
    assert seg.add_chunk(0.0, b"", True) is None
    assert seg.add_chunk(0.25, b"", True) is None
    assert seg.flush(0.5) is None
    assert seg.on_timer(10.0) is None
    assert seg.next_index == 0
    assert issued == [], "no turn is opened by an empty finalize"
    segment = seg.add_chunk(1.0, CHUNK, True)
    assert segment is not None
    assert (segment.utterance_index, segment.turn_id) == (0, "turn-1")


def test_empty_finalize_after_a_cut_does_not_advance_index():
    seg, _ = make()
    first = seg.add_chunk(0.0, CHUNK, True)
    assert first is not None and first.utterance_index == 0
    # the web client's burst of empty is_final chunks
    for i in range(6):
        assert seg.add_chunk(0.25 * (i + 1), b"", True) is None
    assert seg.flush(2.0) is None
    assert seg.next_index == 1
    second = seg.add_chunk(3.0, CHUNK, True)
    assert second is not None and second.utterance_index == 1


# ---------------------------------------------------------------------------------------
# Indexes and turns


def test_indexes_count_up_across_reasons():
    seg, _ = make(SegmenterSettings(max_buffer_bytes=5000))
    out = [seg.add_chunk(0.0, CHUNK, True)]  # IsFinal
    seg.add_chunk(1.0, CHUNK, False)
    out.append(seg.on_timer(4.0))  # Timeout
    assert seg.add_chunk(5.0, SECOND, False) is None
    out.append(seg.add_chunk(5.5, SECOND, False))  # 6200 bytes > 5000: MaxLength
    seg.add_chunk(6.0, CHUNK, False)
    out.append(seg.flush(6.5))  # SessionClose
    assert all(s is not None for s in out)
    assert [s.utterance_index for s in out] == [0, 1, 2, 3]
    assert [s.reason for s in out] == [R.IS_FINAL, R.TIMEOUT, R.MAX_LENGTH, R.SESSION_CLOSE]
    assert seg.next_index == 4


def test_chunk_after_a_cut_starts_the_next_utterance():
    seg, _ = make()
    seg.add_chunk(0.0, CHUNK, False, client_ts_ms=100.0)
    first = seg.add_chunk(0.25, CHUNK, True, client_ts_ms=356.0)
    seg.add_chunk(0.3, SECOND, False, client_ts_ms=400.0)
    second = seg.add_chunk(0.5, b"", True, client_ts_ms=600.0)
    assert first is not None and second is not None
    assert first.audio == CHUNK * 2
    assert second.audio == SECOND
    assert (first.first_client_ts_ms, second.first_client_ts_ms) == (100.0, 400.0)
    assert (second.utterance_index, second.started_at) == (1, 0.3)


def test_turn_shared_by_max_duration_segments_and_their_end():
    seg, issued = make()
    segments: list[Segment] = []
    now = 0.0
    for _ in range(2):  # two MaxDuration segments
        for _ in range(10):
            result = seg.add_chunk(now, SECOND, False)
            now += 1.0
        assert result is not None
        segments.append(result)
    seg.add_chunk(now, CHUNK, False)
    result = seg.add_chunk(now + 0.25, b"", True)  # the manual cut that ends the long utterance
    assert result is not None
    segments.append(result)
    seg.add_chunk(now + 1.0, CHUNK, False)
    result = seg.add_chunk(now + 1.25, b"", True)  # the next utterance
    assert result is not None
    segments.append(result)
    assert [s.reason for s in segments] == [R.MAX_DURATION, R.MAX_DURATION, R.IS_FINAL, R.IS_FINAL]
    assert [s.utterance_index for s in segments] == [0, 1, 2, 3]
    assert [s.turn_id for s in segments] == ["turn-1", "turn-1", "turn-1", "turn-2"]
    assert issued == ["turn-1", "turn-2"]


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        pytest.param(lambda seg, now: seg.on_timer(now + 3.0), R.TIMEOUT, id="timeout"),
        pytest.param(lambda seg, now: seg.flush(now), R.SESSION_CLOSE, id="session-close"),
        pytest.param(lambda seg, now: seg.add_chunk(now, b"", True), R.IS_FINAL, id="is-final"),
    ],
)
def test_segment_ending_a_max_duration_run_keeps_its_turn(end, reason):
    seg, _ = make()
    for i in range(10):
        first = seg.add_chunk(float(i), SECOND, False)
    assert first is not None and first.reason is R.MAX_DURATION
    seg.add_chunk(10.0, CHUNK, False)
    last = end(seg, 10.0)
    assert last is not None and last.reason is reason
    assert last.turn_id == first.turn_id == "turn-1"
    seg.add_chunk(20.0, CHUNK, False)
    following = seg.add_chunk(20.25, b"", True)
    assert following is not None and following.turn_id == "turn-2"


def test_every_ordinary_utterance_has_its_own_turn():
    seg, _ = make()
    turns = []
    for i in range(3):
        seg.add_chunk(float(i), CHUNK, False)
        segment = seg.add_chunk(i + 0.25, b"", True)
        assert segment is not None
        turns.append(segment.turn_id)
    assert turns == ["turn-1", "turn-2", "turn-3"]


def test_empty_is_final_after_max_duration_cut_ends_the_turn():
    seg, _ = make()
    for i in range(10):
        cut = seg.add_chunk(float(i), SECOND, False)
    assert cut is not None and cut.reason is R.MAX_DURATION  # buffer now empty
    assert seg.add_chunk(10.0, b"", True) is None  # user stops: manual cut, nothing buffered
    seg.add_chunk(60.0, CHUNK, False)  # a new utterance, a minute later
    following = seg.add_chunk(60.25, b"", True)
    assert following is not None
    assert following.utterance_index == 1
    assert following.turn_id != cut.turn_id


def test_pause_after_max_duration_cut_ends_the_turn():
    seg, _ = make()
    for i in range(10):
        cut = seg.add_chunk(float(i), SECOND, False)
    assert cut is not None and cut.reason is R.MAX_DURATION
    assert seg.on_timer(9.0 + 3.0) is None  # pause elapses with nothing buffered
    seg.add_chunk(60.0, CHUNK, False)  # new speech a minute later
    following = seg.add_chunk(60.25, b"", True)
    assert following is not None
    assert following.turn_id != cut.turn_id


# ---------------------------------------------------------------------------------------
# first_client_ts_ms, received_at, SessionClose


def test_first_client_ts_is_the_first_non_empty_chunks():
    seg, _ = make()
    seg.add_chunk(0.0, b"", False, client_ts_ms=1.0, received_at_ms=11)  # empty: not counted
    seg.add_chunk(0.1, CHUNK, False, client_ts_ms=2.0, received_at_ms=12)
    seg.add_chunk(0.2, CHUNK, False, client_ts_ms=3.0, received_at_ms=13)
    segment = seg.add_chunk(0.3, CHUNK, True, client_ts_ms=4.0, received_at_ms=14)
    assert segment is not None
    assert (segment.first_client_ts_ms, segment.first_received_at_ms) == (2.0, 12)
    assert segment.started_at == 0.1
    seg.add_chunk(0.4, CHUNK, False)  # no client timestamp
    segment = seg.add_chunk(0.5, CHUNK, True, client_ts_ms=9.0)
    assert segment is not None
    assert segment.first_client_ts_ms is None, "not carried over from the previous utterance"


def test_session_close_flush():
    seg, _ = make()
    seg.add_chunk(0.0, CHUNK, False, client_ts_ms=500.0)
    seg.add_chunk(0.25, CHUNK, False)
    segment = seg.flush(0.4)
    assert segment is not None
    assert segment.reason is R.SESSION_CLOSE
    assert segment.padding_ms == 220
    assert flags(segment) == (False, False, False)
    assert (segment.utterance_index, segment.duration_ms, segment.audio) == (0, 520, CHUNK * 2)
    assert (segment.first_client_ts_ms, segment.started_at, segment.finalized_at) == (
        500.0, 0.0, 0.4
    )
    assert seg.flush(0.5) is None
    assert seg.next_index == 1


def test_unparseable_audio_uses_the_byte_estimate():
    seg, _ = make()
    garbage = b"\x00" * 130  # not Plan A (zero-length packet): 130 * 20 // 60 = 43 ms
    seg.add_chunk(0.0, garbage, False)
    seg.add_chunk(0.1, CHUNK, False)
    assert seg.buffered_ms == 43 + 260


# -- the minimum utterance length ----------------------------------------------------------


def test_utterance_below_the_minimum_is_dropped_without_using_an_index():
    seg, _ = make(SegmenterSettings(min_utterance_ms=200))
    assert seg.add_chunk(0.0, audio(5), True) is None  # 100 ms + is_final
    assert seg.discarded_short == 1
    segment = seg.add_chunk(1.0, audio(10), True)  # exactly 200 ms
    assert segment is not None and segment.utterance_index == 0


@pytest.mark.parametrize("end", ["manual", "timeout"])
def test_a_short_tail_still_ends_a_max_duration_turn(end):
    """The tail of a long utterance goes to the node with the turn's id, however short:
    the node is buffering that turn."""
    seg, turns = make(SegmenterSettings(min_utterance_ms=200))
    first = seg.add_chunk(0.0, audio(500), False)  # 10 000 ms
    assert first is not None and first.reason is R.MAX_DURATION
    if end == "manual":
        last = seg.add_chunk(0.3, audio(5), True)  # 100 ms + is_final
    else:
        assert seg.add_chunk(0.3, audio(5), False) is None
        last = seg.on_timer(0.3 + 3.0)
    assert last is not None
    assert (last.utterance_index, last.turn_id) == (1, first.turn_id)
    assert last.duration_ms == 100
    assert seg.discarded_short == 0
    # The turn is over: the next short burst is noise again.
    assert seg.add_chunk(10.0, audio(5), True) is None
    assert turns == [first.turn_id]


def test_a_burst_long_after_a_max_duration_cut_is_noise_again():
    """While TTS playback holds the pause timer the turn stays open; a tiny burst that
    comes after more than a pause is not the turn's tail."""
    seg, _ = make(SegmenterSettings(min_utterance_ms=200))
    first = seg.add_chunk(0.0, audio(500), False)
    assert first is not None and first.reason is R.MAX_DURATION
    seg.suspend_pause_timer(until=30.0)
    assert seg.add_chunk(10.0, audio(1), True) is None  # 20 ms, 10 s after the cut
    assert seg.discarded_short == 1
    nxt = seg.add_chunk(11.0, audio(20), True)
    assert nxt is not None and nxt.utterance_index == 1 and nxt.turn_id != first.turn_id


# -- silence ---------------------------------------------------------------------------------


def test_the_web_clients_silent_utterance_is_dropped_without_using_an_index():
    seg, _ = make(SegmenterSettings(min_utterance_ms=200, min_voiced_ms=100))
    silent = audio(13, packet_bytes=8)  # 130 bytes, 260 ms: long enough, but silent
    assert len(silent) == 13 * (2 + 8)
    for burst in range(6):
        assert seg.add_chunk(burst * 0.256, silent, False) is None
        assert seg.add_chunk(burst * 0.256, b"", True) is None
    assert (seg.discarded_silent, seg.discarded_short) == (6, 0)
    assert seg.next_index == 0
    segment = seg.add_chunk(2.0, CHUNK, True)
    assert segment is not None and segment.utterance_index == 0


@pytest.mark.parametrize(("voiced_packets", "kept"), [(4, False), (5, True)])
def test_an_utterance_needs_min_voiced_ms_of_voiced_packets(voiced_packets, kept):
    seg, _ = make(SegmenterSettings(min_voiced_ms=100))
    seg.add_chunk(0.0, audio(20, packet_bytes=8), False)  # 400 ms of silence
    segment = seg.add_chunk(0.1, audio(voiced_packets, packet_bytes=11), True)
    assert (segment is not None) is kept
    if kept:
        # Silence inside an utterance stays: the node hears what the browser sent.
        assert segment.duration_ms == 400 + voiced_packets * 20
        assert segment.audio == audio(20, packet_bytes=8) + audio(voiced_packets, 11)


def test_audio_that_is_not_plan_a_counts_as_voiced():
    seg, _ = make(SegmenterSettings(min_voiced_ms=100))
    unframed = b"\x00" * 600  # not Plan A: the byte estimate, 200 ms, cannot be judged
    segment = seg.add_chunk(0.0, unframed, True)
    assert segment is not None and segment.duration_ms == 200


def test_a_silent_tail_still_ends_a_max_duration_turn():
    seg, _ = make(SegmenterSettings(min_utterance_ms=200, min_voiced_ms=100))
    first = seg.add_chunk(0.0, audio(500), False)
    assert first is not None and first.reason is R.MAX_DURATION
    last = seg.add_chunk(0.3, audio(13, packet_bytes=8), True)
    assert last is not None and last.turn_id == first.turn_id
    assert seg.discarded_silent == 0
