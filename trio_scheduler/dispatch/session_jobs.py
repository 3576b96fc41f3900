"""Every job of one session, from its creation to its one outcome.

The session task speaks the client protocol; this is the rest of a job's life: dispatch,
waiting for capacity, failover after a node loss, timeouts, and the node's answers. It
lives inside the session task (one task owns it, so it needs no lock) and reaches the
client only through the small :class:`JobReporter` the session gives it.

A node is reached through the dispatcher, whatever its kind: this module never looks at
how a node is connected, so a node on another instance is just another node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import structlog

from trio_scheduler.config import JobsConfig
from trio_scheduler.dispatch.dispatcher import (
    AllFull,
    CapacityFreed,
    Dispatched,
    Dispatcher,
    Inbox,
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

NODE_EVENTS = (NodeMessage, NodeLost, CapacityFreed)


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
        self._jobs: dict[str, Job] = {}  # job_id -> job, in creation (so index) order
        self._sticky_node_id: str | None = None
        self._busy_signalled = False

    def bind(self, session: Binding) -> None:
        self._session = session

    # -- what the session task asks ------------------------------------------------------

    @property
    def unfinished(self) -> bool:
        return any(not j.state.terminal for j in self._jobs.values())

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def next_deadline(self) -> float:
        return min((j.deadline for j in self._jobs.values() if j.deadline is not None),
                   default=float("inf"))

    async def start(self, job: Job, now: float) -> None:
        """Take a new job and try to hand it to a node."""
        self._jobs[job.job_id] = job
        self._metrics.job_started()
        await self._dispatch(job, now)

    async def handle(self, event: Any, now: float) -> None:
        """A node event routed to this session by the dispatcher."""
        match event:
            case NodeMessage():
                await self._on_node_message(event, now)
            case NodeLost():
                await self._on_node_lost(event, now)
            case CapacityFreed():
                await self._on_capacity_freed(event, now)

    async def on_timers(self, now: float) -> None:
        for job in [j for j in self._jobs.values() if j.deadline is not None and now >= j.deadline]:
            await self._on_job_deadline(job, now)

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch(self, job: Job, now: float) -> None:
        """One dispatch try; on failure the job waits for capacity or ends with an outcome."""
        session = self._session
        assert session is not None
        frame = codec.encode(attrs.evolve(job.assign, attempt_id=job.attempt_id))
        try:
            if self._held_back(job):
                outcome: Dispatched | NoNode | AllFull = AllFull()
            else:
                outcome = await self._dispatcher.dispatch(
                    job_id=job.job_id,
                    attempt_id=job.attempt_id,
                    frame=frame,
                    needs=job.needs,
                    session_id=session.session_id,
                    inbox=self._inbox,
                    sticky_node_id=self._sticky_node_id,
                    exclude=frozenset(job.lost_nodes),
                    pinned_node_id=session.pinned_node_id,
                )
        except StoreUnavailable:
            await self._fail(job, ErrorCode.SCHEDULER_DEPENDENCY_DOWN, "store unreachable", now)
            return
        match outcome:
            case Dispatched(node_id=node_id):
                self._dispatcher.stop_waiting(job.job_id, took_slot=True)
                self._transition(job, JobEvent.DISPATCH)
                job.node_id = node_id
                job.nodes_tried.add(node_id)
                job.dispatched_at = now
                job.dispatched_at_ms = self._clock_ms()
                job.deadline = now + self._config.timeout_ms / 1000
                self._metrics.job_dispatched(job, now)
                self._sticky_node_id = node_id
                if not any(j.state is JobState.WAITING for j in self._jobs.values()):
                    self._busy_signalled = False
                await self._reporter.send(
                    UiEvent(session.trace_id, session.session_id, job.job_id,
                            job.utterance_index, "DISPATCHED")
                )
            case NoNode():
                self._dispatcher.stop_waiting(job.job_id)
                if session.pinned_node_id is not None:
                    hint = "the paired node is not ready or cannot run this pipeline"
                    await self._fail(job, ErrorCode.NODE_UNAVAILABLE, hint, now)
                elif job.lost_nodes:
                    await self._fail(
                        job, ErrorCode.NODE_UNAVAILABLE, "no other node can take the job", now
                    )
                else:
                    await self._reporter.send_error(
                        ErrorCode.NO_AVAILABLE_NODE,
                        f"no node serves {job.needs.describe()} right now",
                    )
                    await self._fail(job, None, None, now)
            case AllFull():
                if job.state is JobState.WAITING:
                    self._dispatcher.keep_waiting(job.job_id)
                    return
                if not self._dispatcher.wait_for_capacity(job.job_id, job.needs, self._inbox):
                    await self._fail(
                        job, ErrorCode.NODE_OVERLOADED, "all nodes busy, queue full", now
                    )
                    return
                self._transition(job, JobEvent.WAIT)
                job.deadline = now + self._config.pending_timeout_ms / 1000
                if not self._busy_signalled:
                    self._busy_signalled = True
                    await self._reporter.send(Backpressure("BUSY"))

    async def _on_capacity_freed(self, event: CapacityFreed, now: float) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or job.state is not JobState.WAITING:
            return
        await self._dispatch(job, now)
        # More room may be free than this one wake-up says (jobs that queued behind this
        # one without trying): the session's next waiting jobs with the same needs try,
        # in order, until one has to wait again.
        needs = job.needs
        while job.state is not JobState.WAITING:
            job = self._oldest_waiting(needs)
            if job is None:
                return
            await self._dispatch(job, now)

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
        node serves it at all, so that is still reported at once."""
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
            self._dispatcher.stop_waiting(job.job_id)
            await self._fail(job, ErrorCode.NODE_OVERLOADED, "all nodes busy", now)
            # Jobs held back behind this one never asked the store themselves: the next
            # one asks now (a slot may have come back without a release of ours, e.g. a
            # reservation expiring), or it would wait on a wake-up that never comes.
            following = self._oldest_waiting(job.needs)
            if following is not None:
                await self._dispatch(following, now)
        elif job.reservation_held:
            self._cancel_on_node(job, "timeout")
            await self._release_slot(job)
            self._transition(job, JobEvent.TIME_OUT)
            await self._finish(job, Outcome(job.utterance_index, job.job_id, "timeout",
                                            error_code=ErrorCode.JOB_TIMEOUT,
                                            hint="no result in time"), now)

    async def _on_node_lost(self, event: NodeLost, now: float) -> None:
        job = self._jobs.get(event.job_id)
        if job is None or not job.reservation_held or job.node_id != event.node_id:
            return
        job.lost_nodes.add(event.node_id)
        await self._release_slot(job)
        self._transition(job, JobEvent.NODE_LOST)
        job.deadline = None
        if job.attempt_id >= self._config.max_attempts:
            await self._fail(job, ErrorCode.NODE_UNAVAILABLE, "node lost, attempts exhausted", now)
            return
        job.attempt_id += 1
        log.info("re-dispatching job after node loss", job_id=job.job_id,
                 attempt_id=job.attempt_id, lost=event.node_id)
        await self._dispatch(job, now)

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
            await self._release_slot(job)
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
        self._metrics.job_finished(self._session.session_id if self._session else "-", job, outcome)
        job.deadline = None
        self._dispatcher.forget(job.job_id)
        del self._jobs[job.job_id]
        await self._reporter.job_ended(outcome, now)

    async def _release_slot(self, job: Job) -> None:
        assert job.node_id is not None
        try:
            await self._dispatcher.release(job.job_id, job.attempt_id, job.node_id)
        except StoreUnavailable:
            log.warning("release failed; the reservation will expire", job_id=job.job_id)

    def _cancel_on_node(self, job: Job, reason: str) -> None:
        node = self._dispatcher.node(job.node_id) if job.node_id else None
        if node is not None:
            trace_id = self._session.trace_id if self._session else None
            node.link.send(codec.encode(JobCancel(job.job_id, trace_id, reason)))

    async def cleanup(self) -> None:
        """The session is gone: cancel its jobs on the nodes, give their slots back and
        stop routing their answers. The bookkeeping comes first, so a stalled store cannot
        leave a ghost job behind."""
        held = []
        for job in list(self._jobs.values()):
            if job.reservation_held:
                self._cancel_on_node(job, "session closed")
                held.append((job.job_id, job.attempt_id, job.node_id))
            self._transition(job, JobEvent.CANCEL)
            self._metrics.job_cancelled()
            self._dispatcher.forget(job.job_id)
        self._jobs.clear()
        for job_id, attempt_id, node_id in held:
            try:
                await self._dispatcher.release(job_id, attempt_id, node_id)
            except StoreUnavailable:
                log.warning("release failed; the reservation will expire", job_id=job_id)
