"""Frames as the real programs send them (PROTOCOL §5), as builders with overrides."""

from __future__ import annotations

import base64
import copy
from typing import Any

from trio_scheduler.sessions.audio import plan_a_frame

AGENT_REGISTER: dict[str, Any] = {
    "type": "node_register",
    "node_id": None,
    "version": "2.0.0",
    "capability_schema_version": "2.0",
    "platform": "linux",
    "hardware": {
        "cpu_cores": 2,
        "memory_gb": 24,
        "gpus": [{"name": "NVIDIA GeForce RTX 4090", "memory_gb": 24}],
    },
    "installed_models": [
        {
            "model_id": "m2m100-418M",
            "kind": "nmt",
            "src_lang": None,
            "tgt_lang": None,
            "dialect": None,
            "version": "1.0.0",
            "enabled": True,
        }
    ],
    "installed_services": [
        {"service_id": "faster-whisper-vad", "type": "asr", "device": "gpu", "status": "running",
         "version": "2.0.0"},
        {"service_id": "nmt-m2m100", "type": "nmt", "device": "gpu", "status": "running",
         "version": "1.0.0"},
        {"service_id": "piper-tts", "type": "tts", "device": "gpu", "status": "running",
         "version": "1.0.0"},
    ],
    "capability_by_type": [
        {"type": "asr", "ready": True, "devices": ["gpu"]},
        {"type": "nmt", "ready": True, "devices": ["gpu"]},
        {"type": "tts", "ready": True, "devices": ["gpu"]},
    ],
    "features_supported": {"emotion_detection": False},
    "accept_public_jobs": True,
    "language_capabilities": {
        "asr_languages": ["zh", "en", "ja"],
        "tts_languages": ["zh", "en", "ja"],
        "semantic_languages": ["zh", "en", "ja"],
        "semantic_core_ready": True,
    },
}

AGENT_HEARTBEAT: dict[str, Any] = {
    "type": "node_heartbeat",
    "node_id": None,
    "timestamp": 1795360124319,
    "resource_usage": {
        "cpu_percent": 70.7,
        "gpu_percent": 37,
        "gpu_mem_percent": 37.13,
        "mem_percent": 3.98,
        "running_jobs": 0,
    },
    "installed_services": [],
    "capability_by_type": [{"type": "asr", "ready": True, "devices": ["gpu"]}],
    "language_capabilities": {
        "asr_languages": ["zh", "en"],
        "tts_languages": ["zh", "en"],
        "semantic_languages": ["zh", "en"],
    },
}

WEB_SESSION_INIT: dict[str, Any] = {
    "type": "session_init",
    "client_version": "web-client-v1.0",
    "platform": "web",
    "src_lang": "auto",
    "tgt_lang": "en",
    "dialect": None,
    "features": {},
    "pairing_code": None,
    "mode": "two_way_auto",
    "lang_a": "zh",
    "lang_b": "en",
    "auto_langs": ["zh", "en"],
    "trace_id": "ff9c9991-acfa-435d-9f14-f1ab5aad9f81",
    "tenant_id": None,
}


def register_frame(languages: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    frame = copy.deepcopy(AGENT_REGISTER)
    if languages is not None:
        frame["language_capabilities"] = {
            "asr_languages": list(languages),
            "tts_languages": list(languages),
            "semantic_languages": list(languages),
            "semantic_core_ready": True,
        }
    frame.update(overrides)
    return frame


def heartbeat_frame(
    node_id: str, languages: list[str] | None = None, timestamp_ms: int = 0, **usage: Any
) -> dict[str, Any]:
    frame = copy.deepcopy(AGENT_HEARTBEAT)
    frame["node_id"] = node_id
    frame["timestamp"] = timestamp_ms or frame["timestamp"]
    frame["resource_usage"].update(usage)
    if languages is not None:
        frame["language_capabilities"] = {
            "asr_languages": list(languages),
            "tts_languages": list(languages),
            "semantic_languages": list(languages),
        }
    return frame


def session_init_frame(**overrides: Any) -> dict[str, Any]:
    frame = copy.deepcopy(WEB_SESSION_INIT)
    frame.update(overrides)
    return frame


def one_way_init(src: str, tgt: str, **overrides: Any) -> dict[str, Any]:
    return session_init_frame(
        src_lang=src, tgt_lang=tgt, mode="one_way", lang_a=None, lang_b=None, auto_langs=None,
        **overrides,
    )


def opus_chunk_payload(packets: int = 13, packet_bytes: int = 60, fill: int = 0x5A) -> str:
    """Base64 of a Plan A payload: ``packets`` × 20 ms (13 packets ≈ the client's 256 ms)."""
    data = plan_a_frame([bytes([fill]) * packet_bytes for _ in range(packets)])
    return base64.b64encode(data).decode("ascii")


def silent_chunk_payload(packets: int = 13) -> str:
    """Base64 of the web client's silent chunk: Opus packets of 8 bytes (20 ms each)."""
    return opus_chunk_payload(packets=packets, packet_bytes=8, fill=0xF8)


def audio_chunk_frame(
    session_id: str, seq: int, *, is_final: bool = False, payload: str | None = None,
    client_timestamp_ms: int | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "audio_chunk",
        "session_id": session_id,
        "seq": seq,
        "is_final": is_final,
        "payload": opus_chunk_payload() if payload is None else payload,
    }
    if client_timestamp_ms is not None:
        frame["client_timestamp_ms"] = client_timestamp_ms
    return frame


def result_frame(job: dict[str, Any], node_id: str, **overrides: Any) -> dict[str, Any]:
    """A successful ``job_result`` for a ``job_assign`` the node received."""
    index = job["utterance_index"]
    frame = {
        "type": "job_result",
        "job_id": job["job_id"],
        "attempt_id": job["attempt_id"],
        "node_id": node_id,
        "session_id": job["session_id"],
        "utterance_index": index,
        "success": True,
        "text_asr": f"utterance {index} heard",
        "text_translated": f"utterance {index} translated",
        "tts_audio": base64.b64encode(b"\x00\x01" * 8).decode(),
        "tts_format": "opus",
        "extra": {
            "language_probability": 0.97,
            "service_timings": {"asr_ms": 420, "nmt_ms": 85, "tts_ms": 230, "total_ms": 735},
        },
        "processing_time_ms": 801,
        "trace_id": job["trace_id"],
        "asr_quality_level": "good",
        "reason_codes": [],
        "quality_score": 0.92,
        "rerun_count": 0,
        "segments_meta": {"count": 1, "max_gap": 0, "avg_duration": 1.8},
    }
    frame.update(overrides)
    return frame
