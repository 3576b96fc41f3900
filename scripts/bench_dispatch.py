"""Scheduler hot path per utterance: dispatch latency, CPU, store round trips.

    python scripts/bench_dispatch.py [--sessions 100] [--nodes 10] [--utterances 20]
                                     [--redis-url redis://127.0.0.1:PORT/0]

Runs the real scheduler parts (session tasks, node tasks, owner, dispatcher, store) in this
process over in-memory sockets, so the numbers are the scheduler's own work without kernel
networking. Each simulated browser sends one 260 ms Plan A chunk plus ``is_final`` per
utterance and waits for its ``translation_result``; each simulated node answers every
``job_assign`` at once. Reports:

* ``dispatch``: ``is_final`` sent → ``job_assign`` received by the node (p50/p99, ms);
* ``round trip``: ``is_final`` sent → ``translation_result`` received (p50/p99, ms);
* ``cpu/utt``: process CPU per utterance (µs), simulated peers included;
* ``store ops/utt``: store commands per utterance (Redis only: pipelined commands counted by
  the bridge; the mirror of node state adds a few at start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import time

import trio

from trio_scheduler.config import Config, with_overrides
from trio_scheduler.server import Scheduler
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.memory_socket import memory_websocket_pair
from trio_scheduler.simulate.peer import Peer
from trio_scheduler.store import MemoryStore
from trio_scheduler.simulate.script import reachability_explained
from trio_scheduler.store.redis import open_redis_store

REDIS_WAIT_S = 5.0  # how long --redis-url gets to answer before the script gives up


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def open_bench_store(redis_url: str | None):
    if redis_url is None:
        yield MemoryStore()
        return
    async with open_redis_store(redis_url, key_prefix=f"bench:{secrets.token_hex(4)}:",
                                startup_wait_s=REDIS_WAIT_S) as store:
        yield store


async def run(args: argparse.Namespace) -> dict:
    config = with_overrides(Config(), nodes={"default_max_concurrent_jobs": args.capacity})
    dispatch_ms: list[float] = []
    round_trip_ms: list[float] = []
    final_sent_at: dict[str, float] = {}  # session_id -> perf_counter at is_final
    async with open_bench_store(args.redis_url) as store:
        scheduler = Scheduler.build(config, store)
        async with scheduler.background_tasks(), trio.open_nursery() as nursery:

            def connect(handler) -> Peer:
                server_ws, client_ws = memory_websocket_pair()
                nursery.start_soon(handler, server_ws)
                return Peer(client_ws)

            async def node_loop(peer: Peer, node_id: str) -> None:
                async for job in peer.frames("job_assign"):
                    dispatch_ms.append((time.perf_counter() - final_sent_at[job["session_id"]]) * 1e3)
                    await peer.send(result_frame(job, node_id))

            for _ in range(args.nodes):
                peer = connect(scheduler.node_socket)
                await peer.send(register_frame(["zh", "en"]))
                node_id = (await peer.recv())["node_id"]
                await peer.send(heartbeat_frame(node_id, ["zh", "en"]))
                nursery.start_soon(node_loop, peer, node_id)
            await scheduler.publisher.wait_until(
                lambda s: len(s.pools.get("zh:en", ())) == args.nodes
            )
            ops_before = getattr(store, "requests", 0)
            cpu_before, wall_before = time.process_time(), time.perf_counter()

            async def session(index: int) -> None:
                peer = connect(scheduler.session_socket)
                await peer.send(one_way_init("zh", "en"))
                session_id = (await peer.recv())["session_id"]
                for seq in range(args.utterances):
                    await peer.send(audio_chunk_frame(session_id, 2 * seq))
                    final_sent_at[session_id] = time.perf_counter()
                    await peer.send(audio_chunk_frame(session_id, 2 * seq + 1, is_final=True,
                                                      payload=""))
                    await peer.recv_type("translation_result")
                    round_trip_ms.append((time.perf_counter() - final_sent_at[session_id]) * 1e3)
                await peer.ws.aclose()

            async with trio.open_nursery() as sessions:
                for index in range(args.sessions):
                    sessions.start_soon(session, index)
            cpu = time.process_time() - cpu_before
            wall = time.perf_counter() - wall_before
            ops = getattr(store, "requests", 0) - ops_before
            nursery.cancel_scope.cancel()
    utterances = len(round_trip_ms)
    return {
        "store": "redis" if args.redis_url else "memory",
        "sessions": args.sessions,
        "nodes": args.nodes,
        "utterances": utterances,
        "utt_per_s": utterances / wall,
        "dispatch_p50_ms": percentile(dispatch_ms, 0.5),
        "dispatch_p99_ms": percentile(dispatch_ms, 0.99),
        "round_trip_p50_ms": percentile(round_trip_ms, 0.5),
        "round_trip_p99_ms": percentile(round_trip_ms, 0.99),
        "cpu_us_per_utt": cpu / utterances * 1e6,
        "store_ops_per_utt": ops / utterances if args.redis_url else None,
        "mean_dispatch_ms": statistics.fmean(dispatch_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=16, help="max_concurrent_jobs per node")
    parser.add_argument("--utterances", type=int, default=20, help="per session")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    import structlog, logging  # noqa: E401

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with reachability_explained("bench_dispatch"):
        report = trio.run(run, args)
    for key, value in report.items():
        print(f"{key:>20}: {value:.3f}" if isinstance(value, float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
