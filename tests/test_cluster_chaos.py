"""Chaos across instances: three scheduler processes on one redis-server, nodes and
sessions spread over them, one instance killed without warning (SIGKILL) mid-stream.

Nodes behave like the real agent: they answer after a while, refuse a job id they have
seen before, and reconnect to another instance (same ``node_id``) after their socket
drops. At the end, for every session on a surviving instance: exactly one outcome per
utterance, in order; no result delivered twice; no slot left in the store by a surviving
instance; no node given more jobs than its capacity.
"""

from __future__ import annotations

import collections
import contextlib
import random

import attrs
import pytest
import redis
import trio
import trio_websocket

from instances import start_instance, write_config
from redis_server import free_port
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import CannotConnect, connect

SEEDS = [7, 8]
INSTANCES = 3
NODES = 4
SESSIONS = 9
UTTERANCES = 6
RUN_BOUND_S = 60


@attrs.define
class Chaos:
    urls: list[str]
    dead: set[int] = attrs.Factory(set)
    results: collections.Counter[str] = attrs.Factory(collections.Counter)
    overcommits: list[str] = attrs.Factory(list)
    outcomes: dict[str, list[tuple[int, str]]] = attrs.Factory(dict)  # session -> outcomes
    home: dict[str, int] = attrs.Factory(dict)  # session -> its instance


async def run_node(chaos: Chaos, name: str, first: int, capacity: int, rng: random.Random,
                   *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A node agent: serves jobs, and after its socket drops reconnects elsewhere."""
    node_id, instance, seen = None, first, set()
    started = False
    while True:
        running: set[str] = set()
        try:
            async with connect(f"{chaos.urls[instance]}/ws/node") as node:
                await node.send(register_frame(node_id=node_id, max_concurrent_jobs=capacity))
                node_id = (await node.recv_type("node_register_ack"))["node_id"]
                await node.send(heartbeat_frame(node_id))
                if not started:
                    started = True
                    task_status.started(node_id)
                async with trio.open_nursery() as answers:

                    async def answer(job, node=node):
                        await trio.sleep(rng.uniform(0.05, 0.3))  # processing time
                        running.discard(job["job_id"])
                        with contextlib.suppress(trio_websocket.ConnectionClosed):
                            await node.send(result_frame(job, node_id))

                    async for frame in node.frames():
                        if frame["type"] == "job_cancel":
                            running.discard(frame["job_id"])
                        if frame["type"] != "job_assign":
                            continue
                        if frame["job_id"] in seen:  # the real agent refuses a repeat
                            await node.send(result_frame(frame, node_id, success=False,
                                                         error={"code": "DUPLICATE_JOB_ID",
                                                                "message": "seen"}))
                            continue
                        seen.add(frame["job_id"])
                        if len(running) >= capacity:
                            chaos.overcommits.append(f"{name}: {frame['job_id']}")
                        running.add(frame["job_id"])
                        answers.start_soon(answer, frame)
                    answers.cancel_scope.cancel()
        except* (trio_websocket.ConnectionClosed, CannotConnect):
            pass
        await trio.sleep(0.5)  # the agent reconnects after a while, to another instance
        instance = next(i for i in range(instance + 1, instance + 1 + INSTANCES)
                        if i % INSTANCES not in chaos.dead) % INSTANCES


async def run_session(chaos: Chaos, name: str, instance: int, rng: random.Random) -> None:
    try:
        async with connect(f"{chaos.urls[instance]}/ws/session") as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            chaos.home[session_id] = instance
            outcomes = chaos.outcomes[session_id] = []

            async def speak():
                for seq in range(UTTERANCES):
                    await client.send(audio_chunk_frame(session_id, seq, is_final=True))
                    await trio.sleep(rng.uniform(0.1, 0.5))  # the speaker's pace

            async with trio.open_nursery() as talking:
                talking.start_soon(speak)
                async for frame in client.frames():
                    if frame["type"] == "translation_result":
                        chaos.results[frame["job_id"]] += 1
                    if frame["type"] in ("translation_result", "missing_result"):
                        outcomes.append((frame["utterance_index"], frame["type"]))
                        if len(outcomes) == UTTERANCES:
                            break
    except* (trio_websocket.ConnectionClosed, CannotConnect):
        pass  # its instance died: the browser would reconnect with a new session


@pytest.mark.parametrize("seed", SEEDS)
async def test_chaos_with_an_instance_killed_mid_stream(tmp_path, redis_url, seed):
    config = write_config(tmp_path / "scheduler.toml", {
        "server": {"host": "127.0.0.1", "drain_grace_s": 0.0},
        "store": {"redis_url": redis_url},
        "cluster": {"instance_heartbeat_s": 0.2, "instance_timeout_s": 1.0},
        "jobs": {"timeout_ms": 4000, "pending_timeout_ms": 4000, "no_node_wait_ms": 3000},
        "results": {"gap_timeout_ms": 6000},
    })
    ports = [free_port() for _ in range(INSTANCES)]
    processes = []
    try:
        for port in ports:
            processes.append(await trio.to_thread.run_sync(start_instance, config, port))
        chaos = Chaos([f"ws://127.0.0.1:{port}" for port in ports])
        master = random.Random(seed)
        with trio.fail_after(RUN_BOUND_S):
            async with trio.open_nursery() as world:
                for i in range(NODES):
                    await world.start(run_node, chaos, f"node{i}", i % INSTANCES,
                                      master.choice([1, 2]), random.Random(f"{seed}/{i}"))
                async with trio.open_nursery() as browsers:
                    for i in range(SESSIONS):
                        browsers.start_soon(run_session, chaos, f"s{i}", i % INSTANCES,
                                            random.Random(f"{seed}/s{i}"))
                    await trio.sleep(master.uniform(1.0, 2.0))  # mid-stream
                    chaos.dead.add(0)
                    processes[0].kill()
                world.cancel_scope.cancel()
        surviving = [s for s, home in chaos.home.items() if home not in chaos.dead]
        kinds = collections.Counter(kind for s in surviving for _, kind in chaos.outcomes[s])
        print(f"seed {seed}: outcomes of surviving sessions {dict(kinds)}")
        assert len(surviving) == SESSIONS * 2 // 3
        for session_id in surviving:
            indexes = [index for index, _ in chaos.outcomes[session_id]]
            assert indexes == list(range(UTTERANCES)), (session_id, chaos.outcomes[session_id])
        assert [job for job, count in chaos.results.items() if count > 1] == []
        assert chaos.overcommits == []
        # Every slot a surviving instance took was given back (the dead one's expire).
        living = {p.instance_id for p in processes[1:]}
        for process in processes[1:]:
            for session_id in surviving:
                if chaos.home[session_id] == processes.index(process):
                    process.wait_for("session ended", session_id=session_id, timeout=10)
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            for _ in range(50):  # the last releases leave each instance's queue just now
                held = [m for key in client.scan_iter("ts:{node:*}:res")
                        for m in client.zrange(key, 0, -1)
                        if m.rsplit("@", 1)[-1] in living]
                if not held:
                    break
                await trio.sleep(0.1)
            assert held == []
    finally:
        for process in processes:
            process.kill()
