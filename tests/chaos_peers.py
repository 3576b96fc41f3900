"""Misbehaving peers for the chaos tests: GPU nodes that drop, repeat, delay and forge
results and come and go, and browser clients that vanish mid-session.

Everything runs on one seeded ``random.Random`` per peer (derived from the test's seed),
so a case replays the same decisions in the same order per peer; only the interleaving
of peers varies with the scheduler's timing ("deterministic-ish").

The peers reach the scheduler through an ``open_socket()`` async context manager yielding
a :class:`~trio_scheduler.simulate.peer.Peer`: real WebSockets (``connect(url)``) or the
in-memory sockets of :class:`harness.MemoryHarness`, so the same chaos runs in real time
and under ``MockClock``. Nothing here waits for a condition with a sleep: sleeps are the
peers' *behaviour* (slow work, uptime, pauses); conditions are events.
"""

from __future__ import annotations

import base64
import collections
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio
import trio_websocket

from trio_scheduler.server import Scheduler
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    opus_chunk_payload,
    register_frame,
)
from trio_scheduler.simulate.peer import Peer

OpenSocket = Callable[[], AbstractAsyncContextManager[Peer]]
LANGUAGES = ["zh", "en"]
ALLOWED_ERROR_CODES = {"NO_AVAILABLE_NODE"}
OUTCOME_REASONS = {"job_failed", "job_timeout", "gap_timeout", "silence_detected"}

# What a node does with one job, and how often (weights).
BEHAVIOURS: dict[str, int] = {
    "normal": 45,
    "slow": 14,  # may outlive the job timeout: the late result must be dropped
    "duplicate": 10,  # the same result twice
    "never": 9,  # silently dropped: the job timeout must report it
    "foreign_job": 8,  # also a result for a job that was sent to ANOTHER node
    "foreign_session": 7,  # a result for its own job naming another session
    "failed": 4,  # success: false
    "silence": 3,  # ASR_EMPTY
}


def wall_ms() -> int:
    return int(time.time() * 1000)


@attrs.frozen
class Timing:
    """Behaviour delays in seconds (Trio clock): real time, or virtual under MockClock."""

    normal: tuple[float, float]
    slow: tuple[float, float]
    duplicate_gap: tuple[float, float]
    uptime: tuple[float, float]
    downtime: tuple[float, float]
    heartbeat_s: float
    client_start: tuple[float, float]
    client_pause: tuple[float, float]
    client_vanish: tuple[float, float]
    cleanup_bound_s: float  # how long session tasks may take to clean up after the end

    @classmethod
    def real(cls) -> Timing:
        """For a scheduler with job timeout 1.5 s, pending 1 s, gap 0.5 s."""
        return cls(
            normal=(0.005, 0.12), slow=(0.3, 2.4), duplicate_gap=(0.0, 0.1),
            uptime=(0.4, 1.6), downtime=(0.0, 0.3), heartbeat_s=1.0,
            client_start=(0.0, 0.5), client_pause=(0.3, 1.2), client_vanish=(0.0, 0.6),
            cleanup_bound_s=10.0,
        )

    @classmethod
    def virtual(cls) -> Timing:
        """For the default timeouts (job 30 s, pending 10 s, gap 5 s), under MockClock."""
        return cls(
            normal=(0.1, 2.5), slow=(5.0, 48.0), duplicate_gap=(0.0, 2.0),
            uptime=(8.0, 32.0), downtime=(0.0, 6.0), heartbeat_s=15.0,
            client_start=(0.0, 10.0), client_pause=(6.0, 24.0), client_vanish=(0.0, 12.0),
            cleanup_bound_s=60.0,
        )


@attrs.define
class JobInfo:
    job_id: str
    session_id: str
    utterance_index: int
    attempt_id: int
    nodes: set[str] = attrs.Factory(set)  # every node a job_assign for it reached


@attrs.define
class World:
    """What every peer may know: the jobs seen by any node, the live session ids."""

    timing: Timing
    jobs: dict[str, JobInfo] = attrs.Factory(dict)
    session_ids: list[str] = attrs.Factory(list)
    chaos: trio.Event = attrs.Factory(trio.Event)  # set once every node is ready
    # What happened to each job, as its peers saw it (for reports): job_id -> lines.
    history: dict[str, list[str]] = attrs.Factory(lambda: collections.defaultdict(list))
    # job_id -> names of the nodes that answered it (a genuine result or failure), in order
    answered_by: dict[str, list[str]] = attrs.Factory(lambda: collections.defaultdict(list))

    def log(self, job_id: str, what: str) -> None:
        self.history[job_id].append(f"t={trio.current_time():.3f} {what}")

    def note_assign(self, job: dict[str, Any], node_id: str) -> None:
        info = self.jobs.get(job["job_id"])
        if info is None:
            info = self.jobs[job["job_id"]] = JobInfo(
                job["job_id"], job["session_id"], job["utterance_index"], job["attempt_id"]
            )
        info.attempt_id = max(info.attempt_id, job["attempt_id"])
        info.nodes.add(node_id)


class SessionRegistry(dict):
    """Stands in for ``scheduler.sessions.sessions`` so a test can *wait* (no polling)
    until every session task has finished its cleanup: the id is popped last."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._touch()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._touch()

    def pop(self, *args: Any) -> Any:
        value = super().pop(*args)
        self._touch()
        return value

    async def wait_empty(self) -> None:
        while self:
            await self._changed.wait()


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def _text_fields(text: Any) -> list[str]:
    """``tag|producer node_id|job_id|session_id|index`` of a chaos node's result text."""
    fields = text.split("|") if isinstance(text, str) else []
    return fields if len(fields) == 5 else ["?", "?", "?", "?", "?"]


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------


@attrs.frozen
class Overcommit:
    line: str
    busy: list[str]
    explained: bool  # by a job that another node answered first


@attrs.define(eq=False)
class _Socket:
    peer: Peer
    number: int
    close_code: int | None = None


class ChaosNode:
    def __init__(
        self, world: World, name: str, capacity: int, open_socket: OpenSocket,
        rng: random.Random,
    ) -> None:
        self.world = world
        self.name = name
        self.capacity = capacity
        self.open_socket = open_socket
        self.rng = rng
        self.timing = world.timing
        self.node_id: str | None = None
        self.current: _Socket | None = None  # the registered socket results go to
        self.behaviours: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.errors: list[dict[str, Any]] = []  # error frames the scheduler sent us
        self.close_codes: list[int | None] = []
        self.repeated_job_ids: list[str] = []  # a job_id assigned to this node twice
        self._seen_job_ids: set[str] = set()
        self._running: dict[str, trio.CancelScope] = {}
        # Jobs the scheduler may still count against our capacity: assigned, and neither
        # answered by us, nor cancelled by the scheduler, nor on a socket we closed (whose
        # jobs it fails over). A job_assign while this holds ``capacity`` jobs is an
        # over-commit: the scheduler gave our slot away while we still run its job.
        self._active: dict[str, int] = {}  # job_id -> socket number
        self.overcommits: list[Overcommit] = []
        self._sockets = 0
        self._nursery: trio.Nursery | None = None

    # -- life --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED):
        """Connect and register; report the node id; then come and go until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            closed = await nursery.start(self._connection)
            task_status.started(self.node_id)
            await self.world.chaos.wait()
            while True:
                await trio.sleep(_uniform(self.rng, self.timing.uptime))
                if self.rng.random() < 0.5:
                    self.stats["restarts_dropping_jobs"] += 1
                    for job_id, scope in self._running.items():
                        self.world.log(job_id, f"{self.name} restarts, drops the job")
                        scope.cancel()
                    self._running.clear()
                if self.rng.random() < 0.35:
                    # Takeover: a new socket registers the same node_id while the old one
                    # is still open; the scheduler closes the old one (4001).
                    self.stats["takeovers"] += 1
                    for job_id in self._active:
                        self.world.log(job_id, f"{self.name} takeover by a new socket")
                    closed = await nursery.start(self._connection)
                else:
                    self.stats["disconnects"] += 1
                    old = self.current
                    self.current = None
                    if old is not None:
                        # The scheduler fails over every job it sent to this node_id, on
                        # this socket or on one it took over from.
                        for job_id in self._active:
                            self.world.log(job_id, f"{self.name} closes its socket")
                        self._active.clear()
                        with trio.move_on_after(5):  # behaviour bound, not a wait
                            await old.peer.ws.aclose()
                    await closed.wait()
                    await trio.sleep(_uniform(self.rng, self.timing.downtime))
                    closed = await nursery.start(self._connection)

    async def _connection(self, *, task_status: trio.TaskStatus[trio.Event]) -> None:
        ended = trio.Event()
        sock: _Socket | None = None
        try:
            async with self.open_socket() as peer:
                self._sockets += 1
                sock = _Socket(peer, self._sockets)
                try:
                    if self.node_id is not None and self.rng.random() < 0.3:
                        # The real agent heartbeats on a fresh socket before registering.
                        await peer.send(heartbeat_frame(self.node_id, LANGUAGES,
                                                        timestamp_ms=wall_ms()))
                    frame = register_frame(LANGUAGES, node_id=self.node_id,
                                           max_concurrent_jobs=self.capacity)
                    await peer.send(frame)
                    while True:
                        ack = await peer.recv()
                        if ack.get("type") == "node_register_ack":
                            break
                        self._on_other_frame(ack)
                    self.node_id = ack["node_id"]
                    self.current = sock
                    await peer.send(heartbeat_frame(self.node_id, LANGUAGES,
                                                    timestamp_ms=wall_ms()))
                except trio_websocket.ConnectionClosed as exc:
                    raise AssertionError(f"{self.name}: socket closed while registering: "
                                         f"{exc.reason}") from None
                task_status.started(ended)
                async with trio.open_nursery() as inner:
                    inner.start_soon(self._heartbeats, sock)
                    await self._read(sock)
                    inner.cancel_scope.cancel()
        finally:
            if sock is not None and self.current is sock:
                self.current = None
            ended.set()

    async def _heartbeats(self, sock: _Socket) -> None:
        while True:  # a timer: the agent heartbeats on a fixed period
            await trio.sleep(self.timing.heartbeat_s)
            assert self.node_id is not None
            try:
                await sock.peer.send(heartbeat_frame(self.node_id, LANGUAGES,
                                                     timestamp_ms=wall_ms()))
            except trio_websocket.ConnectionClosed:
                return

    async def _read(self, sock: _Socket) -> None:
        try:
            async for frame in sock.peer.frames():
                kind = frame.get("type")
                if kind == "job_assign":
                    self._on_job_assign(frame, sock)
                elif kind == "job_cancel":
                    self._on_job_cancel(frame)
                else:
                    self._on_other_frame(frame)
        except trio_websocket.ConnectionClosed as exc:
            sock.close_code = exc.reason.code if exc.reason is not None else None
            self.close_codes.append(sock.close_code)

    def _on_other_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "error":
            self.errors.append(frame)

    # -- jobs --------------------------------------------------------------------------

    def _on_job_assign(self, job: dict[str, Any], sock: _Socket) -> None:
        assert self.node_id is not None and self._nursery is not None
        job_id = job["job_id"]
        if job_id in self._seen_job_ids:
            self.repeated_job_ids.append(job_id)  # the real agent would refuse it
            return
        self._seen_job_ids.add(job_id)
        if len(self._active) >= self.capacity:
            # "Explained" when a job of ours was answered first by an earlier attempt's
            # node (the scheduler must then have sent us a job_cancel for it).
            known = [j for j in self._active
                     if any(n != self.name for n in self.world.answered_by.get(j, ()))]
            self.overcommits.append(Overcommit(
                f"{self.name} ({self.node_id}, capacity {self.capacity}) got {job_id} "
                f"(attempt {job['attempt_id']}) at t={trio.current_time():.3f} while still "
                f"running {sorted(self._active)}",
                busy=sorted(self._active),
                explained=len(self._active) - len(known) < self.capacity,
            ))
        self._active[job_id] = sock.number
        self.world.log(job_id, f"{self.name} assigned attempt {job['attempt_id']} on socket "
                               f"{sock.number} ({job['session_id']} #{job['utterance_index']})")
        self.world.note_assign(job, self.node_id)
        behaviour = self.rng.choices(list(BEHAVIOURS), weights=list(BEHAVIOURS.values()))[0]
        # Decide everything now, so the choices do not depend on task interleaving.
        plan = {
            "behaviour": behaviour,
            "ack": self.rng.random() < 0.8,
            "delay": _uniform(self.rng, self.timing.slow if behaviour == "slow"
                              else self.timing.normal),
            "gap": _uniform(self.rng, self.timing.duplicate_gap),
            "pick": self.rng.random(),
            "also_answer": self.rng.random() < 0.5,
        }
        self.behaviours[behaviour] += 1
        scope = trio.CancelScope()
        self._running[job_id] = scope
        self._nursery.start_soon(self._serve, job, plan, scope)

    def _on_job_cancel(self, frame: dict[str, Any]) -> None:
        self.stats["cancels_received"] += 1
        self._active.pop(frame.get("job_id"), None)
        self.world.log(frame.get("job_id"), f"{self.name} job_cancel ({frame.get('reason')})")
        if self.rng.random() < 0.6:  # some agents ignore cancels and answer late anyway
            scope = self._running.pop(frame.get("job_id"), None)
            if scope is not None:
                scope.cancel()

    async def _serve(self, job: dict[str, Any], plan: dict[str, Any], scope: trio.CancelScope):
        behaviour = plan["behaviour"]
        with scope:
            if plan["ack"]:
                await self._send({
                    "type": "job_ack", "job_id": job["job_id"], "attempt_id": job["attempt_id"],
                    "node_id": self.node_id, "session_id": job["session_id"],
                    "trace_id": job["trace_id"],
                })
            self.world.log(job["job_id"], f"{self.name} plan {behaviour} "
                                          f"delay {plan['delay']:.2f}")
            if behaviour == "never":
                return
            await trio.sleep(plan["delay"])
            if behaviour == "foreign_job":
                await self._send_foreign_job(plan["pick"])
                await self._answer(job, self._result(job))
            elif behaviour == "foreign_session":
                await self._send_foreign_session(job, plan["pick"])
                if plan["also_answer"]:
                    await self._answer(job, self._result(job))
            elif behaviour == "duplicate":
                await self._answer(job, self._result(job))
                await trio.sleep(plan["gap"])
                await self._send(self._result(job))
            elif behaviour == "failed":
                await self._answer(job, self._result(job, success=False))
            elif behaviour == "silence":
                await self._answer(job, self._result(job, silence=True))
            else:  # normal, slow
                await self._answer(job, self._result(job))
        self._running.pop(job["job_id"], None)

    async def _answer(self, job: dict[str, Any], frame: dict[str, Any]) -> None:
        # Done with the job before reporting it: the slot the scheduler frees on this
        # result may come back at once.
        self._active.pop(job["job_id"], None)
        self.world.answered_by[job["job_id"]].append(self.name)
        sock = self.current
        self.world.log(job["job_id"], f"{self.name} answers (success={frame['success']}) on "
                                      f"socket {sock.number if sock else None}")
        await self._send(frame)

    async def _send_foreign_job(self, pick: float) -> None:
        """A result, under our own node_id, for a job the scheduler never sent us."""
        others = [
            info for info in self.world.jobs.values() if self.node_id not in info.nodes
        ]
        if not others:
            return
        info = others[int(pick * len(others))]
        self.stats["foreign_job_results"] += 1
        await self._send(self._frame(
            job_id=info.job_id, attempt_id=info.attempt_id, session_id=info.session_id,
            utterance_index=info.utterance_index, tag="FOREIGN-JOB",
        ))

    async def _send_foreign_session(self, job: dict[str, Any], pick: float) -> None:
        """A result for our own job that names another session."""
        others = [s for s in self.world.session_ids if s != job["session_id"]]
        if not others:
            return
        self.stats["foreign_session_results"] += 1
        await self._send(self._frame(
            job_id=job["job_id"], attempt_id=job["attempt_id"],
            session_id=others[int(pick * len(others))],
            utterance_index=job["utterance_index"], tag="FOREIGN-SESSION",
        ))

    def _result(self, job: dict[str, Any], *, success: bool = True,
                silence: bool = False) -> dict[str, Any]:
        frame = self._frame(
            job_id=job["job_id"], attempt_id=job["attempt_id"], session_id=job["session_id"],
            utterance_index=job["utterance_index"], tag="OK",
        )
        if not success:
            frame.update(success=False, text_asr=None, text_translated=None, tts_audio=None,
                         error={"code": "PROCESSING_ERROR", "message": "chaos failure"})
        elif silence:
            frame.update(text_asr="", text_translated="", tts_audio="",
                         extra={"reason": "ASR_EMPTY"})
        return frame

    def _frame(self, *, job_id: str, attempt_id: int, session_id: str, utterance_index: int,
               tag: str) -> dict[str, Any]:
        # The text names who produced it and for what, so a test can trace every delivery.
        text = f"{tag}|{self.node_id}|{job_id}|{session_id}|{utterance_index}"
        return {
            "type": "job_result", "job_id": job_id, "attempt_id": attempt_id,
            "node_id": self.node_id, "session_id": session_id,
            "utterance_index": utterance_index, "success": True,
            "text_asr": text, "text_translated": text,
            "tts_audio": base64.b64encode(b"\x00\x01" * 4).decode(), "tts_format": "opus",
            "extra": {"service_timings": {"total_ms": 10}}, "processing_time_ms": 10,
            "node_completed_at_ms": wall_ms(), "trace_id": "chaos",
        }

    async def _send(self, frame: dict[str, Any]) -> None:
        """Send on the current registered socket; lost when there is none (as on a real
        network: a node between sockets cannot answer)."""
        sock = self.current
        if sock is None:
            self.stats["frames_lost_offline"] += 1
            return
        try:
            await sock.peer.send(frame)
        except trio_websocket.ConnectionClosed:
            self.stats["frames_lost_closed"] += 1
            return
        self.stats["sent_" + frame["type"]] += 1


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


class ChaosClient:
    def __init__(
        self, world: World, name: str, open_socket: OpenSocket, rng: random.Random,
        utterances: int, vanish_after: int | None, send_session_close: bool,
    ) -> None:
        self.world = world
        self.name = name
        self.open_socket = open_socket
        self.rng = rng
        self.utterances = utterances
        self.vanish_after = vanish_after  # None: stays to the end
        self.send_session_close = send_session_close
        self.session_id: str | None = None
        self.outcomes: list[tuple[str, int, str]] = []  # (type, index, reason or job_id)
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.ui_errors: collections.Counter[str] = collections.Counter()
        self.unexpected_close: Any = None
        self.close_acked = False
        self.finished = False  # got every outcome (or vanished on purpose)
        self._all_outcomes = trio.Event()
        self._close_ack = trio.Event()
        self._gone = trio.Event()
        self._closing = False

    @property
    def live(self) -> bool:
        return self.vanish_after is None

    async def run(self) -> None:
        timing = self.world.timing
        await trio.sleep(_uniform(self.rng, timing.client_start))
        async with self.open_socket() as peer:
            await peer.send(one_way_init("zh", "en"))
            ack = await peer.recv()
            assert ack["type"] == "session_init_ack", ack
            self.session_id = ack["session_id"]
            self.world.session_ids.append(self.session_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, peer)
                nursery.start_soon(self._heartbeats, peer)
                seq = 0
                for index in range(self.utterances):
                    if index == self.vanish_after:
                        break
                    # 300 ms of Plan A audio: above any minimum utterance length.
                    payload = opus_chunk_payload(15, fill=0x40 + index)
                    for frame in (
                        audio_chunk_frame(self.session_id, seq, payload=payload,
                                          client_timestamp_ms=wall_ms()),
                        audio_chunk_frame(self.session_id, seq + 1, is_final=True, payload=""),
                    ):
                        await self._send(peer, frame)
                    seq += 2
                    await trio.sleep(_uniform(self.rng, timing.client_pause))
                if not self.live:
                    # Vanish like a closed browser tab: no session_close, jobs in flight.
                    await trio.sleep(_uniform(self.rng, timing.client_vanish))
                    self.finished = True
                else:
                    await _first(self._all_outcomes, self._gone)
                    self.finished = self._all_outcomes.is_set()
                    if self.finished and self.send_session_close:
                        self._closing = True  # nothing but the close from now on
                        await self._send(peer, {"type": "session_close",
                                                "session_id": self.session_id,
                                                "reason": "done"})
                        await _first(self._close_ack, self._gone)
                nursery.cancel_scope.cancel()

    async def _send(self, peer: Peer, frame: dict[str, Any]) -> None:
        try:
            await peer.send(frame)
        except trio_websocket.ConnectionClosed as exc:
            self._closed(exc)

    async def _heartbeats(self, peer: Peer) -> None:
        while True:  # a timer, as in the browser: keeps the idle timeout away
            await trio.sleep(self.world.timing.heartbeat_s)
            if self._closing:
                return
            await self._send(peer, {"type": "client_heartbeat", "session_id": self.session_id,
                                    "timestamp": wall_ms()})

    async def _read(self, peer: Peer) -> None:
        try:
            async for frame in peer.frames():
                self._on_frame(frame)
        except trio_websocket.ConnectionClosed as exc:
            self._closed(exc)

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> None:
        if not self._gone.is_set():
            if not self.close_acked:
                self.unexpected_close = exc.reason
            self._gone.set()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "translation_result":
            self.results.append(frame)
            self.world.log(frame["job_id"], f"{self.name} translation_result from "
                                            f"{_text_fields(frame.get('text_asr'))[1]}")
            self.outcomes.append((kind, frame["utterance_index"], frame["job_id"]))
        elif kind == "missing_result":
            self.outcomes.append((kind, frame["utterance_index"], frame["reason"]))
        elif kind == "error":
            self.errors.append(frame)
        elif kind == "ui_event" and frame.get("status") == "error":
            self.ui_errors[frame.get("error_code")] += 1
            self.world.log(frame.get("job_id"), f"{self.name} ui_event ERROR "
                                                f"{frame.get('error_code')} ({frame.get('hint')})")
        elif kind == "session_close_ack":
            self.close_acked = True
            self._close_ack.set()
        if len(self.outcomes) >= self.utterances:
            self._all_outcomes.set()


async def _first(*events: trio.Event) -> None:
    """Until one of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


# ---------------------------------------------------------------------------------------
# The run and its verdict
# ---------------------------------------------------------------------------------------


@attrs.define
class ChaosReport:
    seed: int
    nodes: list[ChaosNode]
    clients: list[ChaosClient]
    world: World
    in_use: dict[str, int]
    sessions_left: list[str]  # session tasks that had not cleaned up (bounded wait)
    routes: int
    waiting: int
    local_load: dict[str, int]
    counters: dict[str, int]

    def violations(self) -> list[str]:
        problems: list[str] = []
        result_job_ids: collections.Counter[str] = collections.Counter()
        for client in self.clients:
            who = f"{client.name} ({client.session_id})"
            for error in client.errors:
                if error.get("code") not in ALLOWED_ERROR_CODES:
                    problems.append(f"{who}: error frame {error}")
            for result in client.results:
                result_job_ids[result["job_id"]] += 1
                problems += self._trace_result(who, client, result)
            if not client.live:
                continue
            if not client.finished:
                problems.append(f"{who}: did not get every outcome "
                                f"(socket closed: {client.unexpected_close})")
            indices = [index for _, index, _ in client.outcomes]
            if indices != list(range(client.utterances)):
                problems.append(f"{who}: outcomes not exactly one per utterance in order: "
                                f"{client.outcomes}")
            for kind, index, reason in client.outcomes:
                if kind == "missing_result" and reason not in OUTCOME_REASONS:
                    problems.append(f"{who}: missing_result {index} with reason {reason!r}")
            if client.send_session_close and client.finished and not client.close_acked:
                problems.append(f"{who}: no session_close_ack")
        for job_id, count in result_job_ids.items():
            if count > 1:
                problems.append(f"translation_result for {job_id} delivered {count} times")
        if self.sessions_left:
            problems.append(f"session tasks still registered after the end: "
                            f"{self.sessions_left}")
        for node_id, count in self.in_use.items():
            if count:
                problems.append(f"node {node_id}: {count} reservation(s) left in the store")
        if self.routes:
            problems.append(f"dispatcher still routes {self.routes} job(s)")
        if self.waiting:
            problems.append(f"dispatcher still has {self.waiting} waiting job(s)")
        for node in self.nodes:
            if node.errors:
                problems.append(f"{node.name} ({node.node_id}) got error frames: {node.errors}")
            if node.repeated_job_ids:
                problems.append(f"{node.name} ({node.node_id}) was sent the same job_id "
                                f"twice: {node.repeated_job_ids}")
        return problems

    def capacity_violations(self, *, include_known: bool = False) -> list[str]:
        """Jobs sent to a node while it still ran ``capacity`` jobs the scheduler had not
        been told were over (PROTOCOL §3.3: at most ``max_concurrent_jobs`` per node),
        each with the history of the jobs it was running. ``include_known`` adds those
        explained by the known bug (another attempt's node answered first)."""
        lines = []
        for node in self.nodes:
            for overcommit in node.overcommits:
                if overcommit.explained and not include_known:
                    continue
                lines.append(overcommit.line)
                for job_id in overcommit.busy:
                    lines += [f"      {job_id}: {h}" for h in self.world.history[job_id]]
        return lines

    def _trace_result(self, who: str, client: ChaosClient, result: dict[str, Any]) -> list[str]:
        """A delivered result must come from a node its job was sent to, for this session
        and this utterance — never a forged one."""
        tag, producer, job_id, _session_id, _index = _text_fields(result.get("text_asr"))
        info = self.world.jobs.get(result["job_id"])
        problems = []
        if info is None:
            return [f"{who}: result for a job no node was given: {result['job_id']}"]
        index_delivered = result["utterance_index"]
        if info.session_id != client.session_id or info.utterance_index != index_delivered:
            problems.append(f"{who}: result of {info} delivered as utterance "
                            f"{result['utterance_index']}")
        if producer not in info.nodes:
            problems.append(f"{who}: result forged by {producer} (job sent to {info.nodes}): "
                            f"{result['text_asr']}")
        if tag == "FOREIGN-SESSION":
            problems.append(f"{who}: result naming another session was delivered: "
                            f"{result['text_asr']}")
        if job_id != result["job_id"]:
            problems.append(f"{who}: result text of {job_id} under job {result['job_id']}")
        return problems

    def summary(self) -> str:
        behaviours: collections.Counter[str] = collections.Counter()
        stats: collections.Counter[str] = collections.Counter()
        for node in self.nodes:
            behaviours.update(node.behaviours)
            stats.update(node.stats)
        outcome_kinds: collections.Counter[str] = collections.Counter()
        ui_errors: collections.Counter[str] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()
        for client in self.clients:
            ui_errors.update(client.ui_errors)
            errors.update(e.get("code") for e in client.errors)
            for kind, _, reason in client.outcomes:
                outcome_kinds["result" if kind == "translation_result" else reason] += 1
        live = sum(c.live for c in self.clients)
        closes = collections.Counter(code for n in self.nodes for code in n.close_codes)
        return (
            f"seed {self.seed}: {len(self.clients)} sessions ({live} live), "
            f"{len(self.world.jobs)} jobs; capacities {[n.capacity for n in self.nodes]}\n"
            f"  node behaviours {dict(behaviours)}\n  node stats {dict(stats)}\n"
            f"  node socket close codes {dict(closes)}\n"
            f"  outcomes {dict(outcome_kinds)}; ui errors {dict(ui_errors)}; "
            f"error frames {dict(errors)}\n"
            f"  scheduler counters {self.counters}; local load left {self.local_load}; "
            f"node over-commits {sum(len(n.overcommits) for n in self.nodes)} "
            f"({sum(not o.explained for n in self.nodes for o in n.overcommits)} unexplained)"
        )


async def run_chaos(
    scheduler: Scheduler,
    *,
    open_node: OpenSocket,
    open_session: OpenSocket,
    seed: int,
    timing: Timing,
    sessions: int = 20,
    nodes: int = 5,
    utterances: int = 5,
    vanish_rate: float = 0.2,
    close_rate: float = 0.3,
) -> ChaosReport:
    """Run the whole chaos against ``scheduler`` and collect what is needed to judge it.

    Returns after every client is done and every session task has finished its cleanup
    (the sessions' registry emptied), with the store's reservation counts read then.
    """
    registry = SessionRegistry()
    scheduler.sessions.sessions = registry
    world = World(timing)
    master = random.Random(seed)
    chaos_nodes = [
        ChaosNode(world, f"node{i}", master.choice([1, 2]), open_node,
                  random.Random(f"{seed}/node/{i}"))
        for i in range(nodes)
    ]
    clients = []
    for i in range(sessions):
        vanish = master.random() < vanish_rate
        clients.append(ChaosClient(
            world, f"client{i}", open_session, random.Random(f"{seed}/client/{i}"),
            utterances, master.randrange(utterances) if vanish else None,
            master.random() < close_rate,
        ))
    async with trio.open_nursery() as node_nursery:
        node_ids = [await node_nursery.start(node.run) for node in chaos_nodes]

        def all_ready(snapshot) -> bool:
            return all(
                (view := snapshot.nodes.get(node_id)) is not None and view.schedulable
                for node_id in node_ids
            )

        await scheduler.publisher.wait_until(all_ready)
        world.chaos.set()
        async with trio.open_nursery() as client_nursery:
            for client in clients:
                client_nursery.start_soon(client.run)
        with trio.move_on_after(timing.cleanup_bound_s):
            await registry.wait_empty()
        sessions_left = sorted(registry)
        now_ms = wall_ms()
        in_use = {node_id: await scheduler.store.in_use(node_id, now_ms) for node_id in node_ids}
        dispatcher = scheduler.dispatcher
        report = ChaosReport(
            seed=seed, nodes=chaos_nodes, clients=clients, world=world, in_use=in_use,
            sessions_left=sessions_left, routes=dispatcher.routed_jobs, waiting=dispatcher.waiting,
            local_load={n: dispatcher.in_flight(n) for n in node_ids if dispatcher.in_flight(n)},
            counters=dict(dispatcher.counters.values),
        )
        node_nursery.cancel_scope.cancel()
    return report
