"""A simulated browser client for a running scheduler, printing what happens.

    python scripts/fake_client.py --url ws://127.0.0.1:5010/ws/session --src zh --tgt en
    python scripts/fake_client.py --two-way zh,en --utterances 3 --chunks 4

Streams Plan A Opus chunks (13 packets of 20 ms every 256 ms) like the web client, one
``is_final`` per utterance, and prints every frame it gets and each utterance's latency.
Exit status 0 when every utterance got a ``translation_result``.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from trio_scheduler.simulate.client import ClientRejected, FakeClient, describe_client_event
from trio_scheduler.simulate.script import reachability_explained


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:5010/ws/session")
    parser.add_argument("--src", default="zh")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--two-way", default=None, metavar="A,B",
                        help="two_way_auto session between A and B (instead of --src/--tgt)")
    parser.add_argument("--utterances", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=4, help="audio chunks per utterance")
    parser.add_argument("--interval", type=float, default=0.256, help="seconds between chunks")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for outstanding results after the last utterance")
    parser.add_argument("--session-close", action="store_true",
                        help="end with session_close (the real web client just disconnects)")
    return parser


def printer(kind: str, frame: dict) -> None:
    print(f"{time.strftime('%H:%M:%S')} client {describe_client_event(kind, frame)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    two_way = None
    if args.two_way:
        langs = [lang.strip() for lang in args.two_way.split(",")]
        if len(langs) != 2 or not all(langs):
            print("fake_client: --two-way takes two languages, e.g. zh,en", file=sys.stderr)
            return 2
        two_way = (langs[0], langs[1])
    client = FakeClient(
        args.url,
        src=args.src,
        tgt=args.tgt,
        two_way=two_way,
        utterances=args.utterances,
        utterance_chunks=args.chunks,
        chunk_interval_s=args.interval,
        result_timeout_s=args.timeout,
        send_session_close=args.session_close,
        on_event=printer,
    )
    try:
        with reachability_explained("fake_client"):
            summary = trio.run(client.run)
    except KeyboardInterrupt:
        return 130
    except ClientRejected as exc:
        print(f"fake_client: session refused: {exc}", file=sys.stderr)
        return 1
    for record in summary.utterances:
        outcome = (f"{record.latency_ms:.0f} ms end-to-end" if record.latency_ms is not None
                   else f"missing ({record.missing['reason']})" if record.missing
                   else "no outcome")
        print(f"utt {record.index}: {outcome}")
    return 0 if len(summary.results) == len(summary.utterances) else 1


if __name__ == "__main__":
    sys.exit(main())
