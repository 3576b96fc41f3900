"""Every accepted utterance ends in exactly one outcome; every slot taken comes back."""

from __future__ import annotations

import contextlib

import trio
import trio.testing
import trio_websocket

from harness import MemoryHarness
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame


async def one_job(h: MemoryHarness, client, session_id: str, index: int, node):
    await client.send(audio_chunk_frame(session_id, index, is_final=True))
    return await node.recv_type("job_assign")


async def error_event(client) -> dict:
    """The next ``ui_event`` ERROR the client gets (skipping DISPATCHED and the like)."""
    while (event := await client.recv_type("ui_event"))["event"] != "ERROR":
        pass
    return event


async def reservations(h: MemoryHarness, *node_ids: str) -> list[int]:
    return [await h.scheduler.store.in_use(n, 0) for n in node_ids]


async def test_failover_keeps_job_id_raises_attempt_and_avoids_lost_node(nursery):
    h = await MemoryHarness.start(nursery)
    node_a, a_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    first = await one_job(h, client, session_id, 0, node_a)
    node_b, b_id = await h.ready_node()
    await node_a.ws.aclose()
    second = await node_b.recv_type("job_assign")
    assert second["job_id"] == first["job_id"]
    assert (first["attempt_id"], second["attempt_id"]) == (1, 2)
    assert second["audio"] == first["audio"] and second["utterance_index"] == 0
    await node_b.send(result_frame(second, b_id))
    result = await client.recv_type("translation_result")
    assert result["job_id"] == first["job_id"]
    await trio.testing.wait_all_tasks_blocked()
    assert await reservations(h, a_id, b_id) == [0, 0]


async def test_failover_exhausted_reports_node_unavailable(nursery):
    h = await MemoryHarness.start(nursery, jobs={"max_attempts": 2})
    assigned_send, assigned = trio.open_memory_channel(10)
    peers = {}
    for _ in range(3):
        peer, node_id = await h.ready_node()
        peers[node_id] = peer

        async def forward(peer=peer, node_id=node_id):
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                while True:
                    await assigned_send.send((node_id, await peer.recv_type("job_assign")))

        nursery.start_soon(forward)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    attempts = []
    for _ in range(2):  # whichever node holds the job drops off
        node_id, job = await assigned.receive()
        attempts.append((node_id, job["attempt_id"]))
        await peers[node_id].ws.aclose()
    event = await error_event(client)
    assert event["error_code"] == "NODE_UNAVAILABLE"
    assert (await client.recv_type("missing_result"))["reason"] == "job_failed"
    assert [attempt for _, attempt in attempts] == [1, 2]
    assert attempts[0][0] != attempts[1][0]
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(0):
        extra = await assigned.receive()  # the third node never got the job
        raise AssertionError(f"job sent a third time: {extra}")


async def test_node_loss_without_other_node_fails_the_job(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await one_job(h, client, session_id, 0, node)
    await node.ws.aclose()
    event = await error_event(client)
    assert event["error_code"] == "NODE_UNAVAILABLE"
    missing = await client.recv_type("missing_result")
    assert missing["utterance_index"] == 0 and missing["reason"] == "job_failed"


async def test_results_from_other_nodes_or_for_other_sessions_are_dropped(nursery):
    h = await MemoryHarness.start(nursery)
    node_a, a_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    job = await one_job(h, client, session_id, 0, node_a)
    node_b, b_id = await h.ready_node()
    counters = h.scheduler.dispatcher.counters
    await node_b.send(result_frame(job, b_id, text_translated="forged"))
    await node_a.send(result_frame(job, a_id, session_id="s-OTHER000"))
    await node_a.send(result_frame(dict(job, job_id="job-unknown"), a_id))
    await node_a.send(result_frame(job, a_id))
    result = await client.recv_type("translation_result")
    assert result["text_translated"] == "utterance 0 translated"
    assert counters["node_frames_foreign"] == 2
    assert counters["node_frames_unknown_job"] == 1


async def test_duplicate_result_is_delivered_once(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    job = await one_job(h, client, session_id, 0, node)
    await node.send(result_frame(job, node_id))
    await node.send(result_frame(job, node_id))
    await client.recv_type("translation_result")
    next_job = await one_job(h, client, session_id, 1, node)
    await node.send(result_frame(next_job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 1
    assert h.scheduler.dispatcher.counters["node_frames_after_end"] == 1


async def test_results_match_by_job_id_not_trace_or_attempt(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    job0 = await one_job(h, client, session_id, 0, node)
    job1 = await one_job(h, client, session_id, 1, node)
    # The agent answers the earlier buffered job with NO_TEXT_ASSIGNED, carrying the
    # current job's trace_id and attempt_id.
    await node.send(result_frame(job0, node_id, trace_id="trace-of-job-1", attempt_id=7,
                                 text_asr="", text_translated="", tts_audio="",
                                 extra={"reason": "NO_TEXT_ASSIGNED"}))
    await node.send(result_frame(job1, node_id))
    missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "silence_detected")
    result = await client.recv_type("translation_result")
    assert result["utterance_index"] == 1 and result["job_id"] == job1["job_id"]


async def test_node_error_result_maps_code_and_reports_missing(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    job = await one_job(h, client, session_id, 0, node)
    await node.send(result_frame(job, node_id, success=False,
                                 error={"code": "PROCESSING_ERROR", "message": "job cancelled"}))
    event = await error_event(client)
    assert (event["error_code"], event["hint"]) == ("INTERNAL_ERROR", "job cancelled")
    assert event["status"] == "error"
    assert (await client.recv_type("missing_result"))["reason"] == "job_failed"
    job1 = await one_job(h, client, session_id, 1, node)
    await node.send(result_frame(job1, node_id, success=False,
                                 error={"code": "NMT_TIMEOUT", "message": "slow"}))
    event = await error_event(client)
    assert event["error_code"] == "NMT_TIMEOUT"


async def test_duplicate_errors_from_the_agent_do_not_loop(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    job = await one_job(h, client, session_id, 0, node)
    await node.send(result_frame(job, node_id, success=False,
                                 error={"code": "DUPLICATE_UTTERANCE_INDEX", "message": "dup"}))
    assert (await client.recv_type("missing_result"))["reason"] == "job_failed"
    job1 = await one_job(h, client, session_id, 1, node)
    await node.send(result_frame(job1, node_id, success=False,
                                 error={"code": "DUPLICATE_JOB_ID", "message": "dup"}))
    # Not failed, not re-sent: the node's answer to its first copy may still come.
    await node.send(result_frame(job1, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 1
    # Neither job was ever sent twice.
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    await client.recv_type("server_heartbeat")
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 2


async def test_waiting_queue_bound_fails_at_once(nursery):
    h = await MemoryHarness.start(nursery, jobs={"max_waiting_per_pool": 1})
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    clients = [h.session() for _ in range(3)]
    ids = [await h.session_id_for(c, one_way_init("zh", "en")) for c in clients]
    await one_job(h, clients[0], ids[0], 0, node)
    await clients[1].send(audio_chunk_frame(ids[1], 0, is_final=True))
    await clients[1].recv_type("backpressure")
    await clients[2].send(audio_chunk_frame(ids[2], 0, is_final=True))
    event = await clients[2].recv_type("ui_event")
    assert event["error_code"] == "NODE_OVERLOADED"
    assert (await clients[2].recv_type("missing_result"))["reason"] == "job_failed"


async def test_session_gone_drops_its_waiting_job(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    a, b, c = h.session(), h.session(), h.session()
    sa, sb, sc = [await h.session_id_for(x, one_way_init("zh", "en")) for x in (a, b, c)]
    job_a = await one_job(h, a, sa, 0, node)
    await b.send(audio_chunk_frame(sb, 0, is_final=True))
    await b.recv_type("backpressure")
    await c.send(audio_chunk_frame(sc, 0, is_final=True))
    await c.recv_type("backpressure")
    await b.ws.aclose()  # b's waiting job must not take the slot
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.dispatcher.waiting == 1
    await node.send(result_frame(job_a, node_id))
    job_c = await node.recv_type("job_assign")
    assert job_c["session_id"] == sc


async def test_oldest_waiting_job_goes_first(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    clients = [h.session() for _ in range(4)]
    ids = [await h.session_id_for(c, one_way_init("zh", "en")) for c in clients]
    job = await one_job(h, clients[0], ids[0], 0, node)
    for client, session_id in zip(clients[1:], ids[1:]):
        await client.send(audio_chunk_frame(session_id, 0, is_final=True))
        await client.recv_type("backpressure")
    order = []
    for _ in range(3):
        await node.send(result_frame(job, node_id))
        job = await node.recv_type("job_assign")
        order.append(job["session_id"])
    assert order == ids[1:]
