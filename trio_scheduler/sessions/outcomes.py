"""What the client is told when a job ends: pure functions from a node's result to frames.

Each utterance ends in exactly one :class:`Outcome`, which waits in the ordered queue and
becomes frames only when its turn comes (so ``scheduler_sent_at_ms`` is the real send time).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from trio_scheduler.protocol.errors import ErrorCode
from trio_scheduler.sessions.groups import GroupPart
from trio_scheduler.protocol.messages import (
    JobResult,
    MissingResult,
    NetworkTimings,
    ServiceTimings,
    TranslationResult,
    UiEvent,
)

SILENCE_REASONS = frozenset({"ASR_EMPTY", "NO_TEXT_ASSIGNED"})


@attrs.frozen
class Outcome:
    """The end of one utterance, as it will be reported to the client."""

    utterance_index: int
    job_id: str | None
    kind: str  # "result" | "silence" | "failed" | "timeout" | "gap"
    result: JobResult | None = None
    result_received_at_ms: int | None = None
    error_code: ErrorCode | None = None
    hint: str | None = None
    dispatched_at_ms: int | None = None
    audio_received_at_ms: int | None = None
    first_client_ts_ms: float | None = None


def is_silence(result: JobResult) -> bool:
    """An empty answer, or the agent's explicit "nothing was said" (§2.4)."""
    reason = (result.extra or {}).get("reason")
    if isinstance(reason, str) and reason in SILENCE_REASONS:
        return True
    return not result.text_asr and not result.text_translated and not result.tts_audio


def service_timings(result: JobResult) -> ServiceTimings | None:
    reported = (result.extra or {}).get("service_timings")
    if isinstance(reported, dict):
        numbers = {
            k: v
            for k, v in reported.items()
            if k in ("asr_ms", "nmt_ms", "tts_ms", "total_ms") and _sane(v)
        }
        return ServiceTimings(**numbers)
    if _sane(result.processing_time_ms):
        return ServiceTimings(total_ms=result.processing_time_ms)
    return None


MAX_SANE_MS = 2**53  # beyond, a peer's number is nonsense (and would not survive JSON)


def _sane(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_SANE_MS
    )


def _non_negative(value: float | None) -> int | None:
    if value is None or not _sane(value):
        return None  # peers' clocks and numbers are not trusted to be sane
    return max(0, round(value))


def network_timings(outcome: Outcome, sent_at_ms: int) -> NetworkTimings:
    """Where the time went outside the node, from our own timestamps.

    With the node's ``node_completed_at_ms`` the two legs are measured separately (clock
    skew between hosts is clamped at 0); without it, the round trip minus the node's
    processing time is split evenly.
    """
    result = outcome.result
    web = None
    if _sane(outcome.first_client_ts_ms) and outcome.audio_received_at_ms is not None:
        web = outcome.audio_received_at_ms - outcome.first_client_ts_ms
    to_node = from_node = None
    if result is not None and outcome.dispatched_at_ms is not None:
        received = outcome.result_received_at_ms or sent_at_ms
        processing = result.processing_time_ms if _sane(result.processing_time_ms) else None
        completed = result.node_completed_at_ms if _sane(result.node_completed_at_ms) else None
        if completed is not None and processing is not None:
            to_node = completed - processing - outcome.dispatched_at_ms
            from_node = received - completed
        elif processing is not None:
            to_node = from_node = (received - outcome.dispatched_at_ms - processing) / 2
    scheduler_to_web = None
    if outcome.result_received_at_ms is not None:
        scheduler_to_web = sent_at_ms - outcome.result_received_at_ms
    return NetworkTimings(
        web_to_scheduler_ms=_non_negative(web),
        scheduler_to_node_ms=_non_negative(to_node),
        node_to_scheduler_ms=_non_negative(from_node),
        scheduler_to_web_ms=_non_negative(scheduler_to_web),
    )


MISSING_REASON = {
    "silence": "silence_detected",
    "failed": "job_failed",
    "timeout": "job_timeout",
    "gap": "gap_timeout",
}


def outcome_frames(
    outcome: Outcome,
    *,
    session_id: str,
    trace_id: str,
    sent_at_ms: int,
    group: GroupPart | None = None,
) -> list[Any]:
    """The frames that report ``outcome``, in the order the client must see them."""
    index, job_id = outcome.utterance_index, outcome.job_id
    if outcome.kind == "result":
        result = outcome.result
        assert result is not None
        frames: list[Any] = []
        if result.text_asr:
            frames.append(UiEvent(trace_id, session_id, job_id, index, "ASR_FINAL"))
        if result.text_translated:
            frames.append(UiEvent(trace_id, session_id, job_id, index, "NMT_DONE"))
        frames.append(
            TranslationResult(
                session_id=session_id,
                utterance_index=index,
                job_id=result.job_id,
                text_asr=result.text_asr or "",
                text_translated=result.text_translated or "",
                tts_audio=result.tts_audio or "",
                tts_format=result.tts_format or "pcm16",
                trace_id=trace_id,
                extra=result.extra,
                group_id=group.group_id if group else None,
                part_index=group.part_index if group else None,
                service_timings=service_timings(result),
                network_timings=network_timings(outcome, sent_at_ms),
                scheduler_sent_at_ms=sent_at_ms,
                asr_quality_level=result.asr_quality_level,
                reason_codes=result.reason_codes,
                quality_score=result.quality_score,
                rerun_count=result.rerun_count,
                segments_meta=result.segments_meta,
            )
        )
        return frames
    frames = []
    if outcome.error_code is not None:
        frames.append(
            UiEvent(
                trace_id,
                session_id,
                job_id,
                index,
                "ERROR",
                status="error",
                error_code=str(outcome.error_code),
                hint=outcome.hint,
            )
        )
    frames.append(
        MissingResult(session_id, index, MISSING_REASON[outcome.kind], sent_at_ms, trace_id)
    )
    return frames


def gap_frame(index: int, *, session_id: str, trace_id: str, sent_at_ms: int) -> MissingResult:
    return MissingResult(session_id, index, "gap_timeout", sent_at_ms, trace_id)
