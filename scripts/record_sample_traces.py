"""Record the sample traces shipped in tests/data/ (run again after a protocol change).

    python scripts/record_sample_traces.py [--out tests/data]

Each scenario runs the real scheduler over in-memory sockets under Trio's MockClock (so
a 30 s job timeout costs nothing) with trace recording on, and scripted browsers and nodes:

* ``two_way_basic.jsonl``: one two_way_auto session, one node; results, a silence, a
  pause-cut utterance.
* ``busy_and_failures.jsonl``: three sessions, two single-slot nodes; waiting for
  capacity, a node error, a job the node never answers (job timeout), no node for a pair.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import structlog
import trio
import trio.testing

from trio_scheduler.config import Config, with_overrides
from trio_scheduler.server import Scheduler
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
    session_init_frame,
)
from trio_scheduler.simulate.memory_socket import memory_websocket_pair
from trio_scheduler.simulate.peer import Peer
from trio_scheduler.store import MemoryStore


async def run_scenario(path: Path, scenario) -> None:
    path.unlink(missing_ok=True)
    config = with_overrides(Config(), trace={"path": str(path)})
    scheduler = Scheduler.build(config, MemoryStore())
    async with scheduler.background_tasks(), trio.open_nursery() as nursery:

        def connect(handler) -> Peer:
            server_ws, client_ws = memory_websocket_pair()

            async def serve() -> None:
                try:
                    await handler(server_ws)
                finally:
                    await server_ws.aclose()

            nursery.start_soon(serve)
            return Peer(client_ws)

        async def node(languages, capacity, behaviour):
            peer = connect(scheduler.node_socket)
            await peer.send(register_frame(languages, max_concurrent_jobs=capacity))
            node_id = (await peer.recv())["node_id"]
            await peer.send(heartbeat_frame(node_id, languages))

            async def serve_jobs():
                async for job in peer.frames("job_assign"):
                    nursery.start_soon(behaviour, peer, node_id, job)

            async def heartbeats():
                while True:
                    await trio.sleep(15)
                    await peer.send(heartbeat_frame(node_id, languages))

            nursery.start_soon(serve_jobs)
            nursery.start_soon(heartbeats)
            await scheduler.publisher.wait_until(lambda s: node_id in s.nodes
                                                 and s.nodes[node_id].schedulable)
            return peer

        def session():
            return connect(scheduler.session_socket)

        await scenario(node, session)
        await trio.sleep(40)  # every outcome is in
        nursery.cancel_scope.cancel()


async def answer(peer, node_id, job, delay=0.4, **overrides):
    await peer.send({"type": "job_ack", "job_id": job["job_id"], "attempt_id": job["attempt_id"],
                     "node_id": node_id, "session_id": job["session_id"],
                     "trace_id": job["trace_id"]})
    await trio.sleep(delay)
    await peer.send(result_frame(job, node_id, **overrides))


async def speak(client, session_id, start_seq, chunks, *, final=True):
    seq = start_seq
    for _ in range(chunks):
        await client.send(audio_chunk_frame(session_id, seq))
        seq += 1
        await trio.sleep(0.256)
    if final:
        await client.send(audio_chunk_frame(session_id, seq, is_final=True, payload=""))
        seq += 1
    return seq


async def two_way_basic(node, session):
    async def behaviour(peer, node_id, job):
        if job["utterance_index"] == 2:
            await answer(peer, node_id, job, text_asr="", text_translated="", tts_audio="",
                         extra={"reason": "ASR_EMPTY"})
        else:
            await answer(peer, node_id, job)

    await node(["zh", "en"], 2, behaviour)
    client = session()
    await client.send(session_init_frame())
    session_id = (await client.recv())["session_id"]
    seq = await speak(client, session_id, 0, 6)
    seq = await speak(client, session_id, seq, 5)
    await trio.sleep(1)
    seq = await speak(client, session_id, seq, 3)
    seq = await speak(client, session_id, seq, 8, final=False)  # cut by the pause
    await trio.sleep(5)
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})


async def busy_and_failures(node, session):
    async def behaviour(peer, node_id, job):
        index = job["utterance_index"]
        if index == 1 and job["src_lang"] == "zh":
            await answer(peer, node_id, job, success=False,
                         error={"code": "PROCESSING_ERROR", "message": "model crashed"})
        elif index == 2 and job["src_lang"] == "en":
            return  # never answered: the job times out
        else:
            await answer(peer, node_id, job, delay=0.8)

    await node(["zh", "en"], 1, behaviour)
    await node(["zh", "en"], 1, behaviour)

    async def user(init, utterances):
        client = session()
        await client.send(init)
        session_id = (await client.recv())["session_id"]
        seq = 0
        for _ in range(utterances):
            seq = await speak(client, session_id, seq, 3)
            await trio.sleep(0.3)

    async with trio.open_nursery() as users:
        users.start_soon(user, one_way_init("zh", "en"), 3)
        users.start_soon(user, one_way_init("en", "zh"), 3)
        users.start_soon(user, one_way_init("zh", "en"), 2)
        users.start_soon(user, one_way_init("ko", "en"), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "tests/data")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, scenario in (("two_way_basic", two_way_basic),
                           ("busy_and_failures", busy_and_failures)):
        path = args.out / f"{name}.jsonl"
        trio.run(run_scenario, path, scenario,
                 clock=trio.testing.MockClock(autojump_threshold=0))
        print(f"{path}: {sum(1 for _ in open(path))} frames")


if __name__ == "__main__":
    main()
