"""Malformed and hostile input: a clear error or a documented close, never a crash, and
the server keeps serving everyone else."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
import redis
import trio
import trio.testing
import trio_websocket

from harness import MemoryHarness
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.store.base import StoreUnavailable
from trio_scheduler.store.redis import _Request, _server_state_error


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def utterance(session_id: str, index: int) -> dict:
    return {"type": "utterance", "session_id": session_id, "utterance_index": index,
            "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
            "audio": base64.b64encode(b"\x00" * 32000).decode(), "audio_format": "pcm16",
            "sample_rate": 16000}


@pytest.mark.parametrize("index", [-1, 10**12, 201])
async def test_utterance_index_out_of_range_is_refused(nursery, index):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, index))
    reply = await client.recv()
    assert reply["code"] == "INVALID_MESSAGE" and reply["details"] == {"field": "utterance_index"}


async def test_utterance_gap_is_reported_once_in_order(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1))
    sent = trio.current_time()
    gap = await client.recv_type("missing_result")
    assert (gap["utterance_index"], gap["reason"]) == (0, "gap_timeout")
    assert trio.current_time() - sent == pytest.approx(5.0)  # one gap timeout, not two
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 1


async def test_session_close_dispatches_waiting_utterances(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1))
    await client.send({"type": "session_close", "session_id": session_id, "reason": "bye"})
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 1
    await node.send(result_frame(job, node_id))
    frames = []
    while (frame := await client.recv())["type"] != "session_close_ack":
        frames.append(frame)
    kinds = [(f["type"], f.get("utterance_index")) for f in frames
             if f["type"] in ("missing_result", "translation_result")]
    assert kinds == [("missing_result", 0), ("translation_result", 1)]


async def test_oversized_audio_chunk_is_refused(nursery):
    h = await MemoryHarness.start(nursery, sessions={"max_chunk_bytes": 1000})
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    big = base64.b64encode(b"\x01" * 5000).decode()
    await client.send(audio_chunk_frame(session_id, 0, payload=big))
    reply = await client.recv()
    assert reply["code"] == "INVALID_MESSAGE" and reply["details"] == {"field": "payload"}


@pytest.mark.parametrize("kind", ["session", "node"])
async def test_deeply_nested_frames_are_refused(nursery, kind):
    h = await MemoryHarness.start(nursery)
    peer = h.session() if kind == "session" else h.node()
    frame = one_way_init("zh", "en") if kind == "session" else register_frame()
    frame["features"] = nested(300)
    await peer.send(json.dumps(frame))  # deeper than orjson itself can write
    reply = await peer.recv()
    assert reply["code"] == "INVALID_MESSAGE" and "nested deeper" in reply["message"]


async def test_insane_numbers_are_refused_and_free_form_ones_ignored(nursery):
    """A peer's own number fields are bounded at decode (a result that cannot be read
    fails its job at once); numbers inside a free-form object we read
    (``extra.service_timings``) are treated as absent when insane."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True,
                                        client_timestamp_ms=-1e300))
    reply = await client.recv()
    assert (reply["code"], reply["details"]) == ("INVALID_MESSAGE",
                                                 {"field": "client_timestamp_ms"})
    for index, (field, value) in enumerate(
        [("processing_time_ms", 1.7e308), ("node_completed_at_ms", -1.7e308)]
    ):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id, **{field: value}))
        reply = await node.recv_type("error")
        assert (reply["code"], reply["details"]) == ("INVALID_MESSAGE", {"field": field})
        missing = await client.recv_type("missing_result")
        assert (missing["utterance_index"], missing["reason"]) == (index, "job_failed")
    await client.send(audio_chunk_frame(session_id, 2, is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id, processing_time_ms=None,
                                 extra={"reason": [], "service_timings": {"asr_ms": 1e300}}))
    result = await client.recv_type("translation_result")
    assert result["network_timings"]["web_to_scheduler_ms"] is None
    assert result["service_timings"] == {"asr_ms": None, "nmt_ms": None, "tts_ms": None,
                                         "total_ms": None}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"language_capabilities": {"asr_languages": [f"l{i}a" for i in range(65)],
                                    "tts_languages": ["en"]}},
         "language_capabilities.asr_languages"),
        ({"language_capabilities": {"asr_languages": ["zh", "<script>"],
                                    "tts_languages": ["en"]}},
         "language_capabilities.asr_languages"),
        ({"max_concurrent_jobs": 2**40}, "max_concurrent_jobs"),
        ({"node_id": "x" * 200}, "node_id"),
        ({"node_id": "bad id with spaces"}, "node_id"),
    ],
)
async def test_hostile_registrations_are_refused(nursery, change, field):
    h = await MemoryHarness.start(nursery)
    node = h.node()
    await node.send(register_frame(**change))
    reply = await node.recv()
    assert reply["code"] == "INVALID_MESSAGE" and reply["details"] == {"field": field}
    assert h.scheduler.publisher.current.nodes == {}


async def test_heartbeat_with_bad_languages_is_refused_and_not_applied(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    frame = heartbeat_frame(node_id)
    frame["language_capabilities"]["asr_languages"] = ["zh"] * 100
    await node.send(frame)
    reply = await node.recv()
    assert reply["code"] == "INVALID_MESSAGE"
    assert "zh:en" in h.scheduler.publisher.current.pools


async def test_node_that_never_registers_is_closed(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, nodes={"register_timeout_s": 30.0})
    node = h.node()
    opened = trio.current_time()
    with pytest.raises(trio_websocket.ConnectionClosed):
        await node.recv(within=30.0 + 1)  # register_timeout_s
    assert node.ws.closed.code == 4003
    assert trio.current_time() - opened == pytest.approx(30.0)


async def test_playback_without_end_suspends_pause_cuts_only_so_long(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, segmentation={"max_playback_suspend_ms": 20000})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({"type": "tts_started", "session_id": session_id, "trace_id": "t",
                       "group_id": "g", "ts_start_ms": 1})
    started = trio.current_time()
    await client.send(audio_chunk_frame(session_id, 0))
    job = await node.recv_type("job_assign", within=20.0 + 3.0 + 1)  # suspend, then pause
    assert job["is_timeout_triggered"] is True
    assert trio.current_time() - started == pytest.approx(20.0 + 3.0 + 0.15)


async def test_pinned_waiter_passes_a_wake_it_cannot_use(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    nodes = {}
    for name in ("a", "b"):
        peer = h.node()
        await peer.send(register_frame(max_concurrent_jobs=1))
        ack = await peer.recv()
        await peer.send(heartbeat_frame(ack["node_id"]))
        await h.wait_node_status(ack["node_id"], "ready")
        nodes[name] = (peer, ack["node_id"], ack["pairing_code"])
    (node_a, _, a_code), (node_b, b_id, b_code) = nodes["a"], nodes["b"]
    pinned_a, pinned_b, free = h.session(), h.session(), h.session()
    a_session = await h.session_id_for(pinned_a, one_way_init("zh", "en", pairing_code=a_code))
    b_session = await h.session_id_for(pinned_b, one_way_init("zh", "en", pairing_code=b_code))
    free_id = await h.session_id_for(free, one_way_init("zh", "en"))
    # Fill both nodes, then queue a job pinned to A first and a free one behind it.
    await pinned_a.send(audio_chunk_frame(a_session, 0, is_final=True))
    await pinned_b.send(audio_chunk_frame(b_session, 0, is_final=True))
    await node_a.recv_type("job_assign")
    job_b = await node_b.recv_type("job_assign")
    await pinned_a.send(audio_chunk_frame(a_session, 1, is_final=True))
    await pinned_a.recv_type("backpressure")
    await free.send(audio_chunk_frame(free_id, 0, is_final=True))
    await free.recv_type("backpressure")
    # B frees a slot: the job pinned to A (first in line) cannot use it; the free one must.
    freed_at = trio.current_time()
    await node_b.send(result_frame(job_b, b_id))
    job = await node_b.recv_type("job_assign")
    assert job["session_id"] == free_id
    assert trio.current_time() - freed_at < 1.0  # at once, not after a pending timeout


def test_redis_server_state_errors_mean_unavailable():
    assert _server_state_error(redis.ResponseError("READONLY You can't write against a replica"))
    assert _server_state_error(redis.ResponseError("NOREPLICAS Not enough good replicas"))
    assert not _server_state_error(redis.ResponseError("WRONGTYPE Operation against a key"))
    # As redis-py parses them: the code picks the class and is cut from the message.
    exceptions = redis.exceptions
    assert _server_state_error(exceptions.ReadOnlyError("You can't write against a replica."))
    assert _server_state_error(exceptions.OutOfMemoryError("command not allowed when used memory"))
    assert _server_state_error(exceptions.ClusterDownError("The cluster is down"))
    assert _server_state_error(exceptions.MasterDownError("Link with MASTER is down"))
    assert _server_state_error(exceptions.TryAgainError("Multiple keys request during rehashing"))
    assert _server_state_error(exceptions.ClusterError("TTL exhausted."))
    assert not _server_state_error(exceptions.NoScriptError("No matching script."))
    request = _Request.__new__(_Request)
    request.value, request.error, request.batch_error = None, None, False
    request.fail(redis.ResponseError("OOM command not allowed"), batch=False)
    with pytest.raises(StoreUnavailable):
        request.outcome()


async def test_peer_errors_do_not_reach_other_sessions(nursery):
    h = await MemoryHarness.start(nursery)
    good = h.session()
    good_id = await h.session_id_for(good, one_way_init("zh", "en"))
    bad = h.session()
    for raw in ["{", '{"type":"session_init"}', orjson.dumps(nested(40)).decode(), "[]"]:
        await bad.send(raw)
        assert (await bad.recv())["type"] == "error"
    await good.send({"type": "client_heartbeat", "session_id": good_id, "timestamp": 1})
    assert (await good.recv())["type"] == "server_heartbeat"


def partial_frame(job: dict, node_id: str, text: str, is_final: bool = False) -> dict:
    return {"type": "asr_partial", "job_id": job["job_id"], "node_id": node_id,
            "session_id": job["session_id"], "utterance_index": job["utterance_index"],
            "text": text, "is_final": is_final, "trace_id": job["trace_id"]}


async def frames_until_result(client) -> list[dict]:
    frames = []
    while (frame := await client.recv())["type"] != "translation_result":
        frames.append(frame)
    return frames


async def test_oversized_asr_partial_is_refused_and_the_job_goes_on(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, nodes={"max_partial_chars": 10})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(partial_frame(job, node_id, "x" * 11))
    error = await node.recv_type("error")
    assert (error["code"], error["details"]) == ("INVALID_MESSAGE", {"field": "text"})
    await node.send(partial_frame(job, node_id, "x" * 10))
    await node.send(result_frame(job, node_id))
    partials = [f for f in await frames_until_result(client) if f["type"] == "asr_partial"]
    assert [p["text"] for p in partials] == ["x" * 10]
    assert h.scheduler.dispatcher.counters["asr_partials_refused"] == 1


async def test_asr_partial_flood_is_cut_to_the_rate_and_results_still_arrive(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery, nodes={"max_partials_per_s": 5.0})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    for i in range(200):  # all at one instant
        await node.send(partial_frame(job, node_id, f"p{i}"))
    await node.send(result_frame(job, node_id))
    frames = await frames_until_result(client)
    assert [f["text"] for f in frames if f["type"] == "asr_partial"] == [f"p{i}" for i in range(5)]
    assert (await node.recv_type("error"))["code"] == "RATE_LIMITED"
    assert h.scheduler.dispatcher.counters["asr_partials_dropped"] == 195

    # A second later the bucket has refilled: the next utterance's partials flow again.
    await trio.sleep(1)
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(partial_frame(job, node_id, "again"))
    await node.send(result_frame(job, node_id))
    frames = await frames_until_result(client)
    assert [f["text"] for f in frames if f["type"] == "asr_partial"] == ["again"]
