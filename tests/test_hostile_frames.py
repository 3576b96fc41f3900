"""Property: whatever extreme values peers put in their frames, each one gets an ``error``
or a normal answer on its socket, no socket is closed, and the job in flight still ends
with a result for the browser (a frame the server failed to encode would never arrive).

Frames of both sockets — the browser's and a ready node's, including results for a job
really dispatched to it — are the real programs' frames with one to three fields (found
from the message classes, nested ones included) replaced by extreme values, and run
through a whole scheduler over in-memory sockets under a MockClock.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import attrs
import orjson
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from harness import MemoryHarness
from trio_scheduler.protocol.bounds import SAFE_INTEGER
from trio_scheduler.protocol.errors import ErrorCode
from trio_scheduler.protocol.messages import NODE_INBOUND, SESSION_INBOUND
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import Peer
from wire_fields import field_bounds

EXAMPLES = 25  # a few seconds in the suite; raise it locally to search harder
WAIT_S = 300  # virtual seconds: longer than every timer a frame can start (job timeout 30 s)

SERVER_FRAMES = {
    "session": {"session_init_ack", "translation_result", "missing_result", "asr_partial",
                "ui_event", "server_heartbeat", "session_close_ack", "backpressure", "error"},
    "node": {"node_register_ack", "job_assign", "job_cancel", "node_control", "error"},
}
ERROR_CODES = {str(code) for code in ErrorCode}

# ---------------------------------------------------------------------------------------
# Extreme values

INTEGERS = st.sampled_from([
    -(2**64), -(2**63), -1, 0, 1, 2**31, SAFE_INTEGER, SAFE_INTEGER + 1, 2**63 - 1, 2**63,
    2**64 - 1, 2**64, 10**30,
])
FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # ±1.8e308, -0.0, 5e-324…
STRINGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from([15, 16, 17, 63, 64, 65, 10_000, 10_001, 70_000]).map(lambda n: "é" * n),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, STRINGS)
VALUES = st.one_of(
    SCALARS,
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                    max_size=3),
        max_leaves=8,
    ),
    st.just({"k": "x" * 20_000}),  # a free-form object beyond its bytes
    st.just(["zh"] * 300),  # an array beyond its items
)


# ---------------------------------------------------------------------------------------
# Frames: a real one, with some fields replaced


@attrs.frozen
class Ids:
    session_id: str
    node_id: str
    job: dict  # the job_assign the node holds


def session_frames(ids: Ids) -> dict[str, dict]:
    s = ids.session_id
    return {
        "session_init": one_way_init("zh", "en"),  # on a socket of its own
        "audio_chunk": audio_chunk_frame(s, 1),
        "utterance": {"type": "utterance", "session_id": s, "utterance_index": 1,
                      "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
                      "audio": base64.b64encode(b"\x00" * 6400).decode(),
                      "audio_format": "pcm16", "sample_rate": 16000, "trace_id": "t-1"},
        "client_heartbeat": {"type": "client_heartbeat", "session_id": s, "timestamp": 1},
        "tts_started": {"type": "tts_started", "session_id": s, "trace_id": "t", "group_id": "g",
                        "ts_start_ms": 1},
        "tts_play_ended": {"type": "tts_play_ended", "session_id": s, "trace_id": "t",
                           "group_id": "g", "ts_end_ms": 2},
        # Another session's id: a close of this one would end what the property watches.
        "session_close": {"type": "session_close", "session_id": "s-00000000", "reason": "r"},
    }


def node_frames(ids: Ids) -> dict[str, dict]:
    job, n = ids.job, ids.node_id
    echo = {key: job[key] for key in ("job_id", "attempt_id", "session_id", "trace_id")}
    return {
        "node_register": register_frame(),  # on a socket of its own
        "node_heartbeat": heartbeat_frame(n),
        "job_ack": {"type": "job_ack", "node_id": n, **echo},
        "job_started": {"type": "job_started", "node_id": n, **echo},
        "asr_partial": {"type": "asr_partial", "job_id": job["job_id"], "node_id": n,
                        "session_id": job["session_id"], "utterance_index": 0, "text": "ni",
                        "is_final": False, "trace_id": job["trace_id"]},
        "job_result": result_frame(job, n),
        "node_error": {"type": "node_error", "node_id": n, "code": "E", "message": "m",
                       "details": {}},
    }


def paths(cls: type) -> list[str]:
    return [field.path for field in field_bounds(cls)]


KINDS = [("session", kind) for kind in SESSION_INBOUND] + [("node", kind) for kind in NODE_INBOUND]
PATHS = {kind: paths(cls) for kind, cls in {**SESSION_INBOUND, **NODE_INBOUND}.items()}


@st.composite
def hostile_frames(draw) -> tuple[str, str, list[tuple[str, Any]]]:
    socket, kind = draw(st.sampled_from(KINDS))
    changes = draw(st.lists(st.tuples(st.sampled_from(PATHS[kind]), VALUES), min_size=1,
                            max_size=3))
    return socket, kind, changes


def put(frame: dict, path: str, value: Any) -> None:
    """Set ``path`` (``hardware.gpus[].name``: ``[]`` is the first item) where it exists."""
    *parents, last = path.split(".")
    target: Any = frame
    for key in parents:
        target = target.get(key.removesuffix("[]")) if isinstance(target, dict) else None
        if key.endswith("[]"):
            target = target[0] if isinstance(target, list) and target else None
    if not isinstance(target, dict):
        return  # an earlier change replaced a parent
    if last.endswith("[]"):
        items = target.get(last[:-2])
        if isinstance(items, list) and items:
            items[0] = value
    else:
        target[last] = value


def hostile(base: dict, changes: list[tuple[str, Any]]) -> str:
    frame = copy.deepcopy(base)
    for path, value in changes:
        put(frame, path, value)
    return json.dumps(frame)  # json, not orjson: it must carry integers beyond 64 bits


# ---------------------------------------------------------------------------------------
# Peers whose every frame is checked as it arrives


class Watched:
    """A peer socket read by a task of its own; what arrives is checked and kept."""

    def __init__(self, peer: Peer, socket: str) -> None:
        self.peer = peer
        self.socket = socket
        self.frames: list[dict] = []
        self.closed = None
        self._changed = trio.Event()

    async def read(self) -> None:
        try:
            while True:
                raw = await self.peer.ws.get_message()
                self.frames.append(check_frame(self.socket, raw))
                self._notify()
        except ConnectionClosed as closed:
            self.closed = closed.reason
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, wanted) -> dict:
        with trio.fail_after(WAIT_S):
            while True:
                changed = self._changed
                for frame in self.frames:
                    if wanted(frame):
                        return frame
                assert self.closed is None, f"{self.socket} socket closed: {self.closed}"
                await changed.wait()

    async def answered(self, raw: str, probe: int) -> None:
        """Send ``raw``, then a frame of an unknown type whose error marks where the
        answers to ``raw`` end: every frame before it has been checked."""
        await self.peer.send(raw)
        await self.peer.send({"type": f"probe-{probe}"})
        await self.wait_for(lambda f: f["type"] == "error" and f"probe-{probe}" in f["message"])


def check_frame(socket: str, raw: str | bytes) -> dict:
    """A frame the server sent: JSON of a type this socket's peer reads; an error with a
    known code and a short message; a backpressure the web client survives."""
    frame = orjson.loads(raw)
    assert frame["type"] in SERVER_FRAMES[socket], frame
    if frame["type"] == "error":
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["message"], str) and len(frame["message"]) <= 200, frame
    if frame["type"] == "backpressure":
        assert frame["action"] == "PAUSE" and frame["resume_after_ms"] > 0, frame
    return frame


# ---------------------------------------------------------------------------------------
# The property


async def exchange(frames: list[tuple[str, str, list[tuple[str, Any]]]]) -> None:
    async with trio.open_nursery() as nursery:
        h = await MemoryHarness.start(nursery, sessions={"max_messages_per_s": 10_000.0},
                                      nodes={"max_partials_per_s": 10_000.0})

        def watched(kind: str) -> Watched:
            socket = Watched(h.session() if kind == "session" else h.node(), kind)
            nursery.start_soon(socket.read)
            return socket

        node_peer, node_id = await h.ready_node()
        node = Watched(node_peer, "node")
        nursery.start_soon(node.read)
        client = watched("session")
        await client.peer.send(one_way_init("zh", "en"))
        session_id = (await client.wait_for(lambda f: f["type"] == "session_init_ack"))[
            "session_id"]
        await client.peer.send(audio_chunk_frame(session_id, 0, is_final=True))
        job = await node.wait_for(lambda f: f["type"] == "job_assign")
        ids = Ids(session_id, node_id, job)
        bases = {**session_frames(ids), **node_frames(ids)}

        for probe, (socket, kind, changes) in enumerate(frames):
            if kind in ("session_init", "node_register"):
                target = watched(socket)  # a first frame, on a socket of its own
            else:
                target = client if socket == "session" else node
            await target.answered(hostile(bases[kind], changes), probe)

        # The job in flight still ends with an outcome for the browser.
        await node.peer.send(result_frame(job, node_id))
        await client.wait_for(lambda f: f["type"] in ("translation_result", "missing_result")
                              and f["utterance_index"] == 0)
        assert client.closed is None and node.closed is None
        nursery.cancel_scope.cancel()


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frames=st.lists(hostile_frames(), min_size=1, max_size=4))
def test_extreme_values_get_an_error_or_an_answer_never_a_close(frames):
    trio.run(exchange, frames, clock=trio.testing.MockClock(autojump_threshold=0))
