"""Replaying a recorded trace against a scheduler and comparing what the browsers get.

The recorded browsers send their frames again with the recorded timing; the recorded
nodes register, heartbeat, and answer each job they are given with the frames the
recording's node sent for the same (session, utterance) — whichever node it is now. Ids
differ between runs and are rewritten on the fly. Each session's outcomes (results,
missing results and error codes, in order) are compared with the recording's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
import orjson
import trio

from trio_scheduler.simulate.peer import RECV_BOUND_S, Peer

JOB_FRAMES = ("job_ack", "job_started", "asr_partial", "job_result")


@attrs.define
class Connection:
    conn: int
    kind: str
    frames: list[tuple[float, str, dict]] = attrs.Factory(list)  # (t, dir, frame)

    @property
    def start(self) -> float:
        return self.frames[0][0]

    def sent(self) -> list[tuple[float, dict]]:
        return [(t, f) for t, d, f in self.frames if d == "in" and isinstance(f, dict)]

    def received(self) -> list[dict]:
        return [f for _, d, f in self.frames if d == "out" and isinstance(f, dict)]


def load_trace(path: Path) -> dict[int, Connection]:
    connections: dict[int, Connection] = {}
    with open(path, "rb") as file:
        for line in file:
            if not line.strip():
                continue
            entry = orjson.loads(line)
            conn = connections.setdefault(entry["conn"], Connection(entry["conn"], entry["kind"]))
            conn.frames.append((entry["t"], entry["dir"], entry["frame"]))
    return connections


def outcomes(frames: list[dict]) -> list[tuple]:
    """What a browser got, stripped of ids and timings: the thing replay must reproduce."""
    seen = []
    for frame in frames:
        kind = frame.get("type")
        if kind == "translation_result":
            seen.append(("result", frame["utterance_index"]))
        elif kind == "missing_result":
            seen.append(("missing", frame["utterance_index"], frame["reason"]))
        elif kind == "error":
            seen.append(("error", frame["code"]))
    return seen


@attrs.frozen
class SessionReport:
    conn: int
    expected: list[tuple]
    got: list[tuple]

    @property
    def matches(self) -> bool:
        return self.expected == self.got


def recorded_answers(trace: dict[int, Connection]) -> dict[tuple[str, int], list]:
    """(recorded session id, utterance index) -> [(delay after job_assign, frame)]."""
    answers: dict[tuple[str, int], list] = {}
    for conn in trace.values():
        if conn.kind != "node":
            continue
        assigned: dict[str, tuple[float, str, int]] = {}
        per_job: dict[str, list] = {}
        for t, direction, frame in conn.frames:
            if not isinstance(frame, dict):
                continue
            if direction == "out" and frame.get("type") == "job_assign":
                assigned[frame["job_id"]] = (t, frame["session_id"], frame["utterance_index"])
                per_job[frame["job_id"]] = []
            elif direction == "in" and frame.get("type") in JOB_FRAMES:
                job = assigned.get(frame.get("job_id"))
                if job is not None:
                    per_job[frame["job_id"]].append((t - job[0], frame))
        for job_id, frames in per_job.items():
            _, session_id, index = assigned[job_id]
            if frames or (session_id, index) not in answers:
                answers[(session_id, index)] = frames
    return answers


Connect = Callable[[str], AbstractAsyncContextManager[Peer]]


async def replay(
    trace: dict[int, Connection],
    connect: Connect,
    *,
    speed: float = 1.0,
    settle_s: float = 10.0,
) -> list[SessionReport]:
    """Replay ``trace``; ``connect("session"|"node")`` opens a peer to the scheduler.

    ``speed`` divides every recorded delay (``math.inf``: no waiting at all). After the
    last frame, sessions wait up to ``settle_s`` for their remaining outcomes.
    """
    t0 = min(conn.start for conn in trace.values())
    answers = recorded_answers(trace)
    session_ids: dict[str, str] = {}  # replayed session id -> recorded one
    reports: list[SessionReport] = []

    def delay(seconds: float) -> float:
        return 0.0 if math.isinf(speed) else max(0.0, seconds) / speed

    async def run_node(conn: Connection, done: trio.Event) -> None:
        await trio.sleep(delay(conn.start - t0))
        async with connect("node") as peer:
            node_id: str | None = None
            ready = trio.Event()

            async def replay_sent() -> None:
                previous = conn.start
                for t, frame in conn.sent():
                    if frame.get("type") in JOB_FRAMES:
                        continue  # sent in answer to the jobs this run hands out
                    await trio.sleep(delay(t - previous))
                    previous = t
                    if node_id is not None and "node_id" in frame:
                        frame = dict(frame, node_id=node_id)
                    await peer.send(frame)
                    if frame.get("type") == "node_register":
                        with trio.fail_after(RECV_BOUND_S):  # the ack, or the server is stuck
                            await ready.wait()

            async def answer(job: dict) -> None:
                recorded_session = session_ids.get(job["session_id"])
                start = trio.current_time()
                for after, frame in answers.get((recorded_session, job["utterance_index"]), []):
                    await trio.sleep_until(start + delay(after))
                    rewritten = dict(frame, job_id=job["job_id"], session_id=job["session_id"],
                                     node_id=node_id)
                    if "attempt_id" in rewritten:
                        rewritten["attempt_id"] = job["attempt_id"]
                    await peer.send(rewritten)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(replay_sent)

                async def receive() -> None:
                    nonlocal node_id
                    async for frame in peer.frames():
                        if frame.get("type") == "node_register_ack":
                            node_id = frame["node_id"]
                            ready.set()
                        elif frame.get("type") == "job_assign":
                            nursery.start_soon(answer, frame)

                nursery.start_soon(receive)
                await done.wait()
                nursery.cancel_scope.cancel()

    async def run_session(conn: Connection) -> None:
        await trio.sleep(delay(conn.start - t0))
        expected = outcomes(conn.received())
        got: list[tuple] = []
        enough = trio.Event()
        recorded_id = next(
            (f["session_id"] for f in conn.received() if f.get("type") == "session_init_ack"),
            None,
        )
        async with connect("session") as peer:
            acked = trio.Event()
            session_id: str | None = None

            async def receive() -> None:
                nonlocal session_id
                async for frame in peer.frames():
                    if frame.get("type") == "session_init_ack":
                        session_id = frame["session_id"]
                        if recorded_id is not None:
                            session_ids[session_id] = recorded_id
                        acked.set()
                    got.extend(outcomes([frame]))
                    if len(got) >= len(expected):
                        enough.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                previous = conn.start
                for t, frame in conn.sent():
                    await trio.sleep(delay(t - previous))
                    previous = t
                    if session_id is not None and "session_id" in frame:
                        frame = dict(frame, session_id=session_id)
                    await peer.send(frame)
                    if frame.get("type") == "session_init" and recorded_id is not None:
                        with trio.fail_after(RECV_BOUND_S):
                            await acked.wait()
                if not expected:
                    enough.set()
                with trio.move_on_after(settle_s):
                    await enough.wait()
                nursery.cancel_scope.cancel()
        reports.append(SessionReport(conn.conn, expected, got))

    nodes_done = trio.Event()
    async with trio.open_nursery() as nursery:
        for conn in trace.values():
            if conn.kind == "node":
                nursery.start_soon(run_node, conn, nodes_done)
        async with trio.open_nursery() as sessions:
            for conn in trace.values():
                if conn.kind == "session":
                    sessions.start_soon(run_session, conn)
        nodes_done.set()
    return sorted(reports, key=lambda r: r.conn)


def url_connector(base_url: str) -> Connect:
    """``connect`` for a scheduler at ``ws://host:port``."""
    from trio_scheduler.simulate.peer import connect

    def open_peer(kind: str) -> AbstractAsyncContextManager[Peer]:
        return connect(f"{base_url.rstrip('/')}/ws/{kind}")

    return open_peer


