"""CPU per decoded frame, by kind: the codec's cost on the hot path of every audio chunk.

    python scripts/bench_decode.py [--number 2000] [--repeat 200]

Decodes the real programs' frames (PROTOCOL §5; the web client's audio chunk carries 13
Opus packets, ~1 KB of base64) with the default limits and prints the best µs per frame
over the repeats (the minimum is the least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import timeit

import orjson

from trio_scheduler.protocol import codec
from trio_scheduler.protocol.messages import NODE_INBOUND, SESSION_INBOUND
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    register_frame,
    result_frame,
    session_init_frame,
)

JOB = {"job_id": "job-6f1c1d52-5d0e-4a53-9b1e-2f7c8c6b1a90", "attempt_id": 1,
       "session_id": "s-2858827E", "utterance_index": 3,
       "trace_id": "ff9c9991-acfa-435d-9f14-f1ab5aad9f81"}

FRAMES = {
    "audio_chunk": (audio_chunk_frame("s-2858827E", 17), SESSION_INBOUND),
    "audio_chunk+timestamp": (
        audio_chunk_frame("s-2858827E", 17, client_timestamp_ms=1795359988466), SESSION_INBOUND
    ),
    "session_init": (session_init_frame(), SESSION_INBOUND),
    "job_result": (result_frame(JOB, "node-1DDFF3B5"), NODE_INBOUND),
    "node_heartbeat": (heartbeat_frame("node-1DDFF3B5"), NODE_INBOUND),
    "node_register": (register_frame(), NODE_INBOUND),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="decodes per timing")
    parser.add_argument("--repeat", type=int, default=200, help="timings per frame kind")
    args = parser.parse_args()
    for name, (frame, table) in FRAMES.items():
        raw = orjson.dumps(frame)
        codec.decode(raw, table)  # builds the converter's hooks once
        best = min(timeit.repeat(lambda: codec.decode(raw, table), number=args.number,
                                 repeat=args.repeat))
        print(f"{name:24} {best / args.number * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
