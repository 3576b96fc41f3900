"""Audio durations, computed exactly where the framing allows it.

The web client sends Opus in "Plan A" framing: repeated ``[u16 little-endian length]
[opus packet]``, one 20 ms packet each. Counting packets gives the exact duration; only a
payload that does not parse as Plan A falls back to the byte estimate (20 ms per 60 bytes).
"""

from __future__ import annotations

import base64
import binascii

OPUS_PACKET_MS = 20
OPUS_ESTIMATE_BYTES_PER_PACKET = 60
PCM16_BYTES_PER_MS = 32  # 16 kHz mono 16-bit


def plan_a_packet_count(data: bytes) -> int | None:
    """Number of packets if ``data`` is exactly a sequence of Plan A frames, else None."""
    count = 0
    offset = 0
    size = len(data)
    while offset < size:
        if offset + 2 > size:
            return None
        length = data[offset] | (data[offset + 1] << 8)
        if length == 0:
            return None
        offset += 2 + length
        count += 1
    return count if offset == size else None


def opus_duration_ms(data: bytes) -> int:
    """Duration of one Plan A payload: exact when it parses, estimated otherwise."""
    if not data:
        return 0
    packets = plan_a_packet_count(data)
    if packets is None:
        return len(data) * OPUS_PACKET_MS // OPUS_ESTIMATE_BYTES_PER_PACKET
    return packets * OPUS_PACKET_MS


def pcm16_duration_ms(data: bytes, sample_rate: int = 16000) -> int:
    return len(data) * 1000 // (2 * sample_rate) if sample_rate > 0 else 0


def utterance_duration_ms(data: bytes, audio_format: str, sample_rate: int) -> int | None:
    """Duration of a whole utterance in a format we can measure; None when we cannot."""
    if not data:
        return 0
    match audio_format.lower():
        case "pcm16":
            return pcm16_duration_ms(data, sample_rate)
        case "opus":
            return opus_duration_ms(data)
    return None


def plan_a_frame(packets: list[bytes]) -> bytes:
    """Frame Opus packets the way the web client does (used by scripts and tests)."""
    return b"".join(len(p).to_bytes(2, "little") + p for p in packets)


def decode_base64(text: str | None) -> bytes | None:
    """Payload bytes, ``b""`` when absent, None when the text is not valid base64."""
    if not text:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
