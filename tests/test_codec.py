"""Unit tests of the wire codec (protocol/codec.py) on the real programs' frames."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from trio_scheduler.protocol.codec import (
    ProtocolError,
    UnknownMessageType,
    decode,
    encode,
    encode_error,
    to_dict,
)
from trio_scheduler.protocol.errors import ErrorCode
from trio_scheduler.protocol.messages import (
    NODE_INBOUND,
    SESSION_INBOUND,
    AsrPartialToClient,
    AudioChunk,
    Backpressure,
    ClientHeartbeat,
    Error,
    Gpu,
    JobAssign,
    JobCancel,
    JobResult,
    MissingResult,
    NetworkTimings,
    NodeControl,
    NodeHeartbeat,
    NodeRegister,
    NodeRegisterAck,
    Pipeline,
    ServerHeartbeat,
    ServiceTimings,
    SessionCloseAck,
    SessionInit,
    SessionInitAck,
    TranslationResult,
    TtsStarted,
    UiEvent,
)
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame

# ---------------------------------------------------------------------------------------
# PROTOCOL §5, copied verbatim

SESSION_EXAMPLES = [
    '{"type":"session_init","client_version":"web-client-v1.0","platform":"web","src_lang":"auto","tgt_lang":"en","dialect":null,"features":{},"pairing_code":null,"mode":"two_way_auto","lang_a":"zh","lang_b":"en","auto_langs":["zh","en"],"trace_id":"ff9c9991-acfa-435d-9f14-f1ab5aad9f81","tenant_id":null}',  # noqa: E501
    '{"type":"audio_chunk","session_id":"s-2858827E","seq":0,"is_final":false,"payload":"OgBIgRdwNCXMowRf..."}',  # noqa: E501
    '{"type":"audio_chunk","session_id":"s-2858827E","seq":32,"is_final":true,"payload":""}',
    '{"type":"client_heartbeat","session_id":"s-33A60BB8","timestamp":1795359988466}',
    '{"type":"tts_started","session_id":"s-DA2CD536","trace_id":"4c7fae5e-…","group_id":"…","ts_start_ms":1795360301442}',  # noqa: E501
]

NODE_EXAMPLES = [
    '{"type":"node_register","node_id":null,"version":"2.0.0","capability_schema_version":"2.0","platform":"linux","hardware":{"cpu_cores":2,"memory_gb":24,"gpus":[{"name":"NVIDIA GeForce RTX 4090","memory_gb":24}]},"installed_models":[{"model_id":"m2m100-418M","kind":"nmt","src_lang":null,"tgt_lang":null,"dialect":null,"version":"1.0.0","enabled":true}],"installed_services":[{"service_id":"faster-whisper-vad","type":"asr","device":"gpu","status":"running","version":"2.0.0"},{"service_id":"nmt-m2m100","type":"nmt","device":"gpu","status":"running","version":"1.0.0"},{"service_id":"piper-tts","type":"tts","device":"gpu","status":"running","version":"1.0.0"}],"capability_by_type":[{"type":"asr","ready":true,"devices":["gpu"]},{"type":"nmt","ready":true,"devices":["gpu"]},{"type":"tts","ready":true,"devices":["gpu"]}],"features_supported":{"emotion_detection":false},"accept_public_jobs":true,"language_capabilities":{"asr_languages":["zh","en","ja"],"tts_languages":["zh","en","ja"],"semantic_languages":["zh","en","ja"],"semantic_core_ready":true}}',  # noqa: E501
    '{"type":"node_heartbeat","node_id":"node-1DDFF3B5","timestamp":1795360124319,"resource_usage":{"cpu_percent":70.7,"gpu_percent":37,"gpu_mem_percent":37.13,"mem_percent":3.98,"running_jobs":0},"installed_services":[],"capability_by_type":[{"type":"asr","ready":true,"devices":["gpu"]}],"language_capabilities":{"asr_languages":["zh","en"],"tts_languages":["zh","en"],"semantic_languages":["zh","en"]}}',  # noqa: E501
    '{"type":"job_result","job_id":"job-1","attempt_id":1,"node_id":"node-1DDFF3B5","session_id":"s-5TUBSESS","utterance_index":0,"success":true,"text_asr":"你好","text_translated":"Hello","tts_audio":"<base64>","tts_format":"opus","extra":{"language_probability":0.97,"service_timings":{"asr_ms":420,"nmt_ms":85,"tts_ms":230,"total_ms":735}},"processing_time_ms":801,"trace_id":"trace-job-1","asr_quality_level":"good","reason_codes":[],"quality_score":0.92,"rerun_count":0,"segments_meta":{"count":1,"max_gap":0,"avg_duration":1.8}}',  # noqa: E501
    '{"type":"job_result","job_id":"job-5","attempt_id":1,"node_id":"node-1DDFF3B5","session_id":"s-5TUBSESS","utterance_index":4,"success":true,"text_asr":"","text_translated":"","tts_audio":"","tts_format":"opus","extra":{"reason":"ASR_EMPTY"},"processing_time_ms":803,"trace_id":"trace-job-5"}',  # noqa: E501
    '{"type":"job_result","job_id":"job-2","attempt_id":1,"node_id":"node-1DDFF3B5","session_id":"s-5TUBSESS","utterance_index":1,"success":false,"processing_time_ms":300,"error":{"code":"PROCESSING_ERROR","message":"job cancelled"},"trace_id":"trace-job-2"}',  # noqa: E501
]


@pytest.mark.parametrize(
    ("raw", "table"),
    [(raw, SESSION_INBOUND) for raw in SESSION_EXAMPLES]
    + [(raw, NODE_INBOUND) for raw in NODE_EXAMPLES],
    ids=[f"session-{i}" for i in range(len(SESSION_EXAMPLES))]
    + [f"node-{i}" for i in range(len(NODE_EXAMPLES))],
)
def test_every_example_frame_decodes(raw, table):
    message = decode(raw, table)
    assert type(message) is table[json.loads(raw)["type"]]
    # str and bytes input decode the same
    assert decode(raw.encode(), table) == message


def test_example_session_init_values():
    message = decode(SESSION_EXAMPLES[0], SESSION_INBOUND)
    assert message == SessionInit(
        client_version="web-client-v1.0",
        platform="web",
        src_lang="auto",
        tgt_lang="en",
        dialect=None,
        features={},
        pairing_code=None,
        tenant_id=None,
        mode="two_way_auto",
        lang_a="zh",
        lang_b="en",
        auto_langs=["zh", "en"],
        trace_id="ff9c9991-acfa-435d-9f14-f1ab5aad9f81",
    )


def test_example_audio_chunks_values():
    first = decode(SESSION_EXAMPLES[1], SESSION_INBOUND)
    last = decode(SESSION_EXAMPLES[2], SESSION_INBOUND)
    assert first == AudioChunk("s-2858827E", 0, False, "OgBIgRdwNCXMowRf...", None)
    assert last == AudioChunk("s-2858827E", 32, True, "", None)
    assert decode(SESSION_EXAMPLES[3], SESSION_INBOUND) == ClientHeartbeat(
        "s-33A60BB8", 1795359988466
    )
    assert decode(SESSION_EXAMPLES[4], SESSION_INBOUND) == TtsStarted(
        "s-DA2CD536", "4c7fae5e-…", "…", 1795360301442
    )


def test_example_node_register_values():
    message = decode(NODE_EXAMPLES[0], NODE_INBOUND)
    assert isinstance(message, NodeRegister)
    assert message.node_id is None
    assert message.capability_schema_version == "2.0"
    assert (message.hardware.cpu_cores, message.hardware.memory_gb) == (2, 24)
    assert message.hardware.gpus == [Gpu("NVIDIA GeForce RTX 4090", 24)]
    assert [(c.type, c.ready) for c in message.capability_by_type] == [
        ("asr", True), ("nmt", True), ("tts", True)
    ]
    assert message.installed_models[0]["model_id"] == "m2m100-418M"
    assert message.accept_public_jobs is True
    assert message.language_capabilities is not None
    assert message.language_capabilities.asr_languages == ["zh", "en", "ja"]
    assert message.language_capabilities.semantic_core_ready is True
    assert message.max_concurrent_jobs is None


def test_example_node_heartbeat_values():
    message = decode(NODE_EXAMPLES[1], NODE_INBOUND)
    assert isinstance(message, NodeHeartbeat)
    usage = message.resource_usage
    assert (usage.cpu_percent, usage.mem_percent, usage.running_jobs) == (70.7, 3.98, 0)
    assert (usage.gpu_percent, usage.gpu_mem_percent, usage.gpu_queue_length) == (37, 37.13, None)
    assert message.installed_models is None
    assert message.installed_services == []


def test_example_job_results_values():
    ok, empty, failed = (decode(raw, NODE_INBOUND) for raw in NODE_EXAMPLES[2:])
    assert isinstance(ok, JobResult)
    assert (ok.success, ok.text_asr, ok.text_translated) == (True, "你好", "Hello")
    assert ok.extra["service_timings"]["total_ms"] == 735
    assert (ok.reason_codes, ok.quality_score, ok.rerun_count) == ([], 0.92, 0)
    assert empty.extra == {"reason": "ASR_EMPTY"}
    assert (empty.utterance_index, empty.text_asr, empty.tts_audio) == (4, "", "")
    assert failed.success is False
    assert failed.error is not None
    assert (failed.error.code, failed.error.message, failed.error.details) == (
        "PROCESSING_ERROR", "job cancelled", None
    )
    assert failed.text_asr is None


# ---------------------------------------------------------------------------------------
# Leniency: extra fields, null == missing


def frame(base: dict[str, Any], **changes: Any) -> bytes:
    data = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return orjson.dumps(data)


AUDIO = {"type": "audio_chunk", "session_id": "s-1", "seq": 3, "is_final": False}
RESULT = json.loads(NODE_EXAMPLES[2])


def test_unknown_extra_fields_are_ignored():
    raw = frame(AUDIO, codec="opus", extra={"a": 1}, nested=[1, 2], payload="AAAA")
    assert decode(raw, SESSION_INBOUND) == AudioChunk("s-1", 3, False, "AAAA", None)


def test_unknown_nested_fields_are_ignored():
    data = register_frame()
    data["hardware"]["tpus"] = [{"name": "x"}]
    data["hardware"]["gpus"][0]["driver"] = "550.1"
    data["capability_by_type"][0]["ready_impl_ids"] = ["whisper"]
    data["capability_by_type"][0]["future"] = {"x": 1}
    data["language_capabilities"]["tone_languages"] = ["zh"]
    message = decode(orjson.dumps(data), NODE_INBOUND)
    assert message.hardware.gpus == [Gpu("NVIDIA GeForce RTX 4090", 24)]
    assert message.capability_by_type[0].ready_impl_ids == ["whisper"]


@pytest.mark.parametrize(
    ("table", "base", "field"),
    [
        (SESSION_INBOUND, AUDIO, "payload"),
        (SESSION_INBOUND, AUDIO, "client_timestamp_ms"),
        (SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]), "mode"),
        (SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]), "auto_langs"),
        (SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]), "features"),
        (NODE_INBOUND, RESULT, "text_asr"),
        (NODE_INBOUND, RESULT, "extra"),
        (NODE_INBOUND, RESULT, "error"),
        (NODE_INBOUND, RESULT, "reason_codes"),
        (NODE_INBOUND, json.loads(NODE_EXAMPLES[0]), "language_capabilities"),
        (NODE_INBOUND, json.loads(NODE_EXAMPLES[0]), "installed_services"),
        (NODE_INBOUND, json.loads(NODE_EXAMPLES[0]), "max_concurrent_jobs"),
        (NODE_INBOUND, json.loads(NODE_EXAMPLES[1]), "capability_by_type"),
    ],
)
def test_null_and_missing_optional_field_are_the_same(table, base, field):
    with_null = decode(frame(base, **{field: None}), table)
    missing = decode(frame(base, **{field: ...}), table)
    assert with_null == missing
    assert getattr(missing, field) is None


def test_null_nested_optional_fields():
    data = register_frame()
    data["hardware"]["gpus"][0]["memory_gb"] = None
    data["capability_by_type"][0]["reason"] = None
    data["language_capabilities"]["tts_languages"] = None
    message = decode(orjson.dumps(data), NODE_INBOUND)
    assert message.hardware.gpus[0].memory_gb is None
    assert message.language_capabilities.tts_languages is None


UTTERANCE = {
    "type": "utterance", "session_id": "s-1", "utterance_index": 0, "manual_cut": True,
    "src_lang": "zh", "tgt_lang": "en", "audio": "", "audio_format": "opus",
    "sample_rate": 16000,
}


def test_utterance_pipeline_optional_flags_may_be_missing():
    message = decode(
        frame(UTTERANCE, pipeline={"use_asr": True, "use_nmt": True, "use_tts": False}),
        SESSION_INBOUND,
    )
    assert message.pipeline == Pipeline(use_asr=True, use_nmt=True, use_tts=False)


@pytest.mark.parametrize("flag", ["use_semantic", "use_tone"])
def test_utterance_pipeline_null_optional_flag_is_missing(flag):
    pipeline = {"use_asr": True, "use_nmt": True, "use_tts": True, flag: None}
    message = decode(frame(UTTERANCE, pipeline=pipeline), SESSION_INBOUND)
    assert message.pipeline == Pipeline()


# ---------------------------------------------------------------------------------------
# Strict types


def decode_error(raw: bytes | str, table=SESSION_INBOUND) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(raw, table)
    error = info.value
    assert error.code is ErrorCode.INVALID_MESSAGE
    assert error.details == ({"field": error.field} if error.field else None)
    return error


@pytest.mark.parametrize(
    ("table", "base", "changes", "field"),
    [
        pytest.param(SESSION_INBOUND, AUDIO, {"is_final": "false"}, "is_final", id="bool-as-str"),
        pytest.param(SESSION_INBOUND, AUDIO, {"is_final": 0}, "is_final", id="bool-as-int"),
        pytest.param(SESSION_INBOUND, AUDIO, {"is_final": None}, "is_final",
                     id="required-bool-null"),
        pytest.param(SESSION_INBOUND, AUDIO, {"seq": True}, "seq", id="int-as-bool"),
        pytest.param(SESSION_INBOUND, AUDIO, {"seq": "3"}, "seq", id="int-as-str"),
        pytest.param(SESSION_INBOUND, AUDIO, {"seq": 3.5}, "seq", id="int-as-fraction"),
        pytest.param(SESSION_INBOUND, AUDIO, {"session_id": 12}, "session_id", id="str-as-int"),
        pytest.param(SESSION_INBOUND, AUDIO, {"payload": 12}, "payload", id="optional-str-as-int"),
        pytest.param(SESSION_INBOUND, AUDIO, {"client_timestamp_ms": "1"}, "client_timestamp_ms",
                     id="float-as-str"),
        pytest.param(SESSION_INBOUND, AUDIO, {"client_timestamp_ms": False},
                     "client_timestamp_ms", id="float-as-bool"),
        pytest.param(SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]), {"features": []},
                     "features", id="object-as-array"),
        pytest.param(NODE_INBOUND, RESULT, {"success": "true"}, "success", id="success-as-str"),
        pytest.param(NODE_INBOUND, RESULT, {"attempt_id": True}, "attempt_id",
                     id="attempt-as-bool"),
        pytest.param(NODE_INBOUND, RESULT, {"extra": "x"}, "extra", id="extra-as-str"),
        pytest.param(NODE_INBOUND, json.loads(NODE_EXAMPLES[0]),
                     {"accept_public_jobs": 1}, "accept_public_jobs", id="register-bool-as-int"),
        pytest.param(NODE_INBOUND, json.loads(NODE_EXAMPLES[0]),
                     {"installed_models": ["m2m100"]}, "installed_models[0]",
                     id="array-item-not-object"),
    ],
)
def test_strict_types(table, base, changes, field):
    error = decode_error(frame(base, **changes), table)
    assert error.field == field
    assert field in error.message


def test_integral_float_is_accepted_for_int():
    assert decode(frame(AUDIO, seq=3.0), SESSION_INBOUND).seq == 3


def test_int_is_accepted_for_float():
    assert decode(frame(AUDIO, client_timestamp_ms=17), SESSION_INBOUND).client_timestamp_ms == 17


@pytest.mark.parametrize(
    ("table", "base", "changes", "field"),
    [
        pytest.param(SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]), {"auto_langs": "zh"},
                     "auto_langs", id="auto-langs-string"),
        pytest.param(SESSION_INBOUND, json.loads(SESSION_EXAMPLES[0]),
                     {"auto_langs": {"zh": 1}}, "auto_langs", id="auto-langs-object"),
        pytest.param(NODE_INBOUND, RESULT, {"reason_codes": "AB"}, "reason_codes",
                     id="reason-codes-string"),
    ],
)
def test_list_field_rejects_non_array(table, base, changes, field):
    error = decode_error(frame(base, **changes), table)
    assert error.field == field


# ---------------------------------------------------------------------------------------
# Field paths of missing required fields


def register_without(*path: str | int) -> bytes:
    data = register_frame()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(register_without("version"), "version", id="top-level"),
        pytest.param(register_without("hardware"), "hardware", id="nested-object"),
        pytest.param(register_without("hardware", "cpu_cores"), "hardware.cpu_cores",
                     id="nested-field"),
        pytest.param(register_without("hardware", "memory_gb"), "hardware.memory_gb",
                     id="nested-field-2"),
        pytest.param(register_without("hardware", "gpus", 0, "name"), "hardware.gpus[0].name",
                     id="list-item-field"),
        pytest.param(register_without("capability_by_type", 1, "ready"),
                     "capability_by_type[1].ready", id="second-item"),
        pytest.param(register_without("accept_public_jobs"), "accept_public_jobs",
                     id="required-bool"),
    ],
)
def test_missing_required_field_gives_dotted_path(raw, field):
    error = decode_error(raw, NODE_INBOUND)
    assert error.field == field
    assert error.message == f"invalid node_register at '{field}': required field missing"
    assert error.details == {"field": field}


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        ("node_id", "node_id"),
        ("timestamp", "timestamp"),
        ("resource_usage", "resource_usage"),
    ],
)
def test_heartbeat_missing_required(missing, field):
    data = heartbeat_frame("node-1")
    del data[missing]
    assert decode_error(orjson.dumps(data), NODE_INBOUND).field == field


def test_heartbeat_missing_nested_resource_field():
    data = heartbeat_frame("node-1")
    del data["resource_usage"]["running_jobs"]
    assert decode_error(orjson.dumps(data), NODE_INBOUND).field == "resource_usage.running_jobs"


def test_job_result_error_missing_message():
    data = dict(RESULT, success=False, error={"code": "X"})
    error = decode_error(orjson.dumps(data), NODE_INBOUND)
    assert error.field == "error.message"


@pytest.mark.parametrize(
    ("table", "raw", "field"),
    [
        pytest.param(NODE_INBOUND, frame(register_frame(), hardware="x"), "hardware",
                     id="hardware-string"),
        pytest.param(NODE_INBOUND, frame(register_frame(), hardware=[]), "hardware",
                     id="hardware-array"),
    ],
)
def test_non_object_for_nested_object(table, raw, field):
    error = decode_error(raw, table)
    assert error.field == field
    assert "object" in error.message


def test_null_required_object_counts_as_missing():
    # null and a missing field mean the same (PROTOCOL §1), for required fields too.
    raw = frame(heartbeat_frame("n"), resource_usage=None)
    error = decode_error(raw, NODE_INBOUND)
    assert error.field == "resource_usage"
    assert "required field missing" in error.message


# ---------------------------------------------------------------------------------------
# Frame-level errors


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param("not json", None, "frame is not valid JSON", id="not-json"),
        pytest.param("", None, "frame is not valid JSON", id="empty"),
        pytest.param(b"\xff\xfe", None, "frame is not valid JSON", id="bad-utf8"),
        pytest.param('{"type":"audio_chunk"', None, "frame is not valid JSON", id="truncated"),
        pytest.param("[]", None, "frame must be a JSON object", id="array"),
        pytest.param('"audio_chunk"', None, "frame must be a JSON object", id="string"),
        pytest.param("null", None, "frame must be a JSON object", id="null"),
        pytest.param("42", None, "frame must be a JSON object", id="number"),
        pytest.param("{}", "type", "missing string field 'type'", id="no-type"),
        pytest.param('{"type":null}', "type", "missing string field 'type'", id="null-type"),
        pytest.param('{"type":5}', "type", "missing string field 'type'", id="int-type"),
    ],
)
def test_frame_errors(raw, field, message):
    error = decode_error(raw)
    assert not isinstance(error, UnknownMessageType)
    assert error.field == field
    assert error.message == message


@pytest.mark.parametrize(
    ("table", "kind"),
    [
        (SESSION_INBOUND, "job_result"),  # a node frame on the session socket
        (NODE_INBOUND, "session_init"),  # and the other way round
        (SESSION_INBOUND, "room_create"),
        (SESSION_INBOUND, "Session_Init"),
        (NODE_INBOUND, ""),
    ],
)
def test_unknown_type(table, kind):
    with pytest.raises(UnknownMessageType) as info:
        decode(orjson.dumps({"type": kind}), table)
    error = info.value
    assert isinstance(error, ProtocolError)
    assert (error.kind, error.field) == (kind, "type")
    assert error.message == f"unknown message type {kind!r}"
    assert error.code is ErrorCode.INVALID_MESSAGE


# ---------------------------------------------------------------------------------------
# Encoding

FLAGS = ("is_manual_cut", "is_timeout_triggered", "is_max_duration_triggered")


def job_assign(**flags: bool) -> JobAssign:
    return JobAssign(
        job_id="job-1",
        attempt_id=2,
        session_id="s-00000001",
        utterance_index=7,
        src_lang="zh",
        tgt_lang="en",
        dialect=None,
        features={"emotion": False},
        pipeline=Pipeline(),
        audio="AAAA",
        audio_format="opus",
        sample_rate=16000,
        trace_id="trace-1",
        padding_ms=280,
        turn_id="turn-1",
        **flags,
    )


@pytest.mark.parametrize(
    "set_flags",
    [(), ("is_manual_cut",), ("is_timeout_triggered",), ("is_max_duration_triggered",), FLAGS],
    ids=["none", "manual", "timeout", "max-duration", "all"],
)
def test_job_assign_flags_only_when_true(set_flags):
    data = json.loads(encode(job_assign(**{flag: True for flag in set_flags})))
    for flag in FLAGS:
        if flag in set_flags:
            assert data[flag] is True
        else:
            assert flag not in data


def test_job_assign_wire_shape():
    data = json.loads(encode(job_assign(is_manual_cut=True)))
    assert data == {
        "type": "job_assign",
        "job_id": "job-1",
        "attempt_id": 2,
        "session_id": "s-00000001",
        "utterance_index": 7,
        "src_lang": "zh",
        "tgt_lang": "en",
        "dialect": None,
        "features": {"emotion": False},
        "pipeline": {
            "use_asr": True, "use_nmt": True, "use_tts": True,
            "use_semantic": False, "use_tone": False,
        },
        "audio": "AAAA",
        "audio_format": "opus",
        "sample_rate": 16000,
        "trace_id": "trace-1",
        "mode": None,
        "lang_a": None,
        "lang_b": None,
        "auto_langs": None,
        "enable_streaming_asr": None,
        "partial_update_interval_ms": None,
        "padding_ms": 280,
        "turn_id": "turn-1",
        "is_manual_cut": True,
    }


OUTBOUND = [
    SessionInitAck("s-1", "ok", "t", None),
    TranslationResult(
        "s-1", 0, "job-1", "你好", "Hello", "AAAA", "pcm16", "t",
        service_timings=ServiceTimings(total_ms=801),
        network_timings=NetworkTimings(web_to_scheduler_ms=3),
        reason_codes=[],
    ),
    MissingResult("s-1", 3, "gap_timeout", 1795360124319, "t"),
    AsrPartialToClient("s-1", 0, "job-1", "ni", False, "t"),
    UiEvent("t", "s-1", "job-1", 0, "DISPATCHED"),
    ServerHeartbeat("s-1", 1795360124319),
    SessionCloseAck("s-1"),
    Backpressure("BUSY", 500),
    Error("NO_AVAILABLE_NODE", "no node serves zh:en"),
    NodeRegisterAck("node-1", "welcome"),
    job_assign(),
    JobCancel("job-1", "t", "session closed"),
    NodeControl("drain"),
]


@pytest.mark.parametrize("message", OUTBOUND, ids=[type(m).TYPE for m in OUTBOUND])
def test_encode_puts_type_in_every_frame(message):
    data = json.loads(encode(message))
    assert data["type"] == type(message).TYPE
    assert next(iter(data)) == "type", "type comes first"
    assert data == to_dict(message)


def test_encode_values_of_session_init_ack():
    data = json.loads(encode(SessionInitAck("s-ABCDEF01", "ok", "trace", None)))
    assert data == {
        "type": "session_init_ack",
        "session_id": "s-ABCDEF01",
        "message": "ok",
        "trace_id": "trace",
        "assigned_node_id": None,
        "protocol_version": "1.0",
        "use_binary_frame": False,
        "negotiated_codec": "opus",
        "negotiated_audio_format": "opus",
        "negotiated_sample_rate": 16000,
        "negotiated_channel_count": 1,
    }


def test_encode_nested_and_unicode():
    data = json.loads(encode(OUTBOUND[1]))
    assert data["text_asr"] == "你好"
    assert data["service_timings"] == {
        "asr_ms": None, "nmt_ms": None, "tts_ms": None, "total_ms": 801
    }
    assert data["network_timings"]["web_to_scheduler_ms"] == 3


@pytest.mark.parametrize(
    ("code", "details"),
    [(ErrorCode.INVALID_MESSAGE, {"field": "seq"}), ("NO_AVAILABLE_NODE", None)],
)
def test_encode_error(code, details):
    data = json.loads(encode_error(code, "human readable", details))
    assert data == {"type": "error", "code": str(code), "message": "human readable",
                    "details": details}


@pytest.mark.parametrize("extra, refused", [
    ([[[1]]], True),  # the frame object, then three arrays: 4 levels
    ([[1], [2], [3], {"a": 4}], False),  # many brackets, 3 levels: walked, accepted
    ("[[[[{{{{", False),  # brackets in a string are no nesting
])
def test_nesting_is_bounded_however_many_brackets_a_frame_has(extra, refused):
    from trio_scheduler.protocol.bounds import DecodeLimits

    raw = frame(AUDIO, extra=extra)
    if refused:
        with pytest.raises(ProtocolError, match="nested deeper than 3"):
            decode(raw, SESSION_INBOUND, DecodeLimits(max_depth=3))
    else:
        assert isinstance(decode(raw, SESSION_INBOUND, DecodeLimits(max_depth=3)), AudioChunk)
