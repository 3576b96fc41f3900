"""Unit tests of the job state machine (dispatch/jobs.py) against an explicit table."""

from __future__ import annotations

import itertools
import re

import pytest

from trio_scheduler.dispatch.jobs import (
    TERMINAL,
    Job,
    JobEvent,
    JobState,
    new_job_id,
    next_state,
)
from trio_scheduler.management.needs import Needs
from trio_scheduler.protocol.messages import JobAssign, Pipeline

S = JobState
E = JobEvent

# Every legal transition, written out by hand from PROTOCOL §3.3–3.5. Anything not listed
# here must be illegal.
LEGAL: dict[tuple[JobState, JobEvent], JobState] = {
    # created: new, or back after its node was lost
    (S.CREATED, E.WAIT): S.WAITING,
    (S.CREATED, E.DISPATCH): S.DISPATCHED,
    (S.CREATED, E.FINISH): S.FINISHED,  # late result from an earlier attempt's node
    (S.CREATED, E.FAIL): S.FAILED,
    (S.CREATED, E.CANCEL): S.CANCELLED,
    # waiting for capacity
    (S.WAITING, E.DISPATCH): S.DISPATCHED,
    (S.WAITING, E.FINISH): S.FINISHED,
    (S.WAITING, E.FAIL): S.FAILED,
    (S.WAITING, E.CANCEL): S.CANCELLED,
    (S.WAITING, E.TIME_OUT): S.TIMED_OUT,  # pending timeout
    # dispatched
    (S.DISPATCHED, E.ACK): S.ACCEPTED,
    (S.DISPATCHED, E.START): S.RUNNING,
    (S.DISPATCHED, E.FINISH): S.FINISHED,
    (S.DISPATCHED, E.FAIL): S.FAILED,
    (S.DISPATCHED, E.CANCEL): S.CANCELLED,
    (S.DISPATCHED, E.TIME_OUT): S.TIMED_OUT,
    (S.DISPATCHED, E.NODE_LOST): S.CREATED,
    # accepted
    (S.ACCEPTED, E.START): S.RUNNING,
    (S.ACCEPTED, E.FINISH): S.FINISHED,
    (S.ACCEPTED, E.FAIL): S.FAILED,
    (S.ACCEPTED, E.CANCEL): S.CANCELLED,
    (S.ACCEPTED, E.TIME_OUT): S.TIMED_OUT,
    (S.ACCEPTED, E.NODE_LOST): S.CREATED,
    # running
    (S.RUNNING, E.FINISH): S.FINISHED,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.CANCEL): S.CANCELLED,
    (S.RUNNING, E.TIME_OUT): S.TIMED_OUT,
    (S.RUNNING, E.NODE_LOST): S.CREATED,
    # finished / failed / cancelled / timed_out: nothing
}

ALL_PAIRS = list(itertools.product(JobState, JobEvent))


def pair_id(pair: tuple[JobState, JobEvent]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def make_job(state: JobState = JobState.CREATED) -> Job:
    assign = JobAssign(
        job_id="job-1",
        attempt_id=1,
        session_id="s-00000001",
        utterance_index=0,
        src_lang="zh",
        tgt_lang="en",
        dialect=None,
        features={},
        pipeline=Pipeline(),
        audio="",
        audio_format="opus",
        sample_rate=16000,
        trace_id="t",
    )
    needs = Needs(frozenset({"zh:en"}), frozenset({"asr", "nmt", "tts"}))
    return Job(job_id="job-1", utterance_index=0, assign=assign, needs=needs, state=state)


def test_table_has_9_states_and_9_events():
    assert len(JobState) == 9
    assert len(JobEvent) == 9
    assert len(ALL_PAIRS) == 81
    assert len(LEGAL) == 28


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[pair_id(p) for p in ALL_PAIRS])
def test_next_state(state, event):
    assert next_state(state, event) is LEGAL.get((state, event))


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[pair_id(p) for p in ALL_PAIRS])
def test_job_apply(state, event):
    job = make_job(state)
    applied = job.apply(event)
    expected = LEGAL.get((state, event))
    if expected is None:
        assert applied is False
        assert job.state is state
    else:
        assert applied is True
        assert job.state is expected


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_accept_nothing(state):
    assert state.terminal
    for event in JobEvent:
        assert next_state(state, event) is None


@pytest.mark.parametrize(
    ("state", "terminal", "reservation_held"),
    [
        (S.CREATED, False, False),
        (S.WAITING, False, False),
        (S.DISPATCHED, False, True),
        (S.ACCEPTED, False, True),
        (S.RUNNING, False, True),
        (S.FINISHED, True, False),
        (S.FAILED, True, False),
        (S.CANCELLED, True, False),
        (S.TIMED_OUT, True, False),
    ],
)
def test_terminal_and_reservation_held(state, terminal, reservation_held):
    assert state.terminal is terminal
    assert make_job(state).reservation_held is reservation_held


@pytest.mark.parametrize(
    ("events", "states", "held"),
    [
        pytest.param(
            [E.DISPATCH, E.ACK, E.START, E.FINISH],
            [S.DISPATCHED, S.ACCEPTED, S.RUNNING, S.FINISHED],
            [True, True, True, False],
            id="happy-path",
        ),
        pytest.param(
            [E.WAIT, E.DISPATCH, E.NODE_LOST, E.DISPATCH, E.FAIL],
            [S.WAITING, S.DISPATCHED, S.CREATED, S.DISPATCHED, S.FAILED],
            [False, True, False, True, False],
            id="wait-redispatch-fail",
        ),
        pytest.param(
            [E.WAIT, E.TIME_OUT], [S.WAITING, S.TIMED_OUT], [False, False], id="pending-timeout"
        ),
        pytest.param(
            [E.DISPATCH, E.START, E.TIME_OUT],
            [S.DISPATCHED, S.RUNNING, S.TIMED_OUT],
            [True, True, False],
            id="job-timeout",
        ),
    ],
)
def test_paths(events, states, held):
    job = make_job()
    for event, state, reservation in zip(events, states, held, strict=True):
        assert job.apply(event) is True
        assert job.state is state
        assert job.reservation_held is reservation


def test_late_events_after_finish_are_ignored():
    job = make_job()
    for event in (E.DISPATCH, E.FINISH):
        assert job.apply(event)
    for event in JobEvent:
        assert job.apply(event) is False
        assert job.state is S.FINISHED


def test_new_job_id_is_job_dash_uuid4():
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    pattern = re.compile(
        r"^job-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    )
    assert all(pattern.match(job_id) for job_id in ids)


def test_job_defaults():
    job = make_job()
    assert job.state is S.CREATED
    assert job.attempt_id == 0
    assert job.node_id is None
    assert job.nodes_tried == set()
    assert job.reservation_held is False
