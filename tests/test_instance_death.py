"""An instance dies without a goodbye (SIGKILL): the others drop its nodes within
``[cluster] instance_timeout_s``, their jobs fail over, and its nodes reconnect to a
survivor and work again. Instances are real processes on one real redis-server."""

from __future__ import annotations

import pytest
import redis
import trio

from instances import start_instance, write_config
from real_peers import outcome_frames
from redis_server import free_port
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import connect

INSTANCE_TIMEOUT_S = 1.0


@pytest.fixture
def cluster_config(tmp_path, redis_url):
    return write_config(tmp_path / "scheduler.toml", {
        "server": {"host": "127.0.0.1", "drain_grace_s": 0.0},
        "store": {"redis_url": redis_url},
        "cluster": {"instance_heartbeat_s": 0.2, "instance_timeout_s": INSTANCE_TIMEOUT_S},
        "jobs": {"timeout_ms": 10000},
    })


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:
        process.kill()


async def start(config, processes) -> str:
    """Start one instance; its ws:// base URL."""
    port = free_port()
    processes.append(await trio.to_thread.run_sync(start_instance, config, port))
    return f"ws://127.0.0.1:{port}"


async def ready_node(node, **register) -> str:
    """Register and heartbeat; the node is ready once the scheduler says so (an ack to a
    heartbeat does not exist, so readiness is seen through the first job)."""
    await node.send(register_frame(**register))
    node_id = (await node.recv_type("node_register_ack"))["node_id"]
    await node.send(heartbeat_frame(node_id))
    return node_id


async def test_a_dead_instances_jobs_fail_over_and_its_node_comes_back(
    cluster_config, processes
):
    a = await start(cluster_config, processes)
    b = await start(cluster_config, processes)
    with trio.fail_after(30):
        async with connect(f"{b}/ws/session") as client:
            async with connect(f"{a}/ws/node") as doomed:
                doomed_id = await ready_node(doomed, max_concurrent_jobs=1)
                await client.send(one_way_init("zh", "en"))
                session_id = (await client.recv_type("session_init_ack"))["session_id"]
                job = None
                while job is None:  # until B sees A's node ready and sends it the job
                    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
                    frames = []
                    with trio.move_on_after(1):
                        job = await doomed.recv_type("job_assign")
                    if job is None:  # it failed for want of a node: drain its outcome
                        frames = await outcome_frames(client)
                        assert frames[-1]["type"] == "missing_result", frames
                index = job["utterance_index"]
                async with connect(f"{b}/ws/node") as spare:
                    spare_id = await ready_node(spare)
                    processes[0].kill()  # A dies with the job on its node
                    killed = trio.current_time()
                    with trio.fail_after(INSTANCE_TIMEOUT_S + 3):
                        again = await spare.recv_type("job_assign")
                    assert trio.current_time() - killed < INSTANCE_TIMEOUT_S + 2
                    assert (again["job_id"], again["attempt_id"]) == (job["job_id"], 2)
                    await spare.send(result_frame(again, spare_id))
                    frames = await outcome_frames(client)
                    assert frames[-1]["type"] == "translation_result"
                    assert frames[-1]["utterance_index"] == index
        # The node agent reconnects to a survivor with its id, and works again.
        async with connect(f"{b}/ws/node") as back, connect(f"{b}/ws/session") as client:
            assert await ready_node(back, node_id=doomed_id) == doomed_id
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            job = await back.recv_type("job_assign")
            await back.send(result_frame(job, doomed_id))
            assert (await outcome_frames(client))[-1]["type"] == "translation_result"


async def test_a_dead_instances_slots_on_a_survivors_node_come_back_at_once(
    cluster_config, processes, redis_url
):
    a = await start(cluster_config, processes)
    b = await start(cluster_config, processes)
    with trio.fail_after(30):
        async with connect(f"{b}/ws/node") as node, connect(f"{a}/ws/session") as client:
            node_id = await ready_node(node, max_concurrent_jobs=1)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            job = None
            while job is None:  # until A sees B's node and sends it the job
                await client.send(audio_chunk_frame(session_id, 0, is_final=True))
                with trio.move_on_after(1):
                    job = await node.recv_type("job_assign")
                if job is None:
                    await outcome_frames(client)
            processes[0].kill()  # A dies with its session's job on B's node
            cancel = await node.recv_type("job_cancel")  # B stops the orphan...
            assert cancel["job_id"] == job["job_id"]
        # ...and gives its slot back, without waiting for it to expire.
        event = await trio.to_thread.run_sync(
            processes[1].wait_for, "slots of a dead instance given back")
        assert event["slots"] == 1
        with redis.Redis.from_url(redis_url) as store:
            assert store.zcard(f"ts:{{node:{node_id}}}:res") == 0
