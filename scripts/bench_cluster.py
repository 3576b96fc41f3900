"""The cross-instance hop: what a node on another instance adds to a job.

    python scripts/bench_cluster.py --redis-url redis://127.0.0.1:PORT/0 [--jobs 500]
                                    [--sessions 10]

Two scheduler instances run in this process on real sockets, sharing the Redis at
``--redis-url`` (use a private redis-server: the benchmark writes keys under a fresh
prefix and leaves them to expire). Two runs, one after the other, with the same offered
load: ``--sessions`` browsers on instance A, each sending utterances one after another
(a 260 ms chunk with ``is_final``, the next once its result is in), and one node that
answers every job at once — connected to A ("local") or to B ("remote"). The hangover is
set to 0, so the dispatch latency is the scheduler's own:

* ``dispatch``: ``is_final`` sent by the browser → ``job_assign`` received by the node;
* ``round trip``: ``is_final`` sent → ``translation_result`` received;
* ``cpu/job``: this process's CPU per job (both instances, and the simulated peers);
* ``redis cmds/job``: Redis commands per job (``INFO stats`` before and after; the
  instances' heartbeats during the run included).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import redis
import trio

from trio_scheduler.config import Config, with_overrides
from trio_scheduler.logs import configure_logging
from trio_scheduler.server import serve
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import connect
from trio_scheduler.simulate.script import reachability_explained


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def config_for(redis_url: str, prefix: str) -> Config:
    return with_overrides(
        Config(),
        server={"host": "127.0.0.1", "port": 0},
        store={"redis_url": redis_url, "key_prefix": prefix},
        segmentation={"hangover_manual_ms": 0},
        sessions={"max_messages_per_s": 10_000.0},  # a closed loop outpaces a browser
    )


async def one_run(where: str, redis_url: str, sessions: int, jobs: int) -> dict:
    prefix = f"bench:{secrets.token_hex(4)}:"
    config = config_for(redis_url, prefix)
    dispatch, round_trip = [], []
    async with trio.open_nursery() as nursery:
        a = await nursery.start(serve, config)
        b = await nursery.start(serve, config)
        node_at = b if where == "remote" else a
        received: dict[str, float] = {}

        async def node_task(*, task_status):
            async with connect(f"ws://127.0.0.1:{node_at.port}/ws/node") as node:
                await node.send(register_frame(max_concurrent_jobs=256))
                node_id = (await node.recv_type("node_register_ack"))["node_id"]
                await node.send(heartbeat_frame(node_id))
                task_status.started(node_id)
                async for job in node.frames("job_assign"):
                    received[job["job_id"]] = trio.current_time()
                    await node.send(result_frame(job, node_id))

        node_id = await nursery.start(node_task)

        def ready(snapshot) -> bool:
            view = snapshot.nodes.get(node_id)
            return view is not None and view.schedulable

        with trio.fail_after(10):
            await a.publisher.wait_until(ready)
        per_session = jobs // sessions
        with redis.Redis.from_url(redis_url) as client:
            commands_before = client.info("stats")["total_commands_processed"]
        cpu_before, wall_before = time.process_time(), time.perf_counter()

        async def browser() -> None:
            async with connect(f"ws://127.0.0.1:{a.port}/ws/session") as client:
                await client.send(one_way_init("zh", "en"))
                session_id = (await client.recv_type("session_init_ack"))["session_id"]
                for seq in range(per_session):
                    sent = trio.current_time()
                    await client.send(audio_chunk_frame(session_id, seq, is_final=True))
                    result = await client.recv_type("translation_result")
                    round_trip.append(trio.current_time() - sent)
                    dispatch.append(received.pop(result["job_id"]) - sent)

        async with trio.open_nursery() as browsers:
            for _ in range(sessions):
                browsers.start_soon(browser)
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        with redis.Redis.from_url(redis_url) as client:
            commands = client.info("stats")["total_commands_processed"] - commands_before
        nursery.cancel_scope.cancel()
    done = len(dispatch)
    return {
        "where": where,
        "jobs": done,
        "jobs_per_s": done / wall,
        "dispatch_p50_ms": statistics.median(dispatch) * 1000,
        "dispatch_p99_ms": percentile(dispatch, 0.99) * 1000,
        "round_trip_p50_ms": statistics.median(round_trip) * 1000,
        "round_trip_p99_ms": percentile(round_trip, 0.99) * 1000,
        "cpu_us_per_job": cpu / done * 1e6,
        "redis_commands_per_job": commands / done,
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("console", "warning")
    rows = [await one_run(where, args.redis_url, args.sessions, args.jobs)
            for where in ("local", "remote")]
    print(f"{args.sessions} sessions on instance A, {args.jobs} jobs per run, "
          f"one node answering at once")
    print("| node | jobs/s | dispatch p50 / p99 ms | round trip p50 / p99 ms | CPU µs/job "
          "| Redis cmds/job |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['where']} | {row['jobs_per_s']:.0f} | {row['dispatch_p50_ms']:.2f} / "
              f"{row['dispatch_p99_ms']:.2f} | {row['round_trip_p50_ms']:.2f} / "
              f"{row['round_trip_p99_ms']:.2f} | {row['cpu_us_per_job']:.0f} | "
              f"{row['redis_commands_per_job']:.1f} |")
    local, remote = rows
    print(f"added by the hop: dispatch p50 {remote['dispatch_p50_ms'] - local['dispatch_p50_ms']:+.2f} ms, "
          f"p99 {remote['dispatch_p99_ms'] - local['dispatch_p99_ms']:+.2f} ms, "
          f"CPU {remote['cpu_us_per_job'] - local['cpu_us_per_job']:+.0f} µs/job, "
          f"Redis {remote['redis_commands_per_job'] - local['redis_commands_per_job']:+.1f} cmds/job")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True, help="a private redis-server")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=10)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    with reachability_explained("bench_cluster"):
        trio.run(main, arguments)
