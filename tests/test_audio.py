"""Unit tests of audio durations and payload decoding (sessions/audio.py)."""

from __future__ import annotations

import base64

import pytest

from trio_scheduler.sessions.audio import (
    opus_measure_ms,
    utterance_measure_ms,
    decode_base64,
    opus_duration_ms,
    pcm16_duration_ms,
    plan_a_frame,
    plan_a_packet_count,
)
from trio_scheduler.simulate.frames import opus_chunk_payload, silent_chunk_payload


def packets(sizes: list[int]) -> bytes:
    return plan_a_frame([bytes([0x40 + i % 7]) * size for i, size in enumerate(sizes)])


# ---------------------------------------------------------------------------------------
# Plan A: exact packet counting

EXACT_CASES = [
    pytest.param([60], 1, 20, id="1x60"),
    pytest.param([1], 1, 20, id="1x1-byte"),
    pytest.param([65535], 1, 20, id="1x-max-u16"),
    pytest.param([60] * 13, 13, 260, id="13x60-web-chunk"),
    pytest.param([3, 200, 1, 80, 1275, 9, 60, 61, 300, 2, 255, 256, 40], 13, 260,
                 id="13-mixed-sizes"),
    pytest.param([120] * 50, 50, 1000, id="50x120"),
    pytest.param([(i * 37) % 400 + 1 for i in range(50)], 50, 1000, id="50-mixed-sizes"),
    pytest.param([256] * 3, 3, 60, id="length-with-high-byte"),
]


@pytest.mark.parametrize(("sizes", "count", "duration"), EXACT_CASES)
def test_plan_a_exact(sizes, count, duration):
    data = packets(sizes)
    assert len(data) == sum(sizes) + 2 * len(sizes)
    assert plan_a_packet_count(data) == count
    assert opus_duration_ms(data) == duration


def test_plan_a_frame_is_little_endian():
    assert plan_a_frame([b"\xaa" * 0x0102])[:2] == b"\x02\x01"
    assert plan_a_frame([b"x", b"yz"]) == b"\x01\x00x\x02\x00yz"


@pytest.mark.parametrize(
    ("sizes", "voiced_ms"),
    [
        pytest.param([8] * 13, 0, id="the-web-clients-silence"),
        pytest.param([14, 78, 33] + [8] * 10, 60, id="speech-then-silence"),
        pytest.param([10, 11], 20, id="threshold"),
    ],
)
def test_packets_above_the_silent_size_are_voiced(sizes, voiced_ms):
    assert opus_measure_ms(packets(sizes)) == (20 * len(sizes), voiced_ms)
    assert opus_measure_ms(packets(sizes), silent_max_bytes=100) == (20 * len(sizes), 0)


def test_the_silent_chunk_helper_is_the_web_clients():
    data = base64.b64decode(silent_chunk_payload())
    assert len(data) == 130 and opus_measure_ms(data) == (260, 0)


def test_unframed_audio_counts_as_voiced():
    assert opus_measure_ms(b"\x00" * 600) == (200, 200)
    assert utterance_measure_ms(b"\x00" * 3200, "pcm16", 16000) == (100, 100)
    assert utterance_measure_ms(b"abc", "mp3", 16000) is None


def test_web_client_payload_is_exact():
    data = base64.b64decode(opus_chunk_payload())
    assert plan_a_packet_count(data) == 13
    assert opus_duration_ms(data) == 260
    assert opus_duration_ms(base64.b64decode(opus_chunk_payload(packets=50))) == 1000


# ---------------------------------------------------------------------------------------
# Framing that does not parse: 20 ms per 60 bytes


def estimate(data: bytes) -> int:
    return len(data) * 20 // 60


FALLBACK_CASES = [
    # (bytes, expected estimate in ms written out)
    pytest.param(packets([60])[:-1], 20, id="truncated-packet-61-bytes"),
    pytest.param(packets([60] * 13)[:-30], 258, id="truncated-chunk-776-bytes"),
    pytest.param(b"\x3c", 0, id="half-a-length-header"),
    pytest.param(packets([60]) + b"\x3c", 21, id="trailing-half-header-63-bytes"),
    pytest.param(packets([60] * 13) + b"\x05\x00abc", 270, id="trailing-short-packet-811-bytes"),
    pytest.param(b"\x00\x00" + b"z" * 118, 40, id="zero-length-packet-120-bytes"),
    pytest.param(packets([60, 60]) + b"\x00\x00", 42, id="trailing-zero-length-126-bytes"),
    pytest.param(b"\xff\xff" + b"q" * 178, 60, id="length-beyond-data-180-bytes"),
    pytest.param(b"\x00" * 130, 43, id="web-client-silence-130-zero-bytes"),
]


@pytest.mark.parametrize(("data", "expected"), FALLBACK_CASES)
def test_unparseable_framing_falls_back_to_estimate(data, expected):
    assert plan_a_packet_count(data) is None
    assert opus_duration_ms(data) == expected == estimate(data)


def test_empty_payload_is_zero_ms():
    assert plan_a_packet_count(b"") == 0
    assert opus_duration_ms(b"") == 0


# ---------------------------------------------------------------------------------------
# PCM16


@pytest.mark.parametrize(
    ("size", "sample_rate", "expected"),
    [
        (0, 16000, 0),
        (31, 16000, 0),
        (32, 16000, 1),
        (320, 16000, 10),
        (32000, 16000, 1000),
        (32031, 16000, 1000),
        (320000, 16000, 10000),
        (16000, 8000, 1000),
        (96000, 48000, 1000),
        (100, 0, 0),
    ],
)
def test_pcm16_duration(size, sample_rate, expected):
    assert pcm16_duration_ms(b"\x00" * size, sample_rate) == expected


def test_pcm16_default_rate_is_16k():
    assert pcm16_duration_ms(b"\x00" * 3200) == 100


# ---------------------------------------------------------------------------------------
# Base64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, b"", id="none"),
        pytest.param("", b"", id="empty"),
        pytest.param("AAEC", b"\x00\x01\x02", id="valid"),
        pytest.param("aGVsbG8=", b"hello", id="valid-padded"),
        pytest.param("OgBIgRdwNCXM", base64.b64decode("OgBIgRdwNCXM"), id="client-prefix"),
    ],
)
def test_decode_base64_valid(text, expected):
    assert decode_base64(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("OgBIgRdwNCXMowRf...", id="client-example-with-dots"),
        pytest.param("abc", id="bad-padding"),
        pytest.param("a", id="single-char"),
        pytest.param("!!!!", id="not-alphabet"),
        pytest.param("aGVs bG8=", id="inner-space"),
        pytest.param("aGVsbG8=\n", id="trailing-newline"),
        pytest.param("aGVsbG8=aGVs", id="data-after-padding"),
        pytest.param("héllo===", id="non-ascii"),
        pytest.param("a-_b", id="urlsafe-alphabet"),
    ],
)
def test_decode_base64_invalid_is_none(text):
    assert decode_base64(text) is None


def test_decode_base64_round_trip_of_a_chunk():
    payload = opus_chunk_payload(packets=13, packet_bytes=77, fill=0x11)
    data = decode_base64(payload)
    assert data is not None
    assert plan_a_packet_count(data) == 13
    assert len(data) == 13 * 79
