"""A bare relay: the baseline the scheduler is measured against (``scripts/bench.py``).

    python scripts/relay.py --host 127.0.0.1 --port 5011

A plain ``trio_websocket.serve_websocket`` server with the same two paths and frames as the
scheduler, and none of its work: no store, no pools, no capacity, no segmentation rules, no
ordering, no timers, no validation beyond ``orjson.loads``.

* ``/ws/session``: ``session_init`` → ``session_init_ack``; ``audio_chunk`` payloads are
  base64-decoded and appended to one buffer; ``is_final`` with a non-empty buffer sends one
  ``job_assign`` (the scheduler's fields) to the next node, round-robin, and starts the next
  utterance index. ``client_heartbeat`` and ``session_close`` get their replies.
* ``/ws/node``: ``node_register`` → ``node_register_ack`` (the node is usable at once);
  ``job_result`` → ``translation_result`` to the session it names. Anything else is ignored.

It sends no ``ui_event`` frames (the scheduler sends four per utterance), so it also writes
fewer frames per utterance than the scheduler: that is part of what it leaves out.
"""

from __future__ import annotations

import argparse
import binascii
import itertools
import secrets
import signal
import sys
import time
import uuid
from typing import Any

import orjson
import trio
import trio_websocket

from trio_scheduler.simulate.script import reachability_explained
from trio_scheduler.startup import open_listeners

PIPELINE = {"use_asr": True, "use_nmt": True, "use_tts": True, "use_semantic": False,
            "use_tone": False}


def dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class Relay:
    def __init__(self) -> None:
        self.nodes: list[tuple[str, trio_websocket.WebSocketConnection]] = []
        self.sessions: dict[str, trio_websocket.WebSocketConnection] = {}
        self._turn = itertools.count()

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/ws/session":
            await self.session(await request.accept())
        elif path == "/ws/node":
            await self.node(await request.accept())
        else:
            await request.reject(404)

    # -- browser side ----------------------------------------------------------------

    async def session(self, ws: trio_websocket.WebSocketConnection) -> None:
        session_id: str | None = None
        init: dict[str, Any] = {}
        buffer: list[bytes] = []
        index = 0
        try:
            while True:
                frame = orjson.loads(await ws.get_message())
                kind = frame.get("type")
                if kind == "audio_chunk":
                    payload = frame.get("payload")
                    if payload:
                        try:
                            buffer.append(binascii.a2b_base64(payload))
                        except binascii.Error:
                            pass
                    if frame.get("is_final") and buffer and session_id is not None:
                        audio = b"".join(buffer)
                        buffer.clear()
                        await self.assign(session_id, index, init, audio)
                        index += 1
                elif kind == "session_init" and session_id is None:
                    session_id = "s-" + secrets.token_hex(4).upper()
                    init = frame
                    init["trace_id"] = frame.get("trace_id") or str(uuid.uuid4())
                    self.sessions[session_id] = ws
                    await ws.send_message(dumps({
                        "type": "session_init_ack", "session_id": session_id,
                        "message": "session created", "trace_id": init["trace_id"],
                        "assigned_node_id": None, "protocol_version": "1.0",
                        "use_binary_frame": False, "negotiated_codec": "opus",
                        "negotiated_audio_format": "opus", "negotiated_sample_rate": 16000,
                        "negotiated_channel_count": 1,
                    }))
                elif kind == "client_heartbeat":
                    await ws.send_message(dumps({"type": "server_heartbeat",
                                                 "session_id": session_id,
                                                 "timestamp": int(time.time() * 1000)}))
                elif kind == "session_close":
                    await ws.send_message(dumps({"type": "session_close_ack",
                                                 "session_id": session_id}))
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            if session_id is not None:
                self.sessions.pop(session_id, None)

    async def assign(self, session_id: str, index: int, init: dict[str, Any],
                     audio: bytes) -> None:
        nodes = self.nodes
        if not nodes:
            ws = self.sessions.get(session_id)
            if ws is not None:
                await ws.send_message(dumps({"type": "error", "code": "NO_AVAILABLE_NODE",
                                             "message": "no node connected"}))
            return
        _, node_ws = nodes[next(self._turn) % len(nodes)]
        frame = {
            "type": "job_assign",
            "job_id": f"job-{uuid.uuid4()}",
            "attempt_id": 1,
            "session_id": session_id,
            "utterance_index": index,
            "src_lang": init.get("src_lang"),
            "tgt_lang": init.get("tgt_lang"),
            "dialect": init.get("dialect"),
            "features": init.get("features") or {},
            "pipeline": PIPELINE,
            "audio": binascii.b2a_base64(audio, newline=False).decode("ascii"),
            "audio_format": "opus",
            "sample_rate": 16000,
            "trace_id": init["trace_id"],
            "mode": init.get("mode"),
            "lang_a": init.get("lang_a"),
            "lang_b": init.get("lang_b"),
            "auto_langs": init.get("auto_langs"),
            "enable_streaming_asr": init.get("enable_streaming_asr"),
            "partial_update_interval_ms": init.get("partial_update_interval_ms"),
            "padding_ms": 280,
            "turn_id": None,
            "is_manual_cut": True,
        }
        try:
            await node_ws.send_message(dumps(frame))
        except trio_websocket.ConnectionClosed:
            pass

    # -- node side -------------------------------------------------------------------

    async def node(self, ws: trio_websocket.WebSocketConnection) -> None:
        entry: tuple[str, trio_websocket.WebSocketConnection] | None = None
        try:
            while True:
                frame = orjson.loads(await ws.get_message())
                kind = frame.get("type")
                if kind == "job_result":
                    session_ws = self.sessions.get(frame.get("session_id"))
                    if session_ws is None:
                        continue
                    result = {
                        "type": "translation_result",
                        "session_id": frame.get("session_id"),
                        "utterance_index": frame.get("utterance_index"),
                        "job_id": frame.get("job_id"),
                        "text_asr": frame.get("text_asr") or "",
                        "text_translated": frame.get("text_translated") or "",
                        "tts_audio": frame.get("tts_audio") or "",
                        "tts_format": frame.get("tts_format") or "pcm16",
                        "trace_id": frame.get("trace_id"),
                        "extra": frame.get("extra"),
                    }
                    try:
                        await session_ws.send_message(dumps(result))
                    except trio_websocket.ConnectionClosed:
                        pass
                elif kind == "node_register" and entry is None:
                    node_id = frame.get("node_id") or "node-" + secrets.token_hex(4).upper()
                    entry = (node_id, ws)
                    self.nodes.append(entry)
                    await ws.send_message(dumps({"type": "node_register_ack", "node_id": node_id,
                                                 "message": "registered",
                                                 "status": "registering"}))
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            if entry is not None:
                self.nodes.remove(entry)


async def main_async(host: str, port: int) -> None:
    relay = Relay()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = trio_websocket.WebSocketServer(
                relay.handle, await open_listeners(host, port),
                max_message_size=16 * 1024 * 1024,
            )
            await nursery.start(server.run)
            print(f"relay listening on ws://{host}:{server.port}", file=sys.stderr, flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5011)
    args = parser.parse_args(argv)
    with reachability_explained("relay"):
        trio.run(main_async, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
