"""Cost of one node heartbeat in the management owner, by number of nodes.

    python scripts/bench_heartbeats.py [--nodes 500] [--rounds 20]

Registers N nodes with the owner (through its real command channel, with fake links),
then sends R rounds of heartbeats from every node: unchanged ones (the common case: the
real agent repeats its capabilities every 15 s) and ones whose languages change (the node
moves between pools, a new snapshot is published). Prints µs of CPU per heartbeat.
"""

from __future__ import annotations

import argparse
import time

import trio

from trio_scheduler.management.node_state import HealthRules
from trio_scheduler.management.owner import NodeManager
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.messages import NODE_INBOUND
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame


class NullLink:
    def send(self, frame: str) -> bool:
        return True

    def close_soon(self, code: int, reason: str) -> None:
        pass


def decode(frame: dict):
    return codec.decode(codec.orjson.dumps(frame), NODE_INBOUND)


async def measure(nodes: int, rounds: int) -> dict[str, float]:
    publisher = SnapshotPublisher()
    manager = NodeManager(publisher, default_max_concurrent_jobs=4, heartbeat_interval_s=3600,
                          heartbeat_timeout_s=7200, health=HealthRules())
    languages = [["zh", "en"], ["ja", "en"]]
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        epochs = {}
        for index in range(nodes):
            node_id = f"node-{index:08X}"
            registered = await manager.register(
                node_id, decode(register_frame(languages[index % 2])), NullLink()
            )
            epochs[node_id] = registered.epoch
        same = {n: decode(heartbeat_frame(n, languages[i % 2])) for i, n in enumerate(epochs)}
        flipped = {n: decode(heartbeat_frame(n, languages[(i + 1) % 2]))
                   for i, n in enumerate(epochs)}

        async def run_rounds(frames_for_round) -> float:
            before_cpu = time.process_time()
            before = manager.heartbeats_applied
            for round_ in range(rounds):
                for node_id, epoch in epochs.items():
                    await manager.heartbeat(node_id, epoch, frames_for_round(round_)[node_id])
                await manager.list_nodes()  # wait until the owner has applied them all
            count = manager.heartbeats_applied - before
            return (time.process_time() - before_cpu) / count * 1e6

        unchanged = await run_rounds(lambda r: same)
        versions_before = publisher.current.version
        changed = await run_rounds(lambda r: flipped if r % 2 == 0 else same)
        publications = publisher.current.version - versions_before
        nursery.cancel_scope.cancel()
    return {"unchanged_us": unchanged, "changing_us": changed,
            "publications": publications}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[50, 500, 2000])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"{'nodes':>6} {'unchanged µs/hb':>16} {'changing µs/hb':>15} {'snapshots':>10}")
    for count in args.nodes:
        result = trio.run(measure, count, args.rounds)
        print(f"{count:>6} {result['unchanged_us']:>16.1f} {result['changing_us']:>15.1f} "
              f"{result['publications']:>10}")


if __name__ == "__main__":
    main()
