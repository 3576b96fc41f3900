"""Cost of one reserve+release pair through each Store backend, by number of concurrent callers.

    python scripts/bench_store.py                                # MemoryStore only
    python scripts/bench_store.py --redis-url redis://127.0.0.1:PORT/0
    python scripts/bench_store.py --redis-url redis+cluster://127.0.0.1:PORT  # a Redis Cluster

Redis is only measured when ``--redis-url`` is given; nothing is started for you. Keys go
under a fresh ``bench:<random>:`` prefix and every reservation is released, so nothing is
left behind.

Columns, per reserve+release pair (two store calls):

* ``wall``: elapsed time / pairs (inverse throughput of all callers together);
* ``latency``: mean time one caller waited for its pair;
* ``cpu``: ``time.process_time()`` / pairs — CPU of this process, all threads included (the
  worker-thread hops of the Redis bridge), not that of redis-server;
* ``batch``: mean commands per pipeline of the Redis bridge.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator

import trio

from trio_scheduler.simulate.script import reachability_explained
from trio_scheduler.store import MemoryStore, Store, reservation_member
from trio_scheduler.store.redis import RedisStore, open_redis_store

REDIS_WAIT_S = 5.0  # how long --redis-url gets to answer before the script gives up


@contextlib.asynccontextmanager
async def open_backend(name: str, redis_url: str | None) -> AsyncIterator[Store]:
    if name == "memory":
        yield MemoryStore()
    else:
        assert redis_url is not None
        async with open_redis_store(redis_url, key_prefix=f"bench:{secrets.token_hex(4)}:",
                                    startup_wait_s=REDIS_WAIT_S) as store:
            yield store


async def run_pairs(store: Store, callers: int, pairs_per_caller: int) -> float:
    """Run the load; return the summed latency of all pairs (seconds)."""
    latency = 0.0

    async def caller(index: int) -> None:
        nonlocal latency
        node_id = f"node{index % 10}"
        for attempt in range(pairs_per_caller):
            member = reservation_member(f"job{index}", attempt)
            now_ms = int(time.time() * 1000)
            start = time.perf_counter()
            reservation = await store.reserve(node_id, member, 1_000_000, now_ms, now_ms + 60_000)
            released = await store.release(node_id, member)
            latency += time.perf_counter() - start
            assert reservation.granted and released

    async with trio.open_nursery() as nursery:
        for index in range(callers):
            nursery.start_soon(caller, index)
    return latency


async def measure(name: str, redis_url: str | None, callers: int, pairs: int) -> dict[str, object]:
    pairs_per_caller = math.ceil(pairs / callers)
    total = pairs_per_caller * callers
    async with open_backend(name, redis_url) as store:
        await run_pairs(store, callers, max(1, 100 // callers))  # warm up connection, threads
        batches = getattr(store, "batches", 0)
        requests = getattr(store, "requests", 0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        latency = await run_pairs(store, callers, pairs_per_caller)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        batch = None
        if isinstance(store, RedisStore):
            batch = (store.requests - requests) / max(1, store.batches - batches)
    return {
        "backend": name,
        "callers": callers,
        "pairs": total,
        "wall": wall / total * 1e6,
        "latency": latency / total * 1e6,
        "cpu": cpu / total * 1e6,
        "batch": batch,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    header = f"{'backend':<8} {'callers':>7} {'pairs':>6} {'wall µs':>9} {'latency µs':>11} {'cpu µs':>9} {'batch':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        batch = "-" if r["batch"] is None else f"{r['batch']:.1f}"
        print(
            f"{r['backend']:<8} {r['callers']:>7} {r['pairs']:>6} {r['wall']:>9.1f}"
            f" {r['latency']:>11.1f} {r['cpu']:>9.1f} {batch:>6}"
        )


async def main(args: argparse.Namespace) -> None:
    backends = ["memory"] + (["redis"] if args.redis_url else [])
    rows = []
    for name in backends:
        for callers in args.callers:
            rows.append(await measure(name, args.redis_url, callers, args.pairs))
    print_table(rows)
    print("(per reserve+release pair; cpu = this process only, redis-server excluded)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="also measure RedisStore on this Redis (e.g. redis://127.0.0.1:PORT/0, or a cluster: redis+cluster://127.0.0.1:PORT)")
    parser.add_argument("--pairs", type=int, default=5000, help="reserve+release pairs per run (default 5000)")
    parser.add_argument(
        "--callers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 10, 50, 100],
        help="comma-separated numbers of concurrent callers (default 1,10,50,100)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    with reachability_explained("bench_store"):
        trio.run(main, parse_args())
