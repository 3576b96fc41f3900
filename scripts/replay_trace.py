"""Replay a recorded trace against a running scheduler and compare the outcomes.

    python scripts/replay_trace.py FILE.jsonl --url ws://127.0.0.1:5010 [--speed 1|10|max]

Record a trace with ``trio-scheduler serve --record-trace FILE.jsonl``. The recorded
browsers and nodes are re-created (ids may differ); for every session the script prints
whether it got the same outcomes — same results per utterance, same order, same error
codes — and exits 1 if any session differs, 2 if the server cannot be reached. At ``--speed`` above 1 the timing-driven cuts
(pauses) can fall differently from the recording: use 1 to check behaviour, faster speeds
to load a server.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import trio

from trio_scheduler.simulate.replay import load_trace, replay, url_connector
from trio_scheduler.simulate.script import reachability_explained


def parse_speed(text: str) -> float:
    return math.inf if text == "max" else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--url", default="ws://127.0.0.1:5010")
    parser.add_argument("--speed", type=parse_speed, default=1.0, help="1, 10, … or max")
    parser.add_argument("--settle", type=float, default=40.0,
                        help="seconds a session waits for its last outcomes")
    args = parser.parse_args()
    if not args.trace.is_file():
        parser.error(f"no trace file {args.trace}")
    trace = load_trace(args.trace)
    with reachability_explained("replay_trace"):
        reports = trio.run(lambda: replay(trace, url_connector(args.url), speed=args.speed,
                                          settle_s=args.settle))
    for report in reports:
        verdict = "same" if report.matches else "DIFFERENT"
        print(f"session conn {report.conn}: {verdict}")
        if not report.matches:
            print(f"  recorded: {report.expected}\n  replayed: {report.got}")
    same = sum(r.matches for r in reports)
    print(f"{same}/{len(reports)} sessions got the recorded outcomes")
    return 0 if same == len(reports) else 1


if __name__ == "__main__":
    sys.exit(main())
