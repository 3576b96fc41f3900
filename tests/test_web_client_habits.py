"""The real web client's own sequences over real sockets, on both stores: its silence
bursts cost nothing, and a node lost mid-stream costs at most one alert."""

from __future__ import annotations

import trio

from real_peers import WIRE_BOUND_S, make_ready, outcome_frames, wait_for_node_status
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    result_frame,
    silent_chunk_payload,
)
from trio_scheduler.simulate.peer import connect


async def speak(client, session_id: str, seq: int) -> int:
    """Three speech chunks and an ``is_final``, as the client sends an utterance."""
    for offset in range(3):
        await client.send(audio_chunk_frame(session_id, seq + offset))
    await client.send(audio_chunk_frame(session_id, seq + 3, is_final=True, payload=""))
    return seq + 4


async def answer_next_job(node, node_id: str) -> dict:
    with trio.fail_after(WIRE_BOUND_S):
        job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    return job


async def test_silence_bursts_make_no_job_and_no_frame(start_server):
    server = await start_server()
    async with connect(server.node_url) as node, connect(server.session_url) as client:
        node_id = await make_ready(node, server.scheduler)
        await client.send(one_way_init("zh", "en"))
        session_id = (await client.recv_type("session_init_ack"))["session_id"]
        seq = await speak(client, session_id, 0)
        assert (await answer_next_job(node, node_id))["utterance_index"] == 0
        assert (await outcome_frames(client))[-1]["type"] == "translation_result"

        for _ in range(6):  # one 130-byte chunk of 13 silent packets + is_final, 6 times
            await client.send(audio_chunk_frame(session_id, seq, payload=silent_chunk_payload()))
            await client.send(audio_chunk_frame(session_id, seq + 1, is_final=True, payload=""))
            seq += 2
        await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
        with trio.fail_after(WIRE_BOUND_S):
            assert (await client.recv())["type"] == "server_heartbeat"  # nothing before it

        await speak(client, session_id, seq)
        job = await answer_next_job(node, node_id)
        assert job["utterance_index"] == 1  # no job, and no index, for the bursts
        assert (await outcome_frames(client))[-1]["utterance_index"] == 1


async def test_a_node_lost_mid_stream_costs_at_most_one_alert(start_server):
    server = await start_server(jobs={"no_node_wait_ms": 500})
    async with connect(server.session_url) as client:
        async with connect(server.node_url) as node:
            node_id = await make_ready(node, server.scheduler)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            seq = await speak(client, session_id, 0)
            await answer_next_job(node, node_id)
            frames = await outcome_frames(client)
        await wait_for_node_status(server.scheduler, node_id, None)  # the node is gone

        for _ in range(3):  # the stream goes on; nobody can serve it
            seq = await speak(client, session_id, seq)
        for _ in range(3):
            frames += await outcome_frames(client)
        outcomes = [f for f in frames if f["type"] in ("translation_result", "missing_result")]
        assert [f["utterance_index"] for f in outcomes] == [0, 1, 2, 3]
        assert [f.get("reason") for f in outcomes[1:]] == ["job_failed"] * 3
        assert [f["code"] for f in frames if f["type"] == "error"] == ["NO_AVAILABLE_NODE"]
        assert not [f for f in frames
                    if f["type"] == "backpressure" and f["action"] != "PAUSE"]

        async with connect(server.node_url) as node:  # it comes back: the stream goes on
            node_id = await make_ready(node, server.scheduler, node_id=node_id)
            await speak(client, session_id, seq)
            assert (await answer_next_job(node, node_id))["utterance_index"] == 4
            frames = await outcome_frames(client)
            assert frames[-1]["type"] == "translation_result"
            assert [f for f in frames if f["type"] == "error"] == []
