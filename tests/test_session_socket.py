"""What a browser sees on its socket: init validation, ownership, heartbeats, close."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from harness import MemoryHarness
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    result_frame,
    session_init_frame,
)


@pytest.mark.parametrize(
    ("init", "code", "field"),
    [
        (one_way_init("zh!", "en"), "INVALID_MESSAGE", "src_lang"),
        (one_way_init("zh", "a-very-long-language-tag"), "INVALID_MESSAGE", "tgt_lang"),
        (one_way_init("zh", "auto"), "INVALID_MESSAGE", "tgt_lang"),
        (one_way_init("auto", "en"), "INVALID_MESSAGE", "auto_langs"),
        (session_init_frame(lang_b=None), "INVALID_MESSAGE", "lang_a"),
        (session_init_frame(mode="three_way"), "INVALID_MESSAGE", "mode"),
        (session_init_frame(src_lang=None), "INVALID_MESSAGE", "src_lang"),
        (session_init_frame(pairing_code="123456"), "INVALID_PAIRING_CODE", None),
    ],
)
async def test_rejected_session_init(nursery, init, code, field):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    await client.send(init)
    reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] == code
    assert reply["message"]
    if field:
        assert reply["details"] == {"field": field}
    assert h.scheduler.sessions.sessions == {}
    # No session was made, and the socket still accepts a valid init.
    await client.send(one_way_init("zh", "en"))
    assert (await client.recv())["type"] == "session_init_ack"


async def test_languages_compare_case_insensitively(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("ZH", "En"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    assert (job["src_lang"], job["tgt_lang"]) == ("zh", "en")


async def test_client_trace_id_kept_or_generated(nursery):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    await client.send(one_way_init("zh", "en", trace_id=None))
    ack = await client.recv()
    assert len(ack["trace_id"]) == 36 and ack["trace_id"].count("-") == 4


async def test_second_session_init_on_a_socket_is_refused(nursery):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(one_way_init("en", "zh"))
    reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    assert session_id in reply["message"]
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 5})
    assert (await client.recv())["session_id"] == session_id  # the first session stays


async def test_messages_before_init_and_for_other_sessions(nursery):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    await client.send(audio_chunk_frame("s-00000000", 0))
    early = await client.recv()
    assert early["type"] == "error" and early["code"] == "INVALID_SESSION"
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame("s-DEADBEEF", 0, is_final=True))
    foreign = await client.recv()
    assert foreign["code"] == "INVALID_SESSION" and foreign["details"] == {"field": "session_id"}
    assert session_id != "s-DEADBEEF"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "INVALID_MESSAGE"),
        ('["a list"]', "INVALID_MESSAGE"),
        ('{"no_type": 1}', "INVALID_MESSAGE"),
        ('{"type": "warp_drive"}', "INVALID_MESSAGE"),
        ('{"type": "room_create", "client_ts": 1}', "UNSUPPORTED_FEATURE"),
        ('{"type": "audio_chunk", "session_id": "s-1", "seq": "1", "is_final": false}',
         "INVALID_MESSAGE"),
        (b"\x00\x01binary", "INVALID_MESSAGE"),
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays(nursery, raw, code):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(raw)
    reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] == code and reply["message"]
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    assert (await client.recv())["type"] == "server_heartbeat"


async def test_client_heartbeat_answered_with_server_time(nursery):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({"type": "client_heartbeat", "session_id": session_id,
                       "timestamp": 1795359988466})
    beat = await client.recv()
    assert beat == {"type": "server_heartbeat", "session_id": session_id,
                    "timestamp": beat["timestamp"]}
    assert beat["timestamp"] > 1_700_000_000_000


async def test_undecodable_payload_counts_as_empty(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, payload="%%%not-base64%%%"))
    await client.send(audio_chunk_frame(session_id, 1, is_final=True, payload=""))
    await client.send(audio_chunk_frame(session_id, 2, is_final=True))
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 0  # the empty finalize did not use index 0
    session = h.scheduler.sessions.sessions[session_id]
    assert session.undecodable_payloads == 1


async def test_session_close_drains_then_acks(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0))
    await client.send({"type": "session_close", "session_id": session_id, "reason": "done"})
    job = await node.recv_type("job_assign")
    for flag in ("is_manual_cut", "is_timeout_triggered", "is_max_duration_triggered"):
        assert flag not in job
    assert job["padding_ms"] == 220
    await trio.sleep(1)
    await node.send(result_frame(job, node_id))
    result = await client.recv_type("translation_result", "session_close_ack")
    assert result["type"] == "translation_result"
    ack = await client.recv_type("session_close_ack")
    assert ack == {"type": "session_close_ack", "session_id": session_id}
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.sessions.sessions == {}


async def test_session_close_gives_up_after_drain_timeout(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, sessions={"close_drain_ms": 5000})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    await node.recv_type("job_assign")
    closed_at = trio.current_time()
    await client.send({"type": "session_close", "session_id": session_id, "reason": "done"})
    await client.recv_type("session_close_ack")
    assert 5.0 <= trio.current_time() - closed_at < 5.1
    cancel = await node.recv_type("job_cancel")  # the unfinished job is cancelled
    assert cancel["reason"] == "session closed"


async def test_disconnect_cancels_jobs_and_frees_capacity(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    await client.ws.aclose()
    cancel = await node.recv_type("job_cancel")
    assert cancel["job_id"] == job["job_id"]
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.sessions.sessions == {}
    assert await h.scheduler.store.in_use(node_id, 0) == 0
    # The freed slot serves the next session at once.
    other = h.session()
    other_id = await h.session_id_for(other, one_way_init("zh", "en"))
    await other.send(audio_chunk_frame(other_id, 0, is_final=True))
    assert (await node.recv_type("job_assign"))["session_id"] == other_id


async def test_session_sticks_to_its_node(nursery):
    h = await MemoryHarness.start(nursery)
    jobs_send, jobs_receive = trio.open_memory_channel(10)
    peers = {}
    for _ in range(3):
        peer, node_id = await h.ready_node(max_concurrent_jobs=4)
        peers[node_id] = peer

        async def forward(peer=peer, node_id=node_id):
            while True:
                await jobs_send.send((node_id, await peer.recv_type("job_assign")))

        nursery.start_soon(forward)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    served = []
    for index in range(6):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        node_id, job = await jobs_receive.receive()
        served.append(node_id)
        await peers[node_id].send(result_frame(job, node_id))
        assert (await client.recv_type("translation_result"))["utterance_index"] == index
    assert len(set(served)) == 1
