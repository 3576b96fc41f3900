"""Every inbound value is bounded at decode: what a hostile peer's frames get over real
sockets (an ``error`` naming the field, small echoes), never a close or a broken session."""

from __future__ import annotations

import base64
import copy
import json
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio

from harness import MemoryHarness
from trio_scheduler.config import Config, with_overrides
from trio_scheduler.protocol.bounds import SAFE_INTEGER, DecodeLimits
from trio_scheduler.protocol.codec import ProtocolError, UnknownMessageType, decode
from trio_scheduler.protocol.errors import ErrorCode, echo
from trio_scheduler.protocol.messages import NODE_INBOUND, SESSION_INBOUND
from trio_scheduler.simulate.frames import (
    AGENT_REGISTER,
    WEB_SESSION_INIT,
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import connect
from wire_fields import bounds_table, inbound_fields

WIRE_BOUNDS_DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-bounds.md"
LIMITS_OF_THE_DEFAULT_CONFIG = Config().server.decode_limits

WIRE_BOUND_S = 10  # every wait on a real socket fails the test after this long
HUGE = 2**64  # frames carrying it are written with json: orjson cannot (that is the point)
MIB = 1024 * 1024


@asynccontextmanager
async def ready_node(server):
    async with connect(server.node_url) as node:
        await node.send(register_frame())
        node_id = (await node.recv())["node_id"]
        await node.send(heartbeat_frame(node_id))
        await server.scheduler.publisher.wait_until(lambda s: node_id in s.pools.get("zh:en", ()))
        yield node, node_id


async def refused(peer, field: str) -> dict:
    reply = await peer.recv_type("error")
    assert (reply["code"], reply["details"]) == ("INVALID_MESSAGE", {"field": field}), reply
    return reply


async def still_served(client, session_id: str) -> None:
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    assert (await client.recv_type("server_heartbeat"))["session_id"] == session_id


async def test_result_with_a_huge_integer_is_refused_and_its_utterance_ends_at_once(
    start_server
):
    """The node hears why; the browser gets the utterance's outcome now (not silence
    until the job timeout), and the session goes on."""
    server = await start_server()
    with trio.fail_after(WIRE_BOUND_S):
        async with ready_node(server) as (node, node_id), connect(server.session_url) as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            job = await node.recv_type("job_assign")
            await node.send(json.dumps(result_frame(job, node_id, rerun_count=HUGE)))
            await refused(node, "rerun_count")
            missing = await client.recv_type("missing_result")
            assert (missing["utterance_index"], missing["reason"]) == (0, "job_failed")
            await client.send(audio_chunk_frame(session_id, 1, is_final=True))
            job = await node.recv_type("job_assign")
            await node.send(result_frame(job, node_id, rerun_count=1))
            result = await client.recv_type("translation_result")
            assert (result["utterance_index"], result["rerun_count"]) == (1, 1)


async def test_huge_partial_interval_is_refused_at_init(start_server):
    server = await start_server()
    with trio.fail_after(WIRE_BOUND_S):
        async with ready_node(server) as (node, _), connect(server.session_url) as client:
            await client.send(json.dumps(one_way_init(
                "zh", "en", enable_streaming_asr=True, partial_update_interval_ms=HUGE)))
            await refused(client, "partial_update_interval_ms")
            await client.send(one_way_init("zh", "en", enable_streaming_asr=True,
                                           partial_update_interval_ms=500))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            job = await node.recv_type("job_assign")
            assert job["partial_update_interval_ms"] == 500
            await still_served(client, session_id)


async def test_utterance_with_a_huge_sample_rate_is_refused(start_server):
    server = await start_server()
    with trio.fail_after(WIRE_BOUND_S):
        async with connect(server.session_url) as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send(json.dumps({
                "type": "utterance", "session_id": session_id, "utterance_index": 0,
                "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
                "audio": base64.b64encode(b"\x00" * 3200).decode(), "audio_format": "pcm16",
                "sample_rate": HUGE,
            }))
            await refused(client, "sample_rate")
            await still_served(client, session_id)


async def test_a_mebibyte_trace_id_is_refused_not_echoed(start_server):
    server = await start_server()
    with trio.fail_after(WIRE_BOUND_S):
        async with connect(server.session_url) as client:
            await client.send(one_way_init("zh", "en", trace_id="t" * MIB))
            reply = await refused(client, "trace_id")
            assert len(orjson.dumps(reply)) < 300


async def test_a_mebibyte_language_is_refused_with_a_short_message(start_server):
    server = await start_server()
    with trio.fail_after(WIRE_BOUND_S):
        async with connect(server.session_url) as client:
            await client.send(one_way_init("x" * MIB, "en"))
            reply = await refused(client, "src_lang")
            assert len(orjson.dumps(reply)) < 300
            await client.send(one_way_init("zh", "en"))
            assert (await client.recv())["type"] == "session_init_ack"


# ---------------------------------------------------------------------------------------
# Each kind of bound, at the limit and one past it (decode only)

LIMITS = DecodeLimits(max_text_chars=30, max_object_bytes=200, max_list_items=3)
RESULT = result_frame({"job_id": "job-1", "attempt_id": 1, "session_id": "s-1",
                       "utterance_index": 0, "trace_id": "t"}, "node-1")
UTTERANCE = {"type": "utterance", "session_id": "s-1", "utterance_index": 0, "manual_cut": True,
             "src_lang": "zh", "tgt_lang": "en", "audio": "", "audio_format": "pcm16",
             "sample_rate": 16000}
SESSION_INIT = one_way_init("zh", "en")
CHUNK = audio_chunk_frame("s-1", 0)


def with_value(base: dict, path: str, value) -> str:
    """``base`` with ``value`` at the dotted ``path`` (``hardware.gpus.0.name``), as JSON
    text (json, not orjson: it must carry integers beyond 64 bits)."""
    data = copy.deepcopy(base)
    *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("table", "base", "path", "field", "inside", "outside"),
    [
        pytest.param(SESSION_INBOUND, SESSION_INIT, "trace_id", "trace_id",
                     "t" * 64, "t" * 65, id="id"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "src_lang", "src_lang",
                     "x" * 16, "x" * 17, id="language-tag"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "client_version", "client_version",
                     "v" * 64, "v" * 65, id="name"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "features", "features",
                     {"a": "x" * 192}, {"a": "x" * 193}, id="object-bytes"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "auto_langs", "auto_langs",
                     ["zh", "en", "ja"], ["zh", "en", "ja", "ko"], id="list-items"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "auto_langs", "auto_langs[1]",
                     ["zh", "x" * 16], ["zh", "x" * 17], id="list-item"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "partial_update_interval_ms",
                     "partial_update_interval_ms", 86_400_000, 86_400_001, id="interval"),
        pytest.param(SESSION_INBOUND, SESSION_INIT, "partial_update_interval_ms",
                     "partial_update_interval_ms", 0, HUGE, id="interval-2^64"),
        pytest.param(SESSION_INBOUND, CHUNK, "seq", "seq", SAFE_INTEGER, SAFE_INTEGER + 1,
                     id="index-2^53"),
        pytest.param(SESSION_INBOUND, CHUNK, "seq", "seq", 0, -1, id="index-negative"),
        pytest.param(SESSION_INBOUND, CHUNK, "seq", "seq", 7.0, 1e19, id="index-float"),
        pytest.param(SESSION_INBOUND, CHUNK, "client_timestamp_ms", "client_timestamp_ms",
                     float(SAFE_INTEGER), 1e300, id="timestamp"),
        pytest.param(SESSION_INBOUND, UTTERANCE, "sample_rate", "sample_rate",
                     384_000, 384_001, id="sample-rate-high"),
        pytest.param(SESSION_INBOUND, UTTERANCE, "sample_rate", "sample_rate", 1, 0,
                     id="sample-rate-zero"),
        pytest.param(SESSION_INBOUND, {"type": "session_close", "session_id": "s-1"},
                     "reason", "reason", "x" * 30, "x" * 31, id="text"),
        pytest.param(NODE_INBOUND, RESULT, "rerun_count", "rerun_count", 3, HUGE,
                     id="count-2^64"),
        pytest.param(NODE_INBOUND, RESULT, "quality_score", "quality_score",
                     -SAFE_INTEGER, -1e300, id="score"),
        pytest.param(NODE_INBOUND, RESULT, "processing_time_ms", "processing_time_ms",
                     86_400_000, 86_400_001, id="duration"),
        pytest.param(NODE_INBOUND, RESULT, "extra", "extra", {"a": [7] * 95 + [10]},
                     {"a": [7] * 95 + [100]}, id="extra-bytes"),  # 200 and 201 bytes
        pytest.param(NODE_INBOUND, RESULT, "reason_codes", "reason_codes[0]", ["A" * 64],
                     ["A" * 65], id="reason-code"),
        pytest.param(NODE_INBOUND, register_frame(), "hardware.gpus.0.name",
                     "hardware.gpus[0].name", "G" * 64, "G" * 65, id="nested-name"),
        pytest.param(NODE_INBOUND, register_frame(), "installed_models.0", "installed_models[0]",
                     {"m": "x" * 192}, {"m": "x" * 193}, id="object-in-list"),
        pytest.param(NODE_INBOUND, heartbeat_frame("node-1"), "resource_usage.cpu_percent",
                     "resource_usage.cpu_percent", 250.0, -1, id="amount"),
    ],
)
def test_bound_at_the_limit_and_past_it(table, base, path, field, inside, outside):
    decode(with_value(base, path, inside), table, LIMITS)
    with pytest.raises(ProtocolError) as refused:
        decode(with_value(base, path, outside), table, LIMITS)
    assert refused.value.code is ErrorCode.INVALID_MESSAGE
    assert refused.value.details == {"field": field}
    assert f"'{field}'" in refused.value.message
    assert len(refused.value.message) < 120  # the value itself is never echoed


def test_wrong_types_still_get_the_type_message():
    with pytest.raises(ProtocolError) as refused:
        decode(with_value(CHUNK, "session_id", 5), SESSION_INBOUND)
    assert "expected str, got number" in refused.value.message


def test_free_form_objects_may_carry_64_bit_integers():
    """orjson reads integers up to 64 bits as integers and writes them back; an agent's
    nanosecond clock in ``extra`` is not a reason to lose its result."""
    message = decode(with_value(RESULT, "extra", {"started_ns": 2**63}), NODE_INBOUND)
    assert message.extra == {"started_ns": 2**63}


def test_unknown_type_is_echoed_cut():
    with pytest.raises(UnknownMessageType) as refused:
        decode(json.dumps({"type": "x" * MIB}), SESSION_INBOUND)
    assert refused.value.kind == "x" * MIB
    assert len(refused.value.message) < 80


async def test_a_foreign_node_id_is_quoted_cut(nursery):
    h = await MemoryHarness.start(nursery)
    node, _ = await h.ready_node()
    await node.send({"type": "job_ack", "job_id": "job-1", "attempt_id": 1, "node_id": "n" * 64,
                     "session_id": "s-1", "trace_id": "t"})
    reply = await node.recv_type("error")
    assert reply["details"] == {"field": "node_id"}
    assert "'" + "n" * 32 + "'…" in reply["message"] and "n" * 33 not in reply["message"]


def test_echo_cuts_long_values():
    assert echo("zh!") == "'zh!'"
    assert echo("x" * 100) == "'" + "x" * 32 + "'…"


# ---------------------------------------------------------------------------------------
# The contract, as the classes and the docs state it


def test_every_inbound_field_is_bounded():
    unbounded = [(kind, field.path) for _, kind, field in inbound_fields()
                 if field.bound is None and field.base is not bool]
    assert unbounded == []


def test_docs_table_lists_every_bound():
    expected = bounds_table()
    assert expected in WIRE_BOUNDS_DOC.read_text(encoding="utf-8"), (
        f"{WIRE_BOUNDS_DOC} is out of step with the message classes; its table is:\n{expected}"
    )


def test_real_programs_frames_are_within_bounds():
    frames = [(SESSION_INBOUND, WEB_SESSION_INIT), (NODE_INBOUND, AGENT_REGISTER),
              (NODE_INBOUND, heartbeat_frame("node-1DDFF3B5")), (NODE_INBOUND, RESULT),
              (SESSION_INBOUND, CHUNK)]
    for table, frame in frames:
        decode(json.dumps(frame), table, LIMITS_OF_THE_DEFAULT_CONFIG)


# ---------------------------------------------------------------------------------------
# The tunable bounds come from [server], on both sockets


def test_decode_limits_come_from_server_settings():
    server = with_overrides(Config(), server={
        "max_json_depth": 5, "max_message_bytes": 6, "max_text_chars": 7,
        "max_object_bytes": 8, "max_list_items": 9,
    }).server
    assert server.decode_limits == DecodeLimits(max_depth=5, max_message_bytes=6,
                                                max_text_chars=7, max_object_bytes=8,
                                                max_list_items=9)
    assert server.decode_limits is server.decode_limits  # one object: one converter


async def test_configured_bounds_apply_to_both_sockets(nursery):
    h = await MemoryHarness.start(nursery, server={"max_text_chars": 8, "max_object_bytes": 200,
                                                   "max_list_items": 3})
    client = h.session()
    await client.send(one_way_init("zh", "en", features={"k": "v" * 200}))
    await refused(client, "features")
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({"type": "session_close", "session_id": session_id, "reason": "x" * 9})
    await refused(client, "reason")
    node = h.node()
    await node.send(register_frame(["zh", "en", "ja", "ko"]))
    await refused(node, "language_capabilities.asr_languages")
    await node.send(register_frame())
    node_id = (await node.recv_type("node_register_ack"))["node_id"]
    await node.send({"type": "node_error", "node_id": node_id, "code": "E", "message": "x" * 9})
    await refused(node, "message")
