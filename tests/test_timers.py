"""Behaviour that hangs on timers, driven by Trio's MockClock over in-memory sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trio_websocket

from harness import MemoryHarness
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame


async def test_pause_finalizes_after_pause_ms_of_silence(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0))
    sent_at = trio.current_time()
    await client.send(audio_chunk_frame(session_id, 1, payload=""))  # empty: no extension
    job = await node.recv_type("job_assign")
    waited = trio.current_time() - sent_at
    assert 3.15 <= waited < 3.2  # pause_ms, then hangover_auto_ms
    assert job["is_timeout_triggered"] is True
    assert "is_manual_cut" not in job and "is_max_duration_triggered" not in job
    assert job["padding_ms"] == 220


async def test_max_duration_cuts_and_keeps_the_turn(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    # 13 packets = 260 ms per chunk; 39 chunks = 10140 ms >= 10000 ms.
    for seq in range(39):
        await client.send(audio_chunk_frame(session_id, seq))
    first = await node.recv_type("job_assign")
    assert first["is_max_duration_triggered"] is True and first["padding_ms"] == 220
    await client.send(audio_chunk_frame(session_id, 39))
    await client.send(audio_chunk_frame(session_id, 40, is_final=True, payload=""))
    second = await node.recv_type("job_assign")
    assert second["utterance_index"] == 1 and second["is_manual_cut"] is True
    assert second["turn_id"] == first["turn_id"]
    await client.send(audio_chunk_frame(session_id, 41, is_final=True))
    third = await node.recv_type("job_assign")
    assert third["turn_id"] != first["turn_id"]


async def test_job_timeout_cancels_on_node_and_reports(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, jobs={"timeout_ms": 30000})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    dispatched_at = trio.current_time()
    cancel = await node.recv_type("job_cancel", within=30 + 1)  # timeout_ms
    assert cancel["job_id"] == job["job_id"]
    assert 30.0 <= trio.current_time() - dispatched_at < 30.1
    error = await client.recv_type("ui_event")
    while error["event"] != "ERROR":
        error = await client.recv_type("ui_event")
    assert error["error_code"] == "JOB_TIMEOUT" and error["status"] == "error"
    missing = await client.recv_type("missing_result")
    assert missing["reason"] == "job_timeout" and missing["utterance_index"] == 0
    # The slot came back: the next utterance is dispatched to the same node.
    assert await h.scheduler.store.in_use(node_id, 0) == 0
    # A late result for the timed-out job is dropped, not delivered.
    await node.send(result_frame(job, node_id))
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    nxt = await node.recv_type("job_assign")
    assert nxt["utterance_index"] == 1
    await node.send(result_frame(nxt, node_id))
    result = await client.recv_type("translation_result")
    assert result["utterance_index"] == 1


async def test_waiting_for_capacity_then_overloaded(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, jobs={"pending_timeout_ms": 10000})
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    a, b = h.session(), h.session()
    sa = await h.session_id_for(a, one_way_init("zh", "en"))
    sb = await h.session_id_for(b, one_way_init("zh", "en"))
    await a.send(audio_chunk_frame(sa, 0, is_final=True))
    job_a = await node.recv_type("job_assign")
    await b.send(audio_chunk_frame(sb, 0, is_final=True))
    busy = await b.recv_type("backpressure")
    assert busy["action"] == "PAUSE"
    started_waiting = trio.current_time()
    error = await b.recv_type("ui_event", within=10 + 1)  # pending_timeout_ms
    assert error["event"] == "ERROR" and error["error_code"] == "NODE_OVERLOADED"
    assert 10.0 <= trio.current_time() - started_waiting < 10.1
    missing = await b.recv_type("missing_result")
    assert missing["reason"] == "job_failed"
    await node.send(result_frame(job_a, node_id))
    assert (await a.recv_type("translation_result"))["utterance_index"] == 0


async def test_freed_slot_goes_to_the_waiting_job(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    a, b = h.session(), h.session()
    sa = await h.session_id_for(a, one_way_init("zh", "en"))
    sb = await h.session_id_for(b, one_way_init("zh", "en"))
    await a.send(audio_chunk_frame(sa, 0, is_final=True))
    job_a = await node.recv_type("job_assign")
    await b.send(audio_chunk_frame(sb, 0, is_final=True))
    await b.recv_type("backpressure")
    await trio.sleep(1.0)  # MockClock: a second of node work passes
    await node.send(result_frame(job_a, node_id))
    job_b = await node.recv_type("job_assign")
    assert job_b["session_id"] == sb
    await node.send(result_frame(job_b, node_id))
    assert (await b.recv_type("translation_result"))["session_id"] == sb


async def test_heartbeat_timeout_closes_node_and_empties_pools(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    last_heartbeat = trio.current_time()
    await h.wait_node_status(node_id, None, within=60 + 1)  # timeout, then the next sweep
    silent = trio.current_time() - last_heartbeat
    assert 45.0 < silent <= 60.0 + 0.1  # timeout 45 s, sweep every 15 s
    assert node.ws.closed.code == 4002
    assert h.scheduler.publisher.current.pools == {}


async def test_idle_session_is_closed_with_4008(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await trio.sleep(119)
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    assert (await client.recv())["type"] == "server_heartbeat"
    opened = trio.current_time()
    with pytest.raises(trio_websocket.ConnectionClosed):
        await client.recv(within=120 + 1)  # idle_timeout_s
    assert client.ws.closed.code == 4008
    assert 120.0 <= trio.current_time() - opened < 120.1
    await trio.testing.wait_all_tasks_blocked()  # let the session task finish its cleanup
    assert h.scheduler.sessions.sessions == {}


@pytest.mark.parametrize(
    "message",
    [
        {"type": "tts_play_ended", "trace_id": "t", "group_id": "g", "ts_end_ms": 1},
        {"type": "audio_chunk", "seq": 0, "is_final": False, "payload": ""},
    ],
    ids=["playback", "empty-chunk"],
)
async def test_any_message_keeps_a_session_alive(nursery, autojump_clock, message):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await trio.sleep(119)
    await client.send({**message, "session_id": session_id})
    sent = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await client.recv(within=119)  # nothing comes, and the socket stays open
    assert trio.current_time() - sent == pytest.approx(119)
    assert client.ws.closed is None


async def test_gap_timeout_skips_missing_index(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job0 = await node.recv_type("job_assign")
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    job1 = await node.recv_type("job_assign")
    await node.send(result_frame(job1, node_id))
    answered = trio.current_time()
    gap = await client.recv_type("missing_result")
    assert gap["utterance_index"] == 0 and gap["reason"] == "gap_timeout"
    assert 5.0 <= trio.current_time() - answered < 5.1
    result = await client.recv_type("translation_result")
    assert result["utterance_index"] == 1
    # The late result for index 0 is dropped, never delivered.
    await node.send(result_frame(job0, node_id))
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    assert (await client.recv_type("server_heartbeat", "translation_result"))["type"] == (
        "server_heartbeat"
    )
