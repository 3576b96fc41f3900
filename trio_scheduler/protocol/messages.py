"""Every message of PROTOCOL.md §2–3, in both directions, as attrs classes.

Inbound classes list exactly the fields the server reads; peers send more and the codec
ignores the rest. Optional fields default to ``None`` because the contract says a missing
optional field and ``null`` mean the same. Each class names its wire ``type`` in ``TYPE``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

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
    client_version: str
    platform: str
    src_lang: str
    tgt_lang: str
    dialect: str | None = None
    features: JsonObject | None = None
    pairing_code: str | None = None
    tenant_id: str | None = None
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    enable_streaming_asr: bool | None = None
    partial_update_interval_ms: int | None = None
    trace_id: str | None = None


@attrs.frozen
class AudioChunk:
    TYPE: ClassVar[str] = "audio_chunk"
    session_id: str
    seq: int
    is_final: bool
    payload: str | None = None
    client_timestamp_ms: float | None = None


@attrs.frozen
class Utterance:
    TYPE: ClassVar[str] = "utterance"
    session_id: str
    utterance_index: int
    manual_cut: bool
    src_lang: str
    tgt_lang: str
    audio: str
    audio_format: str
    sample_rate: int
    dialect: str | None = None
    features: JsonObject | None = None
    mode: str | None = None
    lang_a: str | None = None
    lang_b: str | None = None
    auto_langs: list[str] | None = None
    trace_id: str | None = None
    pipeline: Pipeline | None = None


@attrs.frozen
class ClientHeartbeat:
    TYPE: ClassVar[str] = "client_heartbeat"
    session_id: str
    timestamp: float


@attrs.frozen
class SessionClose:
    TYPE: ClassVar[str] = "session_close"
    session_id: str
    reason: str


@attrs.frozen
class TtsStarted:
    TYPE: ClassVar[str] = "tts_started"
    session_id: str
    trace_id: str
    group_id: str
    ts_start_ms: float


@attrs.frozen
class TtsPlayEnded:
    TYPE: ClassVar[str] = "tts_play_ended"
    session_id: str
    trace_id: str
    group_id: str
    ts_end_ms: float


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
    name: str
    memory_gb: float | None = None


@attrs.frozen
class Hardware:
    cpu_cores: int
    memory_gb: float
    gpus: list[Gpu] | None = None


@attrs.frozen
class ServiceCapability:
    type: str
    ready: bool
    reason: str | None = None
    ready_impl_ids: list[str] | None = None


@attrs.frozen
class LanguageCapabilities:
    asr_languages: list[str] | None = None
    tts_languages: list[str] | None = None
    semantic_languages: list[str] | None = None
    semantic_core_ready: bool | None = None


@attrs.frozen
class NodeRegister:
    TYPE: ClassVar[str] = "node_register"
    version: str
    platform: str
    hardware: Hardware
    installed_models: list[JsonObject]
    capability_by_type: list[ServiceCapability]
    features_supported: JsonObject
    accept_public_jobs: bool
    node_id: str | None = None
    capability_schema_version: str | None = None
    installed_services: list[JsonObject] | None = None
    language_capabilities: LanguageCapabilities | None = None
    max_concurrent_jobs: int | None = None


@attrs.frozen
class ResourceUsage:
    cpu_percent: float
    mem_percent: float
    running_jobs: int
    gpu_percent: float | None = None
    gpu_mem_percent: float | None = None
    gpu_queue_length: int | None = None


@attrs.frozen
class NodeHeartbeat:
    TYPE: ClassVar[str] = "node_heartbeat"
    node_id: str
    timestamp: float
    resource_usage: ResourceUsage
    installed_models: list[JsonObject] | None = None
    installed_services: list[JsonObject] | None = None
    capability_by_type: list[ServiceCapability] | None = None
    language_capabilities: LanguageCapabilities | None = None


@attrs.frozen
class JobAck:
    TYPE: ClassVar[str] = "job_ack"
    job_id: str
    attempt_id: int
    node_id: str
    session_id: str
    trace_id: str


@attrs.frozen
class JobStarted:
    TYPE: ClassVar[str] = "job_started"
    job_id: str
    attempt_id: int
    node_id: str
    session_id: str
    trace_id: str


@attrs.frozen
class AsrPartialFromNode:
    TYPE: ClassVar[str] = "asr_partial"
    job_id: str
    node_id: str
    session_id: str
    utterance_index: int
    text: str
    is_final: bool
    trace_id: str


@attrs.frozen
class JobErrorInfo:
    code: str
    message: str
    details: JsonObject | None = None


@attrs.frozen
class JobResult:
    TYPE: ClassVar[str] = "job_result"
    job_id: str
    attempt_id: int
    node_id: str
    session_id: str
    utterance_index: int
    success: bool
    trace_id: str
    text_asr: str | None = None
    text_translated: str | None = None
    tts_audio: str | None = None
    tts_format: str | None = None
    extra: JsonObject | None = None
    processing_time_ms: float | None = None
    error: JobErrorInfo | None = None
    node_completed_at_ms: float | None = None
    asr_quality_level: str | None = None
    reason_codes: list[str] | None = None
    quality_score: float | None = None
    rerun_count: int | None = None
    segments_meta: JsonObject | None = None


@attrs.frozen
class NodeError:
    TYPE: ClassVar[str] = "node_error"
    node_id: str
    code: str
    message: str
    details: JsonObject | None = None


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
