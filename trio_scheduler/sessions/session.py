"""One task per browser socket: it owns everything about its session.

The audio buffer and its timers, the session's jobs, and its ordered result queue live in
this task and nowhere else, so they need no lock: per-session serialisation comes from
being one task. Everything reaches it through its inbox — client frames from the reader
task; node frames, capacity and node-loss notices routed by the dispatcher, which are
taken first — and timers are deadlines of the wait for the next event.

A client frame that finds the session idle is handled by the socket's reader task
itself (:meth:`SessionTask.handle_in_place`; see sessions/inbox.py): session code still
runs in one task at a time, and a browser's frame costs one wake-up instead of two.
"""

from __future__ import annotations

import base64
import itertools
import math
from typing import Any

import attrs
import structlog
import trio
import trio_websocket

from trio_scheduler.config import Config
from trio_scheduler.dispatch.dispatcher import Dispatcher
from trio_scheduler.dispatch.jobs import Job, new_job_id
from trio_scheduler.dispatch.session_jobs import NODE_EVENTS, Binding, SessionJobs
from trio_scheduler.http.ws_batches import hand_over_messages, send_texts
from trio_scheduler.management.needs import Needs
from trio_scheduler.management.node_state import Rejection
from trio_scheduler.metrics.jobs import JobTally
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.codec import ProtocolError, UnknownMessageType
from trio_scheduler.protocol.errors import CloseCode, ErrorCode
from trio_scheduler.protocol.messages import (
    ROOM_MESSAGE_TYPES,
    SESSION_INBOUND,
    AudioChunk,
    ClientHeartbeat,
    JobAssign,
    ServerHeartbeat,
    SessionClose,
    SessionCloseAck,
    SessionInit,
    SessionInitAck,
    TtsPlayEnded,
    TtsStarted,
    Utterance,
)
from trio_scheduler.sessions.audio import decode_base64, utterance_measure_ms
from trio_scheduler.sessions.ordering import Deliver, OrderedResults, Release
from trio_scheduler.sessions.outcomes import Outcome, gap_frame, outcome_frames
from trio_scheduler.sessions.groups import GroupTracker
from trio_scheduler.sessions.inbox import NUDGE, SessionInbox
from trio_scheduler.sessions.limits import RateLimiter, Verdict
from trio_scheduler.sessions.segmenter import (
    HangoverQueue,
    Segment,
    Segmenter,
    SegmenterSettings,
)
from trio_scheduler.sessions.summary import SessionSummary
from trio_scheduler.sessions.spec import (
    SessionSpec,
    check_session_init,
    check_utterance,
    new_session_id,
)

log = structlog.get_logger(__name__)

TIMER_REST_S = 1.0  # after a timer failed (a bug), before timers run again


@attrs.frozen
class ClientFrame:
    raw: str | bytes
    received_at_ms: int  # wall clock, for network timings
    arrived_at: float  # trio clock: rates are judged by arrival, not by when we got to it


@attrs.frozen
class ClientGone:
    code: int | None


@attrs.define
class SessionServices:
    """What every session task shares: read-only config and the dispatch service."""

    config: Config
    dispatcher: Dispatcher
    sessions: dict[str, Any] = attrs.Factory(dict)  # live session ids -> their task
    clock_ms: Any = None  # wall clock in ms; the dispatcher's by default
    metrics: JobTally = attrs.Factory(JobTally)

    def __attrs_post_init__(self) -> None:
        if self.clock_ms is None:
            self.clock_ms = self.dispatcher.clock_ms


async def run_session_socket(ws: trio_websocket.WebSocketConnection, services: SessionServices):
    """Serve one ``/ws/session`` socket until the client or the server closes it."""
    sessions = services.config.sessions
    inbox = SessionInbox(sessions.inbox_size, sessions.node_inbox_size, sessions.inbox_bytes,
                         sessions.events_per_turn)
    session = SessionTask(ws, services, inbox)
    try:
        async with trio.open_nursery() as nursery:
            session.attach(nursery)  # its dispatch attempts run here
            nursery.start_soon(_read_client, ws, inbox, services.clock_ms, session)
            await session.run(inbox)
            nursery.cancel_scope.cancel()
    finally:
        # After every attempt has ended, so their reports are in the inbox, and after a
        # frame handled in place. Shielded so cleanup also runs on shutdown, bounded so it
        # cannot hang it.
        grace_s = services.config.server.shutdown_grace_s
        session.stop_in_place()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + grace_s):
            await inbox.free()
        inbox.close()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + grace_s):
            await session.cleanup()


async def _read_client(ws, inbox: SessionInbox, clock_ms, session: SessionTask) -> None:
    """Hand the client's frames to the session: handled at once where it is idle, else
    queued in the inbox, waiting only while the session is behind.

    The socket's own reader task does this where it can (http/ws_batches.py); this task
    then only waits for the end."""

    async def deliver(raw: str | bytes) -> None:
        frame = ClientFrame(raw, clock_ms(), trio.current_time())
        if await session.handle_in_place(frame):
            return
        if not inbox.put_client_nowait(frame, len(raw)):
            await inbox.put_client(frame, len(raw))

    try:
        await hand_over_messages(ws, deliver)
        while True:  # the end (or, for another kind of socket, every message)
            await deliver(await ws.get_message())
    except trio_websocket.ConnectionClosed as exc:
        inbox.client_gone(ClientGone(exc.reason.code if exc.reason else None))


class SessionTask:
    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        services: SessionServices,
        inbox: SessionInbox,
    ) -> None:
        self._ws = ws
        self._services = services
        self._config = services.config
        self._dispatcher = services.dispatcher
        self._inbox = inbox
        self._spec: SessionSpec | None = None
        self._needs: Needs | None = None  # of the session's own pipeline, set with the spec
        self._audio_path: str | None = None  # "audio_chunk" or "utterance", set by the first
        self.discarded_short_utterances = 0
        self._waiting_audio: dict[int, int] = {}  # waiting utterance index -> audio bytes
        self._waiting_audio_bytes = 0
        seg = self._config.segmentation
        turns = itertools.count(1)
        self._segmenter = Segmenter(
            SegmenterSettings(
                pause_ms=seg.pause_ms,
                max_duration_ms=seg.max_duration_ms,
                max_buffer_bytes=seg.max_buffer_bytes,
                padding_auto_ms=seg.padding_auto_ms,
                padding_manual_ms=seg.padding_manual_ms,
                min_utterance_ms=seg.min_utterance_ms,
                min_voiced_ms=seg.min_voiced_ms,
                silent_packet_max_bytes=seg.silent_packet_max_bytes,
            ),
            new_turn_id=lambda: f"{self.session_id}-turn-{next(turns)}",
        )
        self._hangover = HangoverQueue(seg.hangover_auto_ms, seg.hangover_manual_ms)
        sessions_config = self._config.sessions
        self._rate_limiter = RateLimiter(sessions_config.max_messages_per_s)
        self._groups = GroupTracker(
            sessions_config.group_window_ms / 1000,
            sessions_config.group_max_parts,
            max_playback_s=seg.max_playback_suspend_ms / 1000,
        )
        results = self._config.results
        # Client-indexed utterances (the ``utterance`` path) wait here for lower indexes.
        self._utterances: OrderedResults[
            tuple[Utterance, SessionSpec, bytes, int]
        ] = OrderedResults(
            results.gap_timeout_ms / 1000, results.max_pending
        )
        # Every utterance's outcome waits here for its turn to be delivered.
        self._ordered: OrderedResults[Outcome] = OrderedResults(
            results.gap_timeout_ms / 1000, results.max_pending
        )
        self._jobs = SessionJobs(
            dispatcher=services.dispatcher,
            config=self._config.jobs,
            inbox=inbox,
            reporter=self,
            clock_ms=services.clock_ms,
            metrics=services.metrics,
        )
        self._last_client_at = trio.current_time()
        self._timers_rest_until = -math.inf  # after a timer failed: no timers until then
        self._told_internal_error = False
        self._summary = SessionSummary(self._last_client_at)
        self._closing_deadline: float | None = None
        self._finished = False
        self._timer: trio.CancelScope | None = None  # of the session task's wait, while in it
        self._in_place = False  # a frame is handled by the reader task
        self._in_place_scope = trio.CancelScope()  # of the frame handled in place, if any
        self._close_asked: tuple[int, str] | None = None  # in place, for the session task
        self.undecodable_payloads = 0

    @property
    def session_id(self) -> str:
        return self._spec.session_id if self._spec else "-"

    @property
    def spec(self) -> SessionSpec | None:
        """The session's settings once its ``session_init`` was accepted."""
        return self._spec

    @property
    def tallies(self) -> dict[str, int]:
        """What the session dropped and counted so far, by what (read by the metrics)."""
        return {
            "undecodable_payloads": self.undecodable_payloads,
            "short_utterances": self._segmenter.discarded_short + self.discarded_short_utterances,
            "silent_utterances": self._segmenter.discarded_silent,
            "node_events": self._inbox.dropped_node_events,
        }

    # -- the loop ----------------------------------------------------------------------

    async def run(self, inbox: SessionInbox) -> None:
        """Handle events and timers until the session ends.

        The wait for the next event is bounded by the session's next deadline through one
        cancel scope that lives as long as no deadline passes: its deadline is moved
        before each wait and lifted while an event is handled (so handling is never cut
        short). One scope per event was a good part of a session's cost.
        """
        while not self._finished:
            event = None
            with trio.CancelScope() as timer:
                self._timer = timer
                while not self._finished:
                    timer.deadline = self._next_deadline()
                    event = await inbox.next()
                    timer.deadline = math.inf
                    if timer.cancel_called:
                        break  # the deadline passed as the event came: handled below
                    await self._step(event)
                    event = None
            self._timer = None
            await inbox.free()  # a frame handled in place finishes first
            if not self._finished:
                await self._step(event)  # a deadline passed (and maybe an event came)
        await self._close_as_asked()  # a frame handled in place ended the session

    async def handle_in_place(self, frame: ClientFrame) -> bool:
        """Handle ``frame`` in the calling task (the socket's reader) if the session task
        is idle; False when it is not (the frame is then queued as usual).

        The session task does not run session code meanwhile (the inbox holds it back),
        and learns the new deadline when the frame is done. Closing the socket is left to
        it (:meth:`_close`): the reader cannot wait for the peer's answer to a close, being
        the task that would read it.
        """
        timer = self._timer
        if (self._finished or timer is None or timer.cancel_called  # a due timer goes first
                or not self._inbox.take_turn()):
            return False
        self._in_place = True
        try:
            # The reader task outlives the session: the session stops this step as it
            # stops its own tasks (stop_in_place), and a bug ends the session, never the
            # reader (whose failure would reach the server's nursery).
            with trio.CancelScope() as self._in_place_scope:
                await self._step(frame)
                timer = self._timer
                if timer is not None and not self._finished:
                    timer.deadline = self._next_deadline()
        except Exception:
            log.exception("session frame failed", session_id=self.session_id)
            self._finished = True
        finally:
            self._in_place = False
            self._inbox.give_back_turn(
                nudge=self._finished or self._close_asked is not None)
        return True

    def stop_in_place(self) -> None:
        """The session is over: a frame still handled in place stops at its next
        checkpoint, and none is handled in place from now on."""
        self._finished = True
        self._in_place_scope.cancel()

    async def _step(self, event: Any) -> None:
        """Handle ``event`` (if any), then whatever timer is due."""
        now = trio.current_time()
        if event is not None:
            try:
                await self._handle(event, now)
            except Exception:
                # A bug must not cost the user the session: the event is dropped,
                # logged, answered, and the session goes on.
                log.exception("session event failed", session_id=self.session_id,
                              event_type=type(event).__name__)
                await self._internal_error()
        now = trio.current_time()
        if not self._finished and now >= self._timers_rest_until:
            try:
                await self._on_timers(now)
            except Exception:
                # The same timer would fail again at once: timers rest a while (frames
                # and node events are still handled meanwhile).
                log.exception("session timer failed", session_id=self.session_id)
                self._timers_rest_until = now + TIMER_REST_S
                await self._internal_error()

    async def _internal_error(self) -> None:
        """Tell the client once: the web client shows every ``error`` as an alert."""
        if not self._told_internal_error:
            self._told_internal_error = True
            await self.send_error(
                ErrorCode.INTERNAL_ERROR, "the scheduler hit an internal error; the session goes on"
            )

    def _next_deadline(self) -> float:
        deadlines = [
            self._last_client_at + self._config.sessions.idle_timeout_s,
            self._segmenter.next_deadline(),
            self._hangover.next_deadline(),
            self._ordered.next_deadline(),
            self._utterances.next_deadline(),
            self._jobs.next_deadline(),
        ]
        if self._closing_deadline is not None:
            deadlines.append(self._closing_deadline)
        return max(min(deadlines, default=math.inf), self._timers_rest_until)

    async def _handle(self, event: Any, now: float) -> None:
        if event is NUDGE:  # after a frame handled in place
            await self._close_as_asked()
            return
        match event:
            case ClientFrame():
                self._last_client_at = now
                await self._on_client_frame(event)
            case ClientGone():
                self._finished = True
            case _ if isinstance(event, NODE_EVENTS):
                await self._jobs.handle(event, now)

    async def _on_timers(self, now: float) -> None:
        if now >= self._last_client_at + self._config.sessions.idle_timeout_s:
            log.info("session idle; closing", session_id=self.session_id)
            await self._close(CloseCode.IDLE_TIMEOUT, "idle timeout")
            self._finished = True
            return
        segment = self._segmenter.on_timer(now)
        if segment is not None:
            await self._cut(segment, now)
        for held in self._hangover.release_due(now):
            await self._start_job_for_segment(held, now)
        await self._release_utterances(self._utterances.on_timer(now), now)
        await self._jobs.on_timers(now)
        await self._release(self._ordered.on_timer(now))
        if self._closing_deadline is not None:
            await self._maybe_finish_close(now)

    # -- client frames -----------------------------------------------------------------

    async def _on_client_frame(self, frame: ClientFrame) -> None:
        verdict = self._rate_limiter.check(frame.arrived_at)
        if verdict is not Verdict.ALLOW:
            await self._on_rate_limited(verdict)
            return
        if isinstance(frame.raw, bytes):
            await self.send_error(ErrorCode.INVALID_MESSAGE, "binary frames are not supported")
            return
        try:
            message = codec.decode(
                frame.raw, SESSION_INBOUND, self._config.server.decode_limits
            )
        except UnknownMessageType as exc:
            if exc.kind in ROOM_MESSAGE_TYPES:
                await self.send_error(
                    ErrorCode.UNSUPPORTED_FEATURE, f"{exc.kind}: rooms are not supported yet"
                )
            else:
                await self.send_error(exc.code, exc.message, exc.details)
            return
        except ProtocolError as exc:
            if self._spec is None:  # no session yet: this one is refused
                log.info("session refused", code=str(exc.code), why=exc.message)
            await self.send_error(exc.code, exc.message, exc.details)
            return
        if isinstance(message, SessionInit):
            await self._on_session_init(message, frame)
            return
        if self._spec is None:
            await self.send_error(
                ErrorCode.INVALID_SESSION, "no session on this socket: send session_init first"
            )
            return
        if message.session_id != self._spec.session_id:
            await self.send_error(
                ErrorCode.INVALID_SESSION,
                f"session_id {message.session_id[:64]!r} does not belong to this socket",
                {"field": "session_id"},
            )
            return
        if self._closing_deadline is not None:
            await self.send_error(ErrorCode.SESSION_CLOSED, "the session is closing")
            return
        now = trio.current_time()
        match message:
            case AudioChunk():
                await self._on_audio_chunk(message, frame, now)
            case Utterance():
                await self._on_utterance(message, frame, now)
            case ClientHeartbeat():
                await self.send(ServerHeartbeat(self._spec.session_id, self._services.clock_ms()))
            case SessionClose():
                await self._on_session_close(now)
            case TtsStarted():
                # Group ids are the client's strings: only a bounded prefix is kept.
                self._groups.playback_started(message.group_id[:64], now)
                limit_s = self._config.segmentation.max_playback_suspend_ms / 1000
                self._segmenter.suspend_pause_timer(until=now + limit_s)
            case TtsPlayEnded():
                self._groups.playback_ended(message.group_id[:64], now)
                if not self._groups.playing(now):
                    self._segmenter.restart_pause_timer(now)

    async def _on_session_init(self, message: SessionInit, frame: ClientFrame) -> None:
        if self._spec is not None:
            await self.send_error(
                ErrorCode.INVALID_MESSAGE,
                f"this socket already has session {self._spec.session_id}",
            )
            return
        sessions = self._services.sessions
        session_id = new_session_id()
        while session_id in sessions:
            session_id = new_session_id()
        checked = check_session_init(message, session_id)
        if isinstance(checked, Rejection):
            log.info("session refused", code=str(checked.code), why=checked.message)
            await self.send_error(checked.code, checked.message, checked.details)
            return
        if message.pairing_code:
            snapshot = self._dispatcher.snapshot
            node_id = snapshot.paired_node(message.pairing_code, trio.current_time())
            if node_id is None:
                log.info("session refused", code="INVALID_PAIRING_CODE", why="unknown code")
                await self.send_error(
                    ErrorCode.INVALID_PAIRING_CODE, "pairing code is unknown or has expired",
                    {"field": "pairing_code"},
                )
                return
            checked = attrs.evolve(checked, pinned_node_id=node_id)
        self._spec = checked
        self._jobs.bind(Binding(session_id, checked.trace_id, checked.pinned_node_id))
        self._needs = checked.needs()
        sessions[session_id] = self
        log.info("session started", session_id=session_id, pools=sorted(self._needs.pools))
        await self.send(
            SessionInitAck(
                session_id=session_id,
                message="session created",
                trace_id=checked.trace_id,
                assigned_node_id=checked.pinned_node_id,
            )
        )

    async def _claim_audio_path(self, path: str) -> bool:
        """A session streams ``audio_chunk`` or sends ``utterance``, never both: each path
        numbers utterances on its own, and one index must mean one job."""
        if self._audio_path is None:
            self._audio_path = path
        if self._audio_path == path:
            return True
        await self.send_error(
            ErrorCode.INVALID_MESSAGE,
            f"this session sends {self._audio_path}; {path} is not accepted on it",
            {"field": "type"},
        )
        return False

    async def _on_audio_chunk(self, message: AudioChunk, frame: ClientFrame, now: float) -> None:
        if not await self._claim_audio_path("audio_chunk"):
            return
        limit = self._config.sessions.max_chunk_bytes
        if message.payload and len(message.payload) * 3 // 4 > limit:
            await self.send_error(
                ErrorCode.INVALID_MESSAGE, f"audio chunk larger than {limit} bytes",
                {"field": "payload"},
            )
            return
        payload = decode_base64(message.payload)
        if payload is None:
            self.undecodable_payloads += 1
            payload = b""
        segment = self._segmenter.add_chunk(
            now, payload, message.is_final, message.client_timestamp_ms, frame.received_at_ms
        )
        if segment is not None:
            await self._cut(segment, now)

    async def _on_rate_limited(self, verdict: Verdict) -> None:
        if verdict is Verdict.CLOSE:
            log.warning("session over its message rate; closing", session_id=self.session_id)
            await self._close(CloseCode.POLICY_VIOLATION, "message rate limit exceeded")
            self._finished = True
        elif verdict is Verdict.REFUSE:
            limit = self._config.sessions.max_messages_per_s
            await self.send_error(
                ErrorCode.RATE_LIMITED,
                f"more than {limit:g} messages per second: messages are being dropped",
            )

    async def _on_utterance(self, message: Utterance, frame: ClientFrame, now: float) -> None:
        """Client-indexed utterances are dispatched in index order; a repeated index is
        idempotent (the existing job stands and is not re-sent)."""
        index = message.utterance_index
        ahead = self._config.sessions.max_index_ahead
        if index < 0 or index > self._utterances.next_index + ahead:
            await self.send_error(
                ErrorCode.INVALID_MESSAGE,
                f"utterance_index {index} is outside [{self._utterances.next_index}, "
                f"{self._utterances.next_index + ahead}]",
                {"field": "utterance_index"},
            )
            return
        if not await self._claim_audio_path("utterance"):
            return
        if index in self._waiting_audio:
            return  # a repeat of an utterance still waiting: idempotent, nothing to do
        audio = decode_base64(message.audio)
        if audio is None:
            await self.send_error(
                ErrorCode.INVALID_MESSAGE, "audio is not valid base64", {"field": "audio"}
            )
            return
        assert self._spec is not None
        spec = check_utterance(message, self._spec)
        if isinstance(spec, Rejection):
            await self.send_error(spec.code, spec.message, spec.details)
            return
        waits = index > self._utterances.next_index
        if waits:
            # Utterances that wait for lower indexes hold their audio: bounded per session.
            limit = self._config.sessions.max_waiting_utterance_bytes
            if self._waiting_audio_bytes + len(audio) > limit:
                await self.send_error(
                    ErrorCode.RATE_LIMITED,
                    f"more than {limit} bytes of audio wait for utterance "
                    f"{self._utterances.next_index}; send it first",
                    {"field": "utterance_index"},
                )
                return
        dropped = self._utterances.dropped_late
        released = self._utterances.put(index, (message, spec, audio, frame.received_at_ms), now)
        if waits and self._utterances.dropped_late == dropped:  # stored, waiting
            self._waiting_audio[index] = len(audio)
            self._waiting_audio_bytes += len(audio)
        await self._release_utterances(released, now)

    async def _release_utterances(self, released: list[Release], now: float) -> None:
        for item in released:
            if isinstance(item, Deliver):
                self._waiting_audio_bytes -= self._waiting_audio.pop(item.index, 0)
                await self._start_job_for_utterance(*item.item, now)
            else:  # the client never sent this index: report the gap in order
                await self._release(
                    self._ordered.put(item.index, Outcome(item.index, None, "gap"), now)
                )

    async def _start_job_for_utterance(
        self, message: Utterance, spec: SessionSpec, audio: bytes, received_at_ms: int,
        now: float,
    ) -> None:
        index = message.utterance_index
        seg = self._config.segmentation
        measured = utterance_measure_ms(
            audio, message.audio_format, message.sample_rate, seg.silent_packet_max_bytes
        )
        if measured is not None and (
            measured[0] < seg.min_utterance_ms or measured[1] < seg.min_voiced_ms
        ):
            # Too short or too silent to hold speech (as on the audio_chunk path), but the
            # client numbered it: its index is reported as silence so delivery moves on.
            self.discarded_short_utterances += 1
            await self._release(self._ordered.put(index, Outcome(index, None, "silence"), now))
            return
        job = self._new_job(
            index=message.utterance_index,
            audio=audio,
            audio_format=message.audio_format,
            sample_rate=message.sample_rate,
            padding_ms=None,
            turn_id=None,
            flags={"is_manual_cut": message.manual_cut},
            now=now,
            received_at_ms=received_at_ms,
            first_client_ts_ms=None,
            spec=spec,
        )
        await self._jobs.start(job, now)

    async def _on_session_close(self, now: float) -> None:
        segment = self._segmenter.flush(now)
        if segment is not None:
            await self._cut(segment, now)
        for held in self._hangover.release_all():
            await self._start_job_for_segment(held, now)
        await self._release_utterances(self._utterances.on_timer(math.inf), now)
        self._closing_deadline = now + self._config.sessions.close_drain_ms / 1000
        await self._maybe_finish_close(now)

    async def _maybe_finish_close(self, now: float) -> None:
        assert self._closing_deadline is not None
        if self._jobs.unfinished and now < self._closing_deadline:
            return
        if self._ordered.pending_count:
            await self._release(self._ordered.on_timer(math.inf))
        assert self._spec is not None
        self._closing_deadline = None
        await self.send(SessionCloseAck(self._spec.session_id))
        await self._close(CloseCode.NORMAL, "session closed")
        self._finished = True

    # -- jobs --------------------------------------------------------------------------

    async def _cut(self, segment: Segment, now: float) -> None:
        """An utterance was cut: it waits out its hangover, then becomes a job."""
        for ready in self._hangover.hold(segment):
            await self._start_job_for_segment(ready, now)

    async def _start_job_for_segment(self, segment: Segment, now: float) -> None:
        job = self._new_job(
            index=segment.utterance_index,
            audio=segment.audio,
            audio_format="opus",
            sample_rate=16000,
            padding_ms=segment.padding_ms,
            turn_id=segment.turn_id,
            flags={
                "is_manual_cut": segment.is_manual_cut,
                "is_timeout_triggered": segment.is_timeout_triggered,
                "is_max_duration_triggered": segment.is_max_duration_triggered,
            },
            now=now,
            received_at_ms=segment.first_received_at_ms or self._services.clock_ms(),
            first_client_ts_ms=segment.first_client_ts_ms,
        )
        await self._jobs.start(job, now)

    def _new_job(
        self,
        *,
        index: int,
        audio: bytes,
        audio_format: str,
        sample_rate: int,
        padding_ms: int | None,
        turn_id: str | None,
        flags: dict[str, bool],
        now: float,
        received_at_ms: int,
        first_client_ts_ms: float | None,
        spec: SessionSpec | None = None,
    ) -> Job:
        """A job run with the session's settings, or with ``spec`` (an ``utterance``'s)."""
        assert self._spec is not None and self._needs is not None
        needs = self._needs if spec is None or spec == self._spec else spec.needs()
        spec = spec or self._spec
        job_id = new_job_id()
        assign = JobAssign(
            job_id=job_id,
            attempt_id=1,
            session_id=spec.session_id,
            utterance_index=index,
            src_lang=spec.src_lang,
            tgt_lang=spec.tgt_lang,
            dialect=spec.dialect,
            features=spec.features,
            pipeline=spec.pipeline,
            audio=base64.b64encode(audio).decode("ascii"),
            audio_format=audio_format,
            sample_rate=sample_rate,
            trace_id=spec.trace_id,
            mode=spec.mode,
            lang_a=spec.lang_a,
            lang_b=spec.lang_b,
            auto_langs=spec.auto_langs,
            enable_streaming_asr=spec.enable_streaming_asr,
            partial_update_interval_ms=spec.partial_update_interval_ms,
            padding_ms=padding_ms,
            turn_id=turn_id,
            **flags,
        )
        job = Job(
            job_id=job_id,
            utterance_index=index,
            assign=assign,
            needs=needs,
            attempt_id=1,
            created_at=now,
            received_at_ms=received_at_ms,
            first_client_ts_ms=first_client_ts_ms,
        )
        return job

    # -- output ------------------------------------------------------------------------

    async def _release(self, released: list[Release]) -> None:
        spec = self._spec
        if spec is None:
            return
        self._summary.told(released)
        texts = []
        for item in released:
            sent_at_ms = self._services.clock_ms()
            if isinstance(item, Deliver):
                outcome = item.item
                has_speech = outcome.result is not None and bool(outcome.result.text_asr)
                frames = outcome_frames(
                    outcome, session_id=spec.session_id, trace_id=spec.trace_id,
                    sent_at_ms=sent_at_ms,
                    group=self._groups.assign(trio.current_time(), has_speech),
                )
            else:
                frames = [gap_frame(item.index, session_id=spec.session_id,
                                    trace_id=spec.trace_id, sent_at_ms=sent_at_ms)]
            texts += [codec.encode(frame) for frame in frames]
        await self._send_texts(texts)
        for item in released:
            self._services.metrics.released(self.session_id, item)

    async def send(self, message: Any) -> None:
        await self._send_texts([codec.encode(message)])

    async def send_error(
        self, code: ErrorCode | str, message: str, details: dict | None = None
    ) -> None:
        await self._send_texts([codec.encode_error(code, message, details)])

    async def _send_texts(self, texts: list[str]) -> None:
        """Send frames in order, under one deadline (an outcome is up to three frames)."""
        if self._finished or not texts:
            return
        try:
            sent = await send_texts(self._ws, texts, self._config.server.send_timeout_s)
        except trio_websocket.ConnectionClosed:
            # The browser is gone; the reader reports it too. Stop, clean up after.
            self._finished = True
            return
        if not sent:
            # A browser that stops reading would pin this task (and its timers) forever.
            log.warning("session not reading; dropping it", session_id=self.session_id)
            self._finished = True

    async def _close_as_asked(self) -> None:
        if self._close_asked is not None:
            code, reason = self._close_asked
            self._close_asked = None
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Close the socket; a peer that never answers the close does not hold us.

        From a frame handled in place, the session task closes it, at once after."""
        if self._in_place:
            self._close_asked = (code, reason)
            return
        with trio.move_on_after(self._config.server.send_timeout_s):
            await self._ws.aclose(code, reason)

    # -- the end -------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery) -> None:
        self._jobs.attach(nursery)

    async def cleanup(self) -> None:
        """Stop everything of the session: forget its id, cancel its jobs on the nodes and
        free their slots. Runs after the socket is gone and nothing else of the session
        runs; it does not wait for anything."""
        self._services.metrics.session_ended(self)
        unfinished = len(list(self._jobs))
        self._jobs.cleanup(self._inbox.take_node_events())
        if self._spec is not None:
            self._services.sessions.pop(self._spec.session_id, None)
            log.info("session ended", session_id=self._spec.session_id, **self._summary.fields(
                trio.current_time(), unfinished=unfinished, closed=self._ws.closed))
        await trio.lowlevel.checkpoint()

    # -- what the jobs report (SessionJobs' JobReporter) -------------------------------

    async def job_ended(self, outcome: Outcome, now: float) -> None:
        await self._release(self._ordered.put(outcome.utterance_index, outcome, now))
