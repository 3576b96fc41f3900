"""Job records and their state machine.

A job is one utterance for one target language. It is owned by its session task; every
attempt to run it on a node has its own ``attempt_id`` and its own reservation. The state
machine is pure: an event that does not fit the current state is ignored and counted by
the caller, never raised into a connection task.
"""

from __future__ import annotations

import enum
import uuid

import attrs

from trio_scheduler.management.needs import Needs
from trio_scheduler.protocol.messages import JobAssign


class JobState(enum.StrEnum):
    CREATED = "created"
    WAITING = "waiting"  # for capacity
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})


class JobEvent(enum.StrEnum):
    WAIT = "wait"
    DISPATCH = "dispatch"
    ACK = "ack"
    START = "start"  # job_started or the first asr_partial
    FINISH = "finish"
    FAIL = "fail"
    CANCEL = "cancel"
    TIME_OUT = "time_out"
    NODE_LOST = "node_lost"  # back to created, to be dispatched again


_IN_FLIGHT = frozenset({JobState.DISPATCHED, JobState.ACCEPTED, JobState.RUNNING})
_TRANSITIONS: dict[JobEvent, tuple[frozenset[JobState], JobState]] = {
    JobEvent.WAIT: (frozenset({JobState.CREATED}), JobState.WAITING),
    JobEvent.DISPATCH: (frozenset({JobState.CREATED, JobState.WAITING}), JobState.DISPATCHED),
    JobEvent.ACK: (frozenset({JobState.DISPATCHED}), JobState.ACCEPTED),
    JobEvent.START: (frozenset({JobState.DISPATCHED, JobState.ACCEPTED}), JobState.RUNNING),
    # A result may also come from an earlier attempt's node while a re-dispatch waits.
    JobEvent.FINISH: (_IN_FLIGHT | {JobState.CREATED, JobState.WAITING}, JobState.FINISHED),
    JobEvent.FAIL: (_IN_FLIGHT | {JobState.CREATED, JobState.WAITING}, JobState.FAILED),
    JobEvent.CANCEL: (_IN_FLIGHT | {JobState.CREATED, JobState.WAITING}, JobState.CANCELLED),
    JobEvent.TIME_OUT: (_IN_FLIGHT | {JobState.WAITING}, JobState.TIMED_OUT),
    JobEvent.NODE_LOST: (_IN_FLIGHT, JobState.CREATED),
}


def next_state(state: JobState, event: JobEvent) -> JobState | None:
    """The state after ``event``, or None when the event is illegal in ``state``."""
    sources, target = _TRANSITIONS[event]
    return target if state in sources else None


def new_job_id() -> str:
    return f"job-{uuid.uuid4()}"


@attrs.define
class Job:
    """Mutable record of one job, owned by its session task."""

    job_id: str
    utterance_index: int
    assign: JobAssign  # the frame to send, with attempt_id filled per attempt
    needs: Needs  # what a node must offer to take it (from the session and its pipeline)
    state: JobState = JobState.CREATED
    attempt_id: int = 0
    node_id: str | None = None  # node of the current attempt
    nodes_tried: set[str] = attrs.Factory(set)  # every node an attempt went to
    lost_nodes: set[str] = attrs.Factory(set)
    created_at: float = 0.0  # trio clock
    dispatched_at: float | None = None
    dispatched_at_ms: int | None = None  # wall clock, for network timings
    deadline: float | None = None  # job timeout or pending timeout, trio clock
    first_client_ts_ms: float | None = None
    received_at_ms: int | None = None  # wall clock when the audio reached us

    def apply(self, event: JobEvent) -> bool:
        """Move to the next state; False (and no change) when ``event`` is illegal."""
        target = next_state(self.state, event)
        if target is None:
            return False
        self.state = target
        return True

    @property
    def reservation_held(self) -> bool:
        return self.state in _IN_FLIGHT
