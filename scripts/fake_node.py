"""A simulated GPU node agent for a running scheduler, printing what happens.

    python scripts/fake_node.py --url ws://127.0.0.1:5010/ws/node --languages zh,en \\
        --capacity 4 --delay 0.5 [--node-id node-0000CAFE]

Registers, heartbeats, and answers every job after ``--delay`` seconds with a synthetic
result, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from trio_scheduler.simulate.node import FakeNode, NodeRejected, describe_node_event
from trio_scheduler.simulate.script import reachability_explained


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:5010/ws/node")
    parser.add_argument("--languages", default="zh,en", help="comma-separated, e.g. zh,en,ja")
    parser.add_argument("--capacity", type=int, default=4, help="max_concurrent_jobs")
    parser.add_argument("--delay", type=float, default=0.5, help="service time per job (s)")
    parser.add_argument("--node-id", default=None, help="re-register under this id")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="heartbeat interval (s)")
    return parser


def printer(kind: str, frame: dict) -> None:
    print(f"{time.strftime('%H:%M:%S')} node  {describe_node_event(kind, frame)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    node = FakeNode(
        args.url,
        languages=languages,
        max_concurrent_jobs=args.capacity,
        node_id=args.node_id,
        service_time_s=args.delay,
        heartbeat_interval_s=args.heartbeat,
        on_event=printer,
    )
    try:
        with reachability_explained("fake_node"):
            trio.run(node.run)
    except KeyboardInterrupt:
        pass
    except NodeRejected as exc:
        print(f"fake_node: registration refused: {exc}", file=sys.stderr)
        return 1
    print(f"jobs: {len(node.jobs)}, results: {len(node.results)}, "
          f"cancelled: {len(node.cancelled)}, max in flight: {node.max_in_flight}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
