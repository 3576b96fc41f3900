"""Every message of PROTOCOL.md §2–3, in both directions, as attrs classes.

Inbound classes list exactly the fields the server reads; peers send more and the codec
ignores the rest. Every inbound field has a bounded type (``Id``, ``LanguageTag``,
``Index``… from protocol/bounds.py) that the codec enforces. Optional fields default to
``None`` because the contract says a missing optional field and ``null`` mean the same.
Each class names its wire ``type`` in ``TYPE``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from trio_scheduler.protocol.bounds import (
    Amount,
    Audio,
    Count,
    DurationMs,
    Id,
    Index,
    IntervalMs,
    LanguageTag,
    ListOf,
    Name,
    Object,
    SampleRate,
    Score,
    Text,
    TimestampMs,
)

JsonObject = dict[str, Any]


# ---------------------------------------------------------------------------------------
# Session socket, client -> server (§2.1)


@attrs.frozen
class Pipeline:
    use_asr: bool = True
    use_nmt: bool = True
    use_tts: bool = True
    use_semantic: bool = False
    use_tone: bool = False


@attrs.frozen
class SessionInit:
    TYPE: ClassVar[str] = "session_init"
    client_version: Name
    platform: Name
    src_lang: LanguageTag
    tgt_lang: LanguageTag
    dialect: Name | None = None
    features: Object | None = None
    pairing_code: Id | None = None
    tenant_id: Id | None = None
    mode: Name | None = None
    lang_a: LanguageTag | None = None
    lang_b: LanguageTag | None = None
    auto_langs: ListOf[LanguageTag] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: IntervalMs | None = None
    trace_id: Id | None = None


@attrs.frozen
class AudioChunk:
    TYPE: ClassVar[str] = "audio_chunk"
    session_id: Id
    seq: Index
    is_final: bool
    payload: Audio | None = None
    client_timestamp_ms: TimestampMs | None = None


@attrs.frozen
class Utterance:
    TYPE: ClassVar[str] = "utterance"
    session_id: Id
    utterance_index: Index
    manual_cut: bool
    src_lang: LanguageTag
    tgt_lang: LanguageTag
    audio: Audio
    audio_format: Name
    sample_rate: SampleRate
    dialect: Name | None = None
    features: Object | None = None
    mode: Name | None = None
    lang_a: LanguageTag | None = None
    lang_b: LanguageTag | None = None
    auto_langs: ListOf[LanguageTag] | None = None
    trace_id: Id | None = None
    pipeline: Pipeline | None = None


@attrs.frozen
class ClientHeartbeat:
    TYPE: ClassVar[str] = "client_heartbeat"
    session_id: Id
    timestamp: TimestampMs


@attrs.frozen
class SessionClose:
    TYPE: ClassVar[str] = "session_close"
    session_id: Id
    reason: Text


@attrs.frozen
class TtsStarted:
    TYPE: ClassVar[str] = "tts_started"
    session_id: Id
    trace_id: Id
    group_id: Id
    ts_start_ms: TimestampMs


@attrs.frozen
class TtsPlayEnded:
    TYPE: ClassVar[str] = "tts_play_ended"
    session_id: Id
    trace_id: Id
    group_id: Id
    ts_end_ms: TimestampMs


ROOM_MESSAGE_TYPES = frozenset(
    {
        "room_create",
        "room_join",
        "room_leave",
        "room_raw_voice_preference",
        "webrtc_offer",
        "webrtc_answer",
        "webrtc_ice",
    }
)

SESSION_INBOUND: dict[str, type] = {
    cls.TYPE: cls
    for cls in (
        SessionInit,
        AudioChunk,
        Utterance,
        ClientHeartbeat,
        SessionClose,
        TtsStarted,
        TtsPlayEnded,
    )
}


# ---------------------------------------------------------------------------------------
# Session socket, server -> client (§2.2)


@attrs.frozen
class SessionInitAck:
    TYPE: ClassVar[str] = "session_init_ack"
    session_id: str
    message: str
    trace_id: str
    assigned_node_id: str | None
    protocol_version: str = "1.0"
    use_binary_frame: bool = False
    negotiated_codec: str = "opus"
    negotiated_audio_format: str = "opus"
    negotiated_sample_rate: int = 16000
    negotiated_channel_count: int = 1


@attrs.frozen
class ServiceTimings:
    asr_ms: float | None = None
    nmt_ms: float | None = None
    tts_ms: float | None = None
    total_ms: float | None = None


@attrs.frozen
class NetworkTimings:
    web_to_scheduler_ms: int | None = None
    scheduler_to_node_ms: int | None = None
    node_to_scheduler_ms: int | None = None
    scheduler_to_web_ms: int | None = None


@attrs.frozen
class TranslationResult:
    TYPE: ClassVar[str] = "translation_result"
    session_id: str
    utterance_index: int
    job_id: str
    text_asr: str
    text_translated: str
    tts_audio: str
    tts_format: str
    trace_id: str
    extra: JsonObject | None = None
    group_id: str | None = None
    part_index: int | None = None
    service_timings: ServiceTimings | None = None
    network_timings: NetworkTimings | None = None
    scheduler_sent_at_ms: int | None = None
    asr_quality_level: str | None = None
    reason_codes: list[str] | None = None
    quality_score: float | None = None
    rerun_count: int | None = None
    segments_meta: JsonObject | None = None


@attrs.frozen
class MissingResult:
    TYPE: ClassVar[str] = "missing_result"
    session_id: str
    utterance_index: int
    reason: str  # silence_detected | gap_timeout | job_failed | job_timeout
    created_at_ms: int
    trace_id: str


@attrs.frozen
class AsrPartialToClient:
    TYPE: ClassVar[str] = "asr_partial"
    session_id: str
    utterance_index: int
    job_id: str
    text: str
    is_final: bool
    trace_id: str


@attrs.frozen
class UiEvent:
    TYPE: ClassVar[str] = "ui_event"
    trace_id: str
    session_id: str
    job_id: str | None
    utterance_index: int | None
    event: str
    status: str = "ok"
    elapsed_ms: int | None = None
    error_code: str | None = None
    hint: str | None = None


@attrs.frozen
class ServerHeartbeat:
    TYPE: ClassVar[str] = "server_heartbeat"
    session_id: str
    timestamp: int


@attrs.frozen
class SessionCloseAck:
    TYPE: ClassVar[str] = "session_close_ack"
    session_id: str


@attrs.frozen
class Backpressure:
    TYPE: ClassVar[str] = "backpressure"
    action: str  # BUSY | PAUSE | SLOW_DOWN
    resume_after_ms: int | None = None


@attrs.frozen
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    details: JsonObject | None = None


# ---------------------------------------------------------------------------------------
# Node socket, node -> server (§3.1)


@attrs.frozen
class Gpu:
    name: Name
    memory_gb: Amount | None = None


@attrs.frozen
class Hardware:
    cpu_cores: Count
    memory_gb: Amount
    gpus: ListOf[Gpu] | None = None


@attrs.frozen
class ServiceCapability:
    type: Name
    ready: bool
    reason: Text | None = None
    ready_impl_ids: ListOf[Name] | None = None


@attrs.frozen
class LanguageCapabilities:
    asr_languages: ListOf[LanguageTag] | None = None
    tts_languages: ListOf[LanguageTag] | None = None
    semantic_languages: ListOf[LanguageTag] | None = None
    semantic_core_ready: bool | None = None


@attrs.frozen
class NodeRegister:
    TYPE: ClassVar[str] = "node_register"
    version: Name
    platform: Name
    hardware: Hardware
    installed_models: ListOf[Object]
    capability_by_type: ListOf[ServiceCapability]
    features_supported: Object
    accept_public_jobs: bool
    node_id: Id | None = None
    capability_schema_version: Name | None = None
    installed_services: ListOf[Object] | None = None
    language_capabilities: LanguageCapabilities | None = None
    max_concurrent_jobs: Count | None = None


@attrs.frozen
class ResourceUsage:
    cpu_percent: Amount
    mem_percent: Amount
    running_jobs: Count
    gpu_percent: Amount | None = None
    gpu_mem_percent: Amount | None = None
    gpu_queue_length: Count | None = None


@attrs.frozen
class NodeHeartbeat:
    TYPE: ClassVar[str] = "node_heartbeat"
    node_id: Id
    timestamp: TimestampMs
    resource_usage: ResourceUsage
    installed_models: ListOf[Object] | None = None
    installed_services: ListOf[Object] | None = None
    capability_by_type: ListOf[ServiceCapability] | None = None
    language_capabilities: LanguageCapabilities | None = None


@attrs.frozen
class JobAck:
    TYPE: ClassVar[str] = "job_ack"
    job_id: Id
    attempt_id: Index
    node_id: Id
    session_id: Id
    trace_id: Id


@attrs.frozen
class JobStarted:
    TYPE: ClassVar[str] = "job_started"
    job_id: Id
    attempt_id: Index
    node_id: Id
    session_id: Id
    trace_id: Id


@attrs.frozen
class AsrPartialFromNode:
    TYPE: ClassVar[str] = "asr_partial"
    job_id: Id
    node_id: Id
    session_id: Id
    utterance_index: Index
    text: Text
    is_final: bool
    trace_id: Id


@attrs.frozen
class JobErrorInfo:
    code: Name
    message: Text
    details: Object | None = None


@attrs.frozen
class JobResult:
    TYPE: ClassVar[str] = "job_result"
    job_id: Id
    attempt_id: Index
    node_id: Id
    session_id: Id
    utterance_index: Index
    success: bool
    trace_id: Id
    text_asr: Text | None = None
    text_translated: Text | None = None
    tts_audio: Audio | None = None
    tts_format: Name | None = None
    extra: Object | None = None
    processing_time_ms: DurationMs | None = None
    error: JobErrorInfo | None = None
    node_completed_at_ms: TimestampMs | None = None
    asr_quality_level: Name | None = None
    reason_codes: ListOf[Name] | None = None
    quality_score: Score | None = None
    rerun_count: Count | None = None
    segments_meta: Object | None = None


@attrs.frozen
class NodeError:
    TYPE: ClassVar[str] = "node_error"
    node_id: Id
    code: Name
    message: Text
    details: Object | None = None


NODE_INBOUND: dict[str, type] = {
    cls.TYPE: cls
    for cls in (
        NodeRegister,
        NodeHeartbeat,
        JobAck,
        JobStarted,
        AsrPartialFromNode,
        JobResult,
        NodeError,
    )
}


# ---------------------------------------------------------------------------------------
# Node socket, server -> node (§3.2)


@attrs.frozen
class NodeRegisterAck:
    TYPE: ClassVar[str] = "node_register_ack"
    node_id: str
    message: str
    status: str = "registering"
    pairing_code: str | None = None


@attrs.frozen
class JobAssign:
    """``job_assign``; the three trigger flags are omitted from the wire when false."""

    TYPE: ClassVar[str] = "job_assign"
    OMIT_WHEN_FALSE: ClassVar[tuple[str, ...]] = (
        "is_manual_cut",
        "is_timeout_triggered",
        "is_max_duration_triggered",
    )
    job_id: str
    attempt_id: int
    session_id: str
    utterance_index: int
    src_lang: str
    tgt_lang: str
    dialect: str | None
    features: JsonObject
    pipeline: Pipeline
    audio: str
    audio_format: str
    sample_rate: int
    trace_id: str
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: int | None = None
    padding_ms: int | None = None
    turn_id: str | None = None
    is_manual_cut: bool = False
    is_timeout_triggered: bool = False
    is_max_duration_triggered: bool = False


@attrs.frozen
class JobCancel:
    TYPE: ClassVar[str] = "job_cancel"
    job_id: str
    trace_id: str | None = None
    reason: str | None = None


@attrs.frozen
class NodeControl:
    TYPE: ClassVar[str] = "node_control"
    command: str  # drain | shutdown | reload_config
    reason: str | None = None
