"""The store recovers whole: after a real redis-server restart (all data lost), the node
mirror is complete again within one instance heartbeat, the slots of jobs in flight are
taken again, and new utterances succeed."""

from __future__ import annotations

import trio

from conftest import RunningServer, make_config
from real_peers import WIRE_BOUND_S, make_ready, outcome_frames
from trio_scheduler.server import serve
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame
from trio_scheduler.simulate.peer import connect




async def test_a_redis_restart_is_repaired_within_one_heartbeat(nursery, own_redis):
    config = make_config(store={"redis_url": own_redis.url},
                         cluster={"instance_heartbeat_s": 0.3, "instance_timeout_s": 1.5})
    server = RunningServer(await nursery.start(serve, config))
    store, cluster = server.scheduler.store, server.scheduler.cluster
    async with connect(server.node_url) as node, connect(server.session_url) as client:
        node_id = await make_ready(node, server.scheduler)
        with trio.fail_after(WIRE_BOUND_S):
            await cluster.beaten()
        assert (await store.get_node(node_id))["status"] == "ready"
        await client.send(one_way_init("zh", "en"))
        session_id = (await client.recv_type("session_init_ack"))["session_id"]
        await client.send(audio_chunk_frame(session_id, 0, is_final=True))
        with trio.fail_after(WIRE_BOUND_S):
            in_flight = await node.recv_type("job_assign")
        assert await store.in_use(node_id, 0) == 1

        await trio.to_thread.run_sync(own_redis.restart)
        back = trio.current_time()
        with trio.fail_after(WIRE_BOUND_S):
            while not cluster.store_resets:  # the first beat that reaches the new Redis
                await cluster.beaten()
        # Within one heartbeat (0.3 s) of Redis being back, plus a busy machine's slack:
        assert trio.current_time() - back < 0.3 + 1.0
        assert (await store.get_node(node_id))["status"] == "ready"  # the mirror is whole
        assert await store.in_use(node_id, 0) == 1  # the slot in flight is held again
        assert await store.live_instances() != {}

        await node.send(result_frame(in_flight, node_id))
        assert (await outcome_frames(client))[-1]["type"] == "translation_result"
        await client.send(audio_chunk_frame(session_id, 1, is_final=True))
        with trio.fail_after(WIRE_BOUND_S):
            job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
        frames = await outcome_frames(client)
        assert frames[-1]["type"] == "translation_result"
        assert frames[-1]["utterance_index"] == 1
