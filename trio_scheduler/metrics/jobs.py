"""What happens to jobs, recorded where it happens for the price of a dict update.

The session task and its jobs call one method per point of a job's life (started,
dispatched, finished or cancelled, its outcome sent, the session ended); everything else is read at scrape time
(:mod:`trio_scheduler.metrics.collector`). Latencies start when the cut utterance becomes
a job (``Job.created_at``, after its hangover):

* dispatch latency: until its ``job_assign`` is on the node's outbound queue;
* end-to-end latency: until its ``translation_result`` was written to the browser.

The tally also knows which outcomes are decided but not yet sent, so a draining server
can wait until every job it handed out has reached its browser.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Histogram

from trio_scheduler.sessions.ordering import Deliver

DISPATCH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0)
END_TO_END_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)


class JobTally:
    def __init__(self, registry: CollectorRegistry | None = None, recent_samples: int = 1000):
        registry = registry or CollectorRegistry()
        self.started = 0
        self.finished: collections.Counter[str] = collections.Counter()  # by outcome kind
        self.failures: collections.Counter[str] = collections.Counter()  # by error code
        # What sessions that have ended dropped and counted (live ones are read directly).
        self.ended_session_drops: collections.Counter[str] = collections.Counter()
        self.recent_dispatch_s: collections.deque[float] = collections.deque(maxlen=recent_samples)
        self.recent_end_to_end_s: collections.deque[float] = collections.deque(
            maxlen=recent_samples
        )
        self._dispatch = Histogram(
            "trio_scheduler_dispatch_latency_seconds",
            "From an utterance becoming a job to its job_assign queued to a node.",
            buckets=DISPATCH_BUCKETS_S, registry=registry,
        )
        self._end_to_end = Histogram(
            "trio_scheduler_end_to_end_latency_seconds",
            "From an utterance becoming a job to its translation_result sent to the browser.",
            buckets=END_TO_END_BUCKETS_S, registry=registry,
        )
        # session id -> job id -> when the job was created, for outcomes not yet sent
        self._unsent: dict[str, dict[str, float]] = {}
        self._changed = trio.lowlevel.ParkingLot()

    # -- called by the session task ---------------------------------------------------

    def job_started(self) -> None:
        self.started += 1

    def job_dispatched(self, job: Any, now: float) -> None:
        latency = now - job.created_at
        self._dispatch.observe(latency)
        self.recent_dispatch_s.append(latency)

    def job_finished(self, session_id: str, job: Any, outcome: Any) -> None:
        self.finished[outcome.kind] += 1
        if outcome.error_code is not None:
            self.failures[str(outcome.error_code)] += 1
        self._unsent.setdefault(session_id, {})[job.job_id] = job.created_at

    def released(self, session_id: str, item: Any) -> None:
        """An outcome (or a gap) was sent to the browser."""
        if not isinstance(item, Deliver) or item.item.job_id is None:
            return
        outcome = item.item
        unsent = self._unsent.get(session_id, {})
        created_at = unsent.pop(outcome.job_id, None)
        if not unsent:
            self._unsent.pop(session_id, None)
        if created_at is not None and outcome.kind == "result":
            latency = trio.current_time() - created_at
            self._end_to_end.observe(latency)
            self.recent_end_to_end_s.append(latency)
        self._changed.unpark_all()

    def job_cancelled(self) -> None:
        """An unfinished job of a session that ended."""
        self.finished["cancelled"] += 1

    def session_ended(self, session: Any) -> None:
        """The session is gone: its outcomes not yet sent never will be."""
        self.ended_session_drops.update(session.tallies)
        self._unsent.pop(session.session_id, None)
        self._changed.unpark_all()

    # -- read by the metrics and the drain ----------------------------------------------

    @property
    def unsent_outcomes(self) -> int:
        return sum(len(jobs) for jobs in self._unsent.values())

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every outcome sent or session
        ended (the moments jobs stop being in flight)."""
        while not predicate():
            await self._changed.park()
