"""The full round trip over real sockets: browser → scheduler → node → browser."""

from __future__ import annotations

import base64

from harness import node_status_is, snapshot_where

from trio_scheduler.dispatch.dispatcher import wall_ms
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
    session_init_frame,
)
from trio_scheduler.simulate.peer import connect


async def register_ready_node(server, **register_overrides):
    """Connect, register, heartbeat; returns (peer, node_id) once the node is ready."""
    cm = connect(server.node_url)
    node = await cm.__aenter__()
    await node.send(register_frame(**register_overrides))
    ack = await node.recv()
    assert ack["type"] == "node_register_ack"
    node_id = ack["node_id"]
    await node.send(heartbeat_frame(node_id))
    await wait_for_node_status(server, node_id, "ready")
    return node, node_id, cm


async def wait_for_node_status(server, node_id, status):
    await snapshot_where(server.scheduler.publisher, node_status_is(node_id, status))


async def test_full_round_trip_with_real_frames(start_server):
    server = await start_server()
    node, node_id, node_cm = await register_ready_node(server)
    assert node_id.startswith("node-") and len(node_id) == 13
    async with connect(server.session_url) as client:
        await client.send(session_init_frame())
        ack = await client.recv()
        assert ack["type"] == "session_init_ack"
        session_id = ack["session_id"]
        assert session_id.startswith("s-") and len(session_id) == 10
        assert ack["trace_id"] == "ff9c9991-acfa-435d-9f14-f1ab5aad9f81"
        assert ack["assigned_node_id"] is None
        assert ack["protocol_version"] == "1.0"
        assert ack["negotiated_codec"] == "opus"
        assert ack["negotiated_sample_rate"] == 16000

        # The browser stamps the chunk 1.5 s before it arrives (its recording time).
        recorded_at_ms = wall_ms() - 1500
        await client.send(audio_chunk_frame(session_id, 0, client_timestamp_ms=recorded_at_ms))
        await client.send(audio_chunk_frame(session_id, 1))
        await client.send(audio_chunk_frame(session_id, 2, is_final=True, payload=""))

        job = await node.recv()
        assert job["type"] == "job_assign"
        assert job["job_id"].startswith("job-")
        assert job["attempt_id"] == 1
        assert job["session_id"] == session_id
        assert job["utterance_index"] == 0
        assert job["src_lang"] == "auto" and job["tgt_lang"] == "en"
        assert job["mode"] == "two_way_auto"
        assert job["lang_a"] == "zh" and job["lang_b"] == "en"
        assert job["auto_langs"] == ["zh", "en"]
        assert job["dialect"] is None and job["features"] == {}
        assert job["pipeline"] == {
            "use_asr": True, "use_nmt": True, "use_tts": True,
            "use_semantic": False, "use_tone": False,
        }
        assert job["audio_format"] == "opus" and job["sample_rate"] == 16000
        assert job["trace_id"] == "ff9c9991-acfa-435d-9f14-f1ab5aad9f81"
        expected_audio = b"".join(
            base64.b64decode(audio_chunk_frame(session_id, i)["payload"]) for i in range(2)
        )
        assert base64.b64decode(job["audio"]) == expected_audio
        assert job["padding_ms"] == 280
        assert job["is_manual_cut"] is True
        assert "is_timeout_triggered" not in job and "is_max_duration_triggered" not in job
        assert job["turn_id"]

        dispatched = await client.recv()
        assert dispatched["type"] == "ui_event" and dispatched["event"] == "DISPATCHED"
        assert dispatched["job_id"] == job["job_id"] and dispatched["utterance_index"] == 0

        await node.send({"type": "job_ack", "job_id": job["job_id"], "attempt_id": 1,
                         "node_id": node_id, "session_id": session_id,
                         "trace_id": job["trace_id"]})
        accepted = await client.recv()
        assert accepted["event"] == "NODE_ACCEPTED" and accepted["status"] == "ok"

        result_sent_at_ms = wall_ms()
        await node.send(result_frame(job, node_id, node_completed_at_ms=None))
        asr_final = await client.recv()
        nmt_done = await client.recv()
        result = await client.recv()
        result_received_at_ms = wall_ms()
        assert (asr_final["event"], nmt_done["event"]) == ("ASR_FINAL", "NMT_DONE")
        assert result["type"] == "translation_result"
        assert result["session_id"] == session_id
        assert result["utterance_index"] == 0
        assert result["job_id"] == job["job_id"]
        assert result["text_asr"] == "utterance 0 heard"
        assert result["text_translated"] == "utterance 0 translated"
        assert base64.b64decode(result["tts_audio"]) == b"\x00\x01" * 8
        assert result["tts_format"] == "opus"
        assert result["trace_id"] == "ff9c9991-acfa-435d-9f14-f1ab5aad9f81"
        assert result["service_timings"] == {
            "asr_ms": 420, "nmt_ms": 85, "tts_ms": 230, "total_ms": 735,
        }
        timings = result["network_timings"]
        assert set(timings) == {
            "web_to_scheduler_ms", "scheduler_to_node_ms", "node_to_scheduler_ms",
            "scheduler_to_web_ms",
        }
        # Measured from the client's stamp: the 1.5 s plus the chunk's trip, at most as
        # long as this test has run since the stamp.
        assert 1500 <= timings["web_to_scheduler_ms"] <= result_received_at_ms - recorded_at_ms
        # The scheduler held the result no longer than it took to reach the client.
        leg_ms = result_received_at_ms - result_sent_at_ms
        assert timings["scheduler_to_web_ms"] <= leg_ms
        assert result_sent_at_ms <= result["scheduler_sent_at_ms"] <= result_received_at_ms
        assert result["asr_quality_level"] == "good"
        assert result["quality_score"] == 0.92
        assert result["segments_meta"] == {"count": 1, "max_gap": 0, "avg_duration": 1.8}
        assert result["extra"]["language_probability"] == 0.97
    await node_cm.__aexit__(None, None, None)


async def test_no_node_then_node_registers(start_server):
    server = await start_server()
    async with connect(server.session_url) as client:
        await client.send(one_way_init("zh", "en"))
        session_id = (await client.recv())["session_id"]
        await client.send(audio_chunk_frame(session_id, 0, is_final=True))
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "NO_AVAILABLE_NODE"
        assert "zh:en" in error["message"]
        missing = await client.recv()
        assert missing["type"] == "missing_result"
        assert missing["utterance_index"] == 0 and missing["reason"] == "job_failed"

        node, node_id, node_cm = await register_ready_node(server)
        await client.send(audio_chunk_frame(session_id, 1, is_final=True))
        job = await node.recv()
        assert job["utterance_index"] == 1
        await node.send(result_frame(job, node_id))
        result = await client.recv_type("translation_result")
        assert result["utterance_index"] == 1
        await node_cm.__aexit__(None, None, None)
