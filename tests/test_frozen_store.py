"""A frozen Redis (SIGSTOP) over real sockets: sessions keep answering, and each utterance
fails at the store call deadline with one alert per outage, not after the calls queued
ahead of it."""

from __future__ import annotations


import trio

from conftest import RunningServer, make_config
from real_peers import make_ready, outcome_frames
from trio_scheduler.server import serve
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame
from trio_scheduler.simulate.peer import connect

CALL_TIMEOUT_MS = 300
HANGOVER_S = 0.2  # [segmentation] hangover_manual_ms




async def test_frozen_redis_costs_one_alert_and_no_stall(nursery, own_redis):
    config = make_config(
        store={"redis_url": own_redis.url, "call_timeout_ms": CALL_TIMEOUT_MS}
    )

    server = RunningServer(await nursery.start(serve, config))
    async with connect(server.node_url) as node, connect(server.session_url) as client:
        node_id = await make_ready(node, server.scheduler)
        await client.send(one_way_init("zh", "en"))
        session_id = (await client.recv_type("session_init_ack"))["session_id"]

        own_redis.freeze()
        sent = trio.current_time()
        await client.send(audio_chunk_frame(session_id, 0, is_final=True))
        await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
        with trio.fail_after(1):
            await client.recv_type("server_heartbeat")
        frames = await outcome_frames(client, timeout_s=5)
        failed_after = trio.current_time() - sent
        errors = [f for f in frames if f["type"] == "error"]
        assert [e["code"] for e in errors] == ["SCHEDULER_DEPENDENCY_DOWN"]
        assert frames[-1]["reason"] == "job_failed"
        # The hangover, then one call deadline (and some slack for a busy machine).
        assert HANGOVER_S + CALL_TIMEOUT_MS / 1000 <= failed_after < 2.5

        # Still frozen: the next utterance fails as fast, and without a second alert.
        sent = trio.current_time()
        await client.send(audio_chunk_frame(session_id, 1, is_final=True))
        frames = await outcome_frames(client, timeout_s=5)
        assert [f for f in frames if f["type"] == "error"] == []
        assert frames[-1] == frames[-1] | {"utterance_index": 1, "reason": "job_failed"}
        assert trio.current_time() - sent < 2.5

        own_redis.thaw()
        with trio.fail_after(10):  # the call stuck in Redis returns
            await server.scheduler.store.hop_ended()
        await client.send(audio_chunk_frame(session_id, 2, is_final=True))
        with trio.fail_after(5):
            job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
        frames = await outcome_frames(client, timeout_s=5)
        assert frames[-1]["type"] == "translation_result"
        assert [f for f in frames if f["type"] == "error"] == []
