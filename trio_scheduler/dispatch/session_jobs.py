"""Every job of one session, from its creation to its one outcome.

The session task speaks the client protocol; this is the rest of a job's life: dispatch,
waiting for a node or for capacity, failover after a node loss, timeouts, and the node's
answers. It lives inside the session task (one task owns it, so it needs no lock) and
reaches the client only through the small :class:`JobReporter` the session gives it.

A node is reached through the dispatcher, whatever its kind: this module never looks at
how a node is connected, so a node on another instance is just another node.

Why attempts run in child tasks
-------------------------------
A dispatch attempt makes one call to the store (the reservation), and a store can be slow
or frozen. The session must keep answering heartbeats, control frames and node results
meanwhile, so each attempt runs in a child task and reports back through the session's
inbox (:class:`AttemptDone`). With the embedded store, which never waits on anything
outside the process, the session makes the attempt itself and applies its report at
once: a child task per job, and then a turn of the inbox per report, were a good part of
a session's cost. One attempt is in flight per session at a time, taken from
a FIFO of jobs ready to try: that alone keeps a session's jobs reaching nodes in index
order, and a job never competes with its own session for a slot.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import structlog
import trio

from trio_scheduler.config import JobsConfig
from trio_scheduler.dispatch import job_log
from trio_scheduler.dispatch.dispatcher import (
    AllFull,
    CapacityFreed,
    Dispatched,
    Dispatcher,
    InvalidResult,
    NodeLost,
    NodeMessage,
    NoNode,
)
from trio_scheduler.dispatch.jobs import Job, JobEvent, JobState
from trio_scheduler.management.needs import Needs
from trio_scheduler.metrics.jobs import JobTally
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.errors import ErrorCode, map_node_error_code
from trio_scheduler.protocol.messages import (
    AsrPartialFromNode,
    AsrPartialToClient,
    Backpressure,
    JobAck,
    JobCancel,
    JobResult,
    JobStarted,
    UiEvent,
)
from trio_scheduler.sessions.outcomes import Outcome, is_silence
from trio_scheduler.store.base import StoreUnavailable

log = structlog.get_logger(__name__)


# -- what an attempt reports back ------------------------------------------------------


@attrs.frozen
class StoreDown:
    """The store did not answer in time: nothing was reserved, nothing sent."""

    error: str


@attrs.frozen
class AttemptBroke:
    """The attempt failed with an unexpected error (a bug): the job ends, the session goes on."""

    error: str


AttemptOutcome = Dispatched | NoNode | AllFull | StoreDown | AttemptBroke


@attrs.frozen
class AttemptDone:
    job_id: str
    attempt_id: int
    outcome: AttemptOutcome


NODE_EVENTS = (NodeMessage, NodeLost, CapacityFreed, AttemptDone)


class Inbox(Protocol):
    def put_node(self, event: Any, *, force: bool = False) -> bool: ...


class JobReporter(Protocol):
    """How the jobs reach the session's client."""

    async def send(self, message: Any) -> None:
        """A frame for the client (``ui_event``, ``asr_partial``, ``backpressure``)."""

    async def send_error(self, code: ErrorCode, message: str) -> None:
        """An ``error`` frame: the web client shows each one as a blocking alert."""

    async def job_ended(self, outcome: Outcome, now: float) -> None:
        """The job's one outcome, for the session's ordered delivery."""


@attrs.frozen
class Binding:
    """What the jobs need to know of their session."""

    session_id: str
    trace_id: str
    pinned_node_id: str | None


class OutageAlerts:
    """At most one ``error`` frame per cause until that cause is over.

    The web client turns every ``error`` into a blocking alert, and an outage (no node,
    store down) would otherwise raise one per utterance. A cause alerts again only after
    a job of the session got through, which ends every outage at once.
    """

    def __init__(self) -> None:
        self._raised: set[ErrorCode] = set()

    def should_alert(self, cause: ErrorCode) -> bool:
        if cause in self._raised:
            return False
        self._raised.add(cause)
        return True

    def all_clear(self) -> None:
        self._raised.clear()


class SessionJobs:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        config: JobsConfig,
        inbox: Inbox,
        reporter: JobReporter,
        clock_ms: Callable[[], int],
        metrics: JobTally | None = None,
    ) -> None:
        self._metrics = metrics or JobTally()
        self._dispatcher = dispatcher
        self._config = config
        self._inbox = inbox
        self._reporter = reporter
        self._clock_ms = clock_ms
        self._session: Binding | None = None
        self._nursery: trio.Nursery | None = None
        self._jobs: dict[str, Job] = {}  # job_id -> job, in creation (so index) order
        self._ready: collections.deque[str] = collections.deque()  # jobs to try, in order
        self._trying: str | None = None  # the job whose attempt is in flight
        self._sticky_node_id: str | None = None
        self._paused_until = float("-inf")  # the client was asked to pause until then
        self._alerts = OutageAlerts()

    def bind(self, session: Binding) -> None:
        self._session = session

    @property
    def _session_id(self) -> str:
        return self._session.session_id if self._session is not None else "-"

    def attach(self, nursery: trio.Nursery) -> None:
        """Where attempts run: a nursery that lives as long as the session."""
        self._nursery = nursery

    # -- what the session task asks ------------------------------------------------------

    @property
    def unfinished(self) -> bool:
        return any(not j.state.terminal for j in self._jobs.values())

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def next_deadline(self) -> float:
        return min(
            (j.deadline for j in self._jobs.values()
             if j.deadline is not None and j.job_id != self._trying),
            default=float("inf"),
        )

    async def start(self, job: Job, now: float) -> None:
        """Take a new job and hand it to a node as soon as its turn comes."""
        self._jobs[job.job_id] = job
        self._metrics.job_started()
        self._ready.append(job.job_id)
        await self._try_next(now)

    async def handle(self, event: Any, now: float) -> None:
        """A node event routed to this session, or an attempt's report. If handling it
        fails (a bug), its job ends with ``job_failed`` rather than hanging."""
        try:
            await self._handle(event, now)
        except Exception:
            job_id = getattr(event, "job_id", None) or getattr(
                getattr(event, "message", None), "job_id", None)
            log.exception("job event failed", job_id=job_id, event_type=type(event).__name__)
            await self._broken(job_id, now)

    async def _handle(self, event: Any, now: float) -> None:
        match event:
            case AttemptDone():
                await self._on_attempt_done(event, now)
            case NodeMessage():
                await self._on_node_message(event, now)
            case NodeLost():
                await self._on_node_lost(event, now)
            case CapacityFreed():
                await self._on_capacity_freed(event, now)

    async def on_timers(self, now: float) -> None:
        for job in [
            j for j in self._jobs.values()
            if j.deadline is not None and now >= j.deadline and j.job_id != self._trying
        ]:
            try:
                await self._on_job_deadline(job, now)
            except Exception:
                log.exception("job deadline failed", job_id=job.job_id)
                await self._broken(job.job_id, now)

    async def _broken(self, job_id: str | None, now: float) -> None:
        """Handling something of this job failed (a bug): give its slot back and end it
        with ``job_failed``, so its utterance still gets an outcome."""
        job = self._jobs.get(job_id) if job_id is not None else None
        if job is None or job.state.terminal:
            return
        if job.reservation_held and job.node_id is not None:
            self._cancel_on_node(job, "internal error")
            self._release_slot(job)
        # An attempt in flight reports later and finds the job gone: it undoes itself.
        await self._fail(job, ErrorCode.INTERNAL_ERROR, "internal error", now)

    # -- attempts ------------------------------------------------------------------------

    async def _try_next(self, now: float) -> None:
        """Start the next ready job's attempt, unless one is in flight."""
        while self._trying is None and self._ready:
            job = self._jobs.get(self._ready.popleft())
            if job is None or job.state not in (JobState.CREATED, JobState.WAITING):
                continue
            if self._held_back(job):
                queued = self._dispatcher.wait_for_capacity(job.job_id, job.needs, self._inbox)
                await self._wait(job, now, for_capacity=True, queued=queued)
                continue
            session = self._session
            assert session is not None and self._nursery is not None
            self._trying = job.job_id
            attempt = (
                job.job_id,
                job.attempt_id,
                codec.encode(attrs.evolve(job.assign, attempt_id=job.attempt_id)),
                job.needs,
                frozenset(job.lost_nodes),
                self._sticky_node_id,
                session,
            )
            if self._dispatcher.store_answers_at_once:
                # Nothing to wait for: no child task, and the report is applied at once.
                # The loop then goes on with the next ready job, as _try_next would.
                await self._settle_attempt(await self._attempt(*attempt), now)
            else:
                self._nursery.start_soon(self._report_attempt, *attempt)

    async def _report_attempt(self, *attempt: Any) -> None:
        """An attempt in a child task, reported back through the inbox."""
        # Never dropped: the session must learn of a slot this attempt holds.
        self._inbox.put_node(await self._attempt(*attempt), force=True)

    async def _attempt(
        self,
        job_id: str,
        attempt_id: int,
        frame: str,
        needs: Needs,
        exclude: frozenset[str],
        sticky_node_id: str | None,
        session: Binding,
    ) -> AttemptDone:
        """One dispatch try, and its report; in a child task unless the store answers at
        once."""
        outcome: AttemptOutcome
        try:
            outcome = await self._dispatcher.dispatch(
                job_id=job_id,
                attempt_id=attempt_id,
                frame=frame,
                needs=needs,
                session_id=session.session_id,
                inbox=self._inbox,
                sticky_node_id=sticky_node_id,
                exclude=exclude,
                pinned_node_id=session.pinned_node_id,
            )
        except StoreUnavailable as exc:
            outcome = StoreDown(str(exc))
        except Exception as exc:
            log.exception("dispatch attempt failed", job_id=job_id, session_id=session.session_id)
            outcome = AttemptBroke(f"{type(exc).__name__}: {exc}")
        return AttemptDone(job_id, attempt_id, outcome)

    async def _on_attempt_done(self, event: AttemptDone, now: float) -> None:
        await self._settle_attempt(event, now)
        await self._try_next(now)

    async def _settle_attempt(self, event: AttemptDone, now: float) -> None:
        """Apply an attempt's report to its job. If that fails (a bug), the job ends with
        ``job_failed`` and what the attempt took goes back: the node was already sent
        the job, so it is told to drop it, and the slot is released."""
        self._trying = None
        job = self._jobs.get(event.job_id)
        if job is None or job.state.terminal or job.attempt_id != event.attempt_id:
            # The job ended while its attempt was in flight (an earlier attempt's node
            # answered): a slot it took goes straight back, a wait it began ends.
            self._abandon_attempt(event)
            return
        try:
            await self._apply_attempt(job, event.outcome, now)
        except Exception:
            log.exception("job event failed", job_id=job.job_id, event_type="AttemptDone")
            if not (job.reservation_held and job.node_id is not None):
                self._abandon_attempt(event)  # the job never took over what it holds
            await self._broken(job.job_id, now)

    async def _apply_attempt(self, job: Job, outcome: AttemptOutcome, now: float) -> None:
        session = self._session
        assert session is not None
        match outcome:
            case Dispatched(node_id=node_id):
                self._transition(job, JobEvent.DISPATCH)
                job.node_id = node_id
                job.nodes_tried.add(node_id)
                job.dispatched_at = now
                job.dispatched_at_ms = self._clock_ms()
                job.deadline = now + self._config.timeout_ms / 1000
                self._metrics.job_dispatched(job, now)
                self._sticky_node_id = node_id
                self._alerts.all_clear()
                job_log.dispatched(job, session.session_id)
                await self._reporter.send(
                    UiEvent(session.trace_id, session.session_id, job.job_id,
                            job.utterance_index, "DISPATCHED")
                )
                # The slot may not have been the only one: the session's next job waiting
                # for the same nodes tries at once, and so on until one has to wait.
                following = self._oldest_waiting(job.needs)
                if following is not None and following.job_id not in self._ready:
                    self._ready.appendleft(following.job_id)
            case NoNode() if session.pinned_node_id is not None:
                self._dispatcher.stop_waiting(job.job_id)
                hint = "the paired node is not ready or cannot run this pipeline"
                await self._fail(job, ErrorCode.NODE_UNAVAILABLE, hint, now)
            case NoNode(queued=queued):
                # Nodes reconnect after a restart (the agent after 5 s): wait for one.
                await self._wait(job, now, for_capacity=False, queued=queued)
            case AllFull(queued=queued):
                await self._wait(job, now, for_capacity=True, queued=queued)
            case StoreDown(error=error):
                self._dispatcher.stop_waiting(job.job_id)
                log.warning("store unavailable; job failed", job_id=job.job_id, error=error)
                await self._alert(ErrorCode.SCHEDULER_DEPENDENCY_DOWN,
                                  "the scheduler's store is not answering; retrying with the "
                                  "next utterance")
                await self._fail(job, ErrorCode.SCHEDULER_DEPENDENCY_DOWN, "store unreachable",
                                 now)
            case AttemptBroke():
                self._dispatcher.stop_waiting(job.job_id)
                await self._fail(job, ErrorCode.INTERNAL_ERROR, "internal error", now)

    def _abandon_attempt(self, event: AttemptDone) -> None:
        """Undo what an attempt did for a job that no longer wants it."""
        match event.outcome:
            case Dispatched(node_id=node_id):
                self._send_cancel(node_id, event.job_id, "job already ended")
                self._dispatcher.release(event.job_id, event.attempt_id, node_id)
                self._dispatcher.forget(event.job_id)
            case NoNode() | AllFull():
                self._dispatcher.stop_waiting(event.job_id)

    # -- waiting -------------------------------------------------------------------------

    async def _wait(self, job: Job, now: float, *, for_capacity: bool, queued: bool) -> None:
        """The job waits (``queued`` by the dispatcher) for a slot (nodes exist, all full)
        or for a node to appear."""
        if job.state is JobState.WAITING:
            # A wake-up it could not use: back to sleep at its place, the wake goes on.
            self._dispatcher.keep_waiting(job.job_id)
            return
        if not queued:
            await self._give_up(job, now, reason="the waiting queue is full")
            return
        self._transition(job, JobEvent.WAIT)
        job_log.waiting(job, self._session_id, for_capacity=for_capacity)
        wait_ms = self._config.pending_timeout_ms if for_capacity else self._config.no_node_wait_ms
        job.deadline = now + wait_ms / 1000
        if for_capacity and now >= self._paused_until:
            # The web client handles only PAUSE well (BUSY can mute it for good).
            pause_ms = self._config.backpressure_pause_ms
            self._paused_until = now + pause_ms / 1000
            await self._reporter.send(Backpressure("PAUSE", pause_ms))

    async def _give_up(self, job: Job, now: float, *, reason: str) -> None:
        """End a job that found no slot: overloaded when nodes exist, else no node."""
        self._dispatcher.stop_waiting(job.job_id)
        session = self._session
        assert session is not None
        candidates = self._dispatcher.snapshot.candidates(job.needs) - job.lost_nodes
        if session.pinned_node_id is not None:
            candidates &= {session.pinned_node_id}
            if not candidates:
                hint = "the paired node is not ready or cannot run this pipeline"
                await self._fail(job, ErrorCode.NODE_UNAVAILABLE, hint, now)
                return
        if candidates:
            await self._fail(job, ErrorCode.NODE_OVERLOADED, f"all nodes busy; {reason}", now)
        elif job.lost_nodes:
            await self._fail(job, ErrorCode.NODE_UNAVAILABLE, "no other node can take the job",
                             now)
        else:
            await self._alert(ErrorCode.NO_AVAILABLE_NODE,
                              f"no node serves {job.needs.describe()} right now")
            await self._fail(job, None, None, now)

    async def _on_capacity_freed(self, event: CapacityFreed, now: float) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or job.state is not JobState.WAITING:
            return
        if job.job_id not in self._ready and job.job_id != self._trying:
            self._ready.append(job.job_id)
        await self._try_next(now)

    def _oldest_waiting(self, needs: Needs) -> Job | None:
        """The session's earliest job waiting for capacity on exactly the nodes ``needs``
        selects (same needs, none excluded). Jobs are kept in creation order, which is
        index order."""
        return next(
            (
                j
                for j in self._jobs.values()
                if j.state is JobState.WAITING and j.needs == needs and not j.lost_nodes
            ),
            None,
        )

    def _held_back(self, job: Job) -> bool:
        """Keep the session's order: a new job does not take a slot before an earlier one
        waiting for the same nodes (a node buffers audio across a turn). It goes on when no
        node serves it at all, so it waits for a node on its own account."""
        if job.state is not JobState.CREATED or job.nodes_tried:
            return False
        if self._oldest_waiting(job.needs) is None:
            return False
        session = self._session
        assert session is not None
        candidates = self._dispatcher.snapshot.candidates(job.needs)
        if session.pinned_node_id is not None:
            candidates &= {session.pinned_node_id}
        return bool(candidates)

    # -- timeouts and node loss ----------------------------------------------------------

    async def _on_job_deadline(self, job: Job, now: float) -> None:
        if job.state is JobState.WAITING:
            await self._give_up(job, now, reason="waited too long")
            # Jobs held back behind this one never asked the store themselves: the next
            # one asks now (a slot may have come back without a release of ours, e.g. a
            # reservation expiring), or it would wait on a wake-up that never comes.
            following = self._oldest_waiting(job.needs)
            if following is not None and following.job_id not in self._ready:
                self._ready.append(following.job_id)
                await self._try_next(now)
        elif job.reservation_held:
            self._cancel_on_node(job, "timeout")
            self._release_slot(job)
            self._transition(job, JobEvent.TIME_OUT)
            await self._finish(job, Outcome(job.utterance_index, job.job_id, "timeout",
                                            error_code=ErrorCode.JOB_TIMEOUT,
                                            hint="no result in time"), now)

    async def _on_node_lost(self, event: NodeLost, now: float) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or not job.reservation_held or job.node_id != event.node_id:
            return
        job.lost_nodes.add(event.node_id)
        self._release_slot(job)
        self._transition(job, JobEvent.NODE_LOST)
        job.deadline = None
        if job.attempt_id >= self._config.max_attempts:
            await self._fail(job, ErrorCode.NODE_UNAVAILABLE, "node lost, attempts exhausted", now)
            return
        job.attempt_id += 1
        log.info("re-dispatching job after node loss", job_id=job.job_id,
                 attempt_id=job.attempt_id, lost=event.node_id)
        self._ready.append(job.job_id)
        await self._try_next(now)

    # -- the node's answers --------------------------------------------------------------

    async def _on_node_message(self, event: NodeMessage, now: float) -> None:
        message = event.message
        job = self._jobs.get(message.job_id)
        if job is None or job.state.terminal:
            self._dispatcher.counters.inc("node_frames_after_end")
            return
        session = self._session
        assert session is not None
        match message:
            case JobAck():
                if job.node_id == event.node_id and self._transition(job, JobEvent.ACK):
                    await self._reporter.send(UiEvent(session.trace_id, session.session_id,
                                                      job.job_id, job.utterance_index,
                                                      "NODE_ACCEPTED"))
            case JobStarted():
                self._transition(job, JobEvent.START)
            case AsrPartialFromNode():
                self._transition(job, JobEvent.START)
                await self._reporter.send(UiEvent(session.trace_id, session.session_id,
                                                  job.job_id, job.utterance_index, "ASR_PARTIAL"))
                await self._reporter.send(
                    AsrPartialToClient(session.session_id, job.utterance_index, job.job_id,
                                       message.text, message.is_final, session.trace_id)
                )
            case JobResult():
                await self._on_job_result(job, message, event, now)
            case InvalidResult(reason=reason):
                if job.reservation_held:
                    if job.node_id != event.node_id:
                        self._cancel_on_node(job, "answered by an earlier attempt")
                    self._release_slot(job)
                await self._fail(job, ErrorCode.INTERNAL_ERROR,
                                 f"the node's result could not be read: {reason}", now)

    async def _on_job_result(
        self, job: Job, result: JobResult, event: NodeMessage, now: float
    ) -> None:
        error_code = result.error.code if result.error else None
        if not result.success and error_code == "DUPLICATE_JOB_ID":
            # The node already holds this job (sent before a reconnect): its answer to
            # the first copy is still coming. Nothing is re-sent; the job timeout bounds it.
            self._dispatcher.counters.inc("duplicate_job_id_refusals")
            return
        if job.reservation_held:
            if job.node_id != event.node_id:
                # An earlier attempt's node answered (it came back): the current attempt
                # is moot, and its node must not go on running it in a freed slot.
                self._cancel_on_node(job, "answered by an earlier attempt")
            self._release_slot(job)
        common = dict(
            utterance_index=job.utterance_index,
            job_id=job.job_id,
            dispatched_at_ms=job.dispatched_at_ms,
            audio_received_at_ms=job.received_at_ms,
            first_client_ts_ms=job.first_client_ts_ms,
        )
        if not result.success:
            self._transition(job, JobEvent.FAIL)
            error = result.error
            outcome = Outcome(
                kind="failed",
                error_code=map_node_error_code(error.code if error else None),
                hint=error.message if error else "the node reported a failure",
                **common,
            )
        elif is_silence(result):
            self._transition(job, JobEvent.FINISH)
            outcome = Outcome(kind="silence", **common)
        else:
            self._transition(job, JobEvent.FINISH)
            outcome = Outcome(
                kind="result", result=result, result_received_at_ms=event.received_at_ms, **common
            )
        await self._finish(job, outcome, now)

    # -- endings -------------------------------------------------------------------------

    async def _alert(self, cause: ErrorCode, message: str) -> None:
        if self._alerts.should_alert(cause):
            await self._reporter.send_error(cause, message)

    def _transition(self, job: Job, event: JobEvent) -> bool:
        """Apply a job event; an illegal one is ignored and counted, never raised."""
        if job.apply(event):
            return True
        self._dispatcher.counters.inc("illegal_job_transitions")
        return False

    async def _fail(
        self, job: Job, code: ErrorCode | None, hint: str | None, now: float
    ) -> None:
        self._transition(job, JobEvent.FAIL)
        await self._finish(
            job,
            Outcome(job.utterance_index, job.job_id, "failed", error_code=code, hint=hint),
            now,
        )

    async def _finish(self, job: Job, outcome: Outcome, now: float) -> None:
        job_log.ended(job, outcome, self._session_id)
        self._metrics.job_finished(self._session.session_id if self._session else "-", job, outcome)
        job.deadline = None
        self._dispatcher.forget(job.job_id)
        del self._jobs[job.job_id]
        await self._reporter.job_ended(outcome, now)

    def _release_slot(self, job: Job) -> None:
        assert job.node_id is not None
        self._dispatcher.release(job.job_id, job.attempt_id, job.node_id)

    def _cancel_on_node(self, job: Job, reason: str) -> None:
        if job.node_id is not None:
            self._send_cancel(job.node_id, job.job_id, reason)

    def _send_cancel(self, node_id: str, job_id: str, reason: str) -> None:
        node = self._dispatcher.node(node_id)
        if node is not None:
            trace_id = self._session.trace_id if self._session else None
            node.link.cancel(job_id, codec.encode(JobCancel(job_id, trace_id, reason)))

    def cleanup(self, unhandled: list[Any]) -> None:
        """The session is gone: cancel its jobs on the nodes, give their slots back and
        stop routing their answers. ``unhandled`` are the inbox's events the session never
        got to, taken after every attempt ended: a slot an attempt took is among them.
        Nothing here waits, so a stalled store cannot leave a ghost job behind."""
        for event in unhandled:
            if isinstance(event, AttemptDone):
                self._abandon_attempt(event)
        for job in list(self._jobs.values()):
            if job.reservation_held:
                self._cancel_on_node(job, "session closed")
                self._release_slot(job)
            self._transition(job, JobEvent.CANCEL)
            self._metrics.job_cancelled()
            self._dispatcher.forget(job.job_id)  # also stops its wait
        self._jobs.clear()
        self._ready.clear()
