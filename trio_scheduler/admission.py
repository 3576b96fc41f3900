"""Admission control: take new sessions only while the process keeps up with the ones it has.

A process that accepts more streaming sessions than its core can serve does not slow down
evenly: every frame waits behind every other, timers fire late, jobs time out, and the
sessions it already had lose their answers along with the new ones. How late the event
loop wakes a sleeper (see :mod:`trio_scheduler.loop_lag`) is the earliest sign of that,
visible before any job is late. So new session upgrades are refused (HTTP 503 with
``Retry-After``, and ``/ready`` says ``overloaded`` so a load balancer sends new browsers
elsewhere) while the loop runs behind; nodes are always let in, as they add capacity.

Lag alone shows an overload late: each connection moves its frames one turn of the loop at
a time, so while the core is full the backlog grows in the sockets' buffers, where the
probe cannot see it, and turns stay short until the process is far past its capacity
(measured: a process answering within 200 ms at 96 % of a core with 360 streaming
sessions answered in seconds with 460, its loop lag still under 50 ms). So the share of
a core the process uses counts too: a single-threaded process at ``trip_cpu`` of its
core has no headroom left for more sessions.

Rules that keep the state from flapping and from overshooting:

* **hysteresis**: it trips when ``trip_samples`` probe wake-ups in a row are at least
  ``trip_lag_s`` late (one garbage-collector pause does not turn browsers away), or the
  process used ``trip_cpu`` of a core over the last second; it recovers only after the lag
  has stayed below half of ``trip_lag_s`` and the CPU share below ``recover_cpu`` for
  ``recover_after_s``;
* **a start rate**: at most ``starts_per_s`` new sessions per second (a bucket of one
  second's worth), because a burst of arrivals (every browser reconnecting after a
  restart) is admitted faster than the lag it causes can show.

Both are pure bookkeeping over the times they are given, so tests drive them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from trio_scheduler.config import ServerConfig


RECOVER_CPU_SHARE = 0.8  # recovery needs the CPU share below this fraction of trip_cpu


@attrs.define
class LoopOverload:
    """Whether the event loop runs too far behind to take new sessions."""

    trip_lag_s: float
    recover_after_s: float
    trip_samples: int = 2
    trip_cpu: float = math.inf  # share of one core (1.0 = a full core); inf: lag alone
    overloaded: bool = False
    trips: int = 0  # times it went from accepting to overloaded
    _late_in_a_row: int = 0
    _calm_since: float | None = None

    @property
    def recover_lag_s(self) -> float:
        return self.trip_lag_s / 2

    @property
    def recover_cpu(self) -> float:
        return self.trip_cpu * RECOVER_CPU_SHARE

    def observe(self, lag_s: float, now: float, cpu_busy: float = 0.0) -> bool:
        """Take one sample taken at ``now`` (loop lag, and the process's share of a core
        over the last second); True if the state changed."""
        if not self.overloaded:
            self._late_in_a_row = self._late_in_a_row + 1 if lag_s >= self.trip_lag_s else 0
            if self._late_in_a_row >= self.trip_samples or cpu_busy >= self.trip_cpu:
                self.overloaded, self._calm_since = True, None
                self.trips += 1
                return True
            return False
        if lag_s >= self.recover_lag_s or cpu_busy >= self.recover_cpu:
            self._calm_since = None
            return False
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since >= self.recover_after_s:
            self.overloaded, self._late_in_a_row = False, 0
            return True
        return False


@attrs.define
class StartRate:
    """A token bucket of session starts: ``per_s`` a second, at most one second's worth."""

    per_s: float
    _tokens: float = attrs.field(init=False)
    _at: float | None = None

    def __attrs_post_init__(self) -> None:
        self._tokens = self.per_s

    def take(self, now: float) -> bool:
        """One start at ``now`` if the rate allows it."""
        if self._at is not None:
            self._tokens = min(self.per_s, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


MIN_CPU_FOR_ESTIMATE = 0.5  # below this share of a core, fixed costs blur a session's
MACHINE_COUNTS_FROM = 0.25  # the machine's busy share counts from this share of our core on


@attrs.define
class SessionBudget:
    """How many sessions fit in ``trip_cpu`` of a core, from what the open ones cost.

    Tripping on the CPU share alone overshoots: it is measured over a second, and while it
    catches up sessions keep arriving, each adding its load at once (measured: with 100
    arrivals a second, 500 sessions were in where 360 fitted). So once the process uses
    at least half a core, every second's measurement also gives a cap, the sessions of
    that second scaled to ``trip_cpu``: sessions arriving while the estimate is fresh stop
    at the cap instead of a second later. Fixed costs make the estimate err low at first
    (a session looks dearer at light load); it rises as the load does.
    """

    trip_cpu: float
    cap: float = math.inf

    def estimate(self, cpu_busy: float, mean_sessions: float) -> None:
        if cpu_busy >= MIN_CPU_FOR_ESTIMATE and mean_sessions >= 1:
            self.cap = mean_sessions * self.trip_cpu / cpu_busy
        else:
            self.cap = math.inf

    def full(self, sessions_open: int) -> bool:
        return sessions_open >= self.cap


@attrs.define
class Admission:
    """The rules together, as the probe feeds them and the upgrade gate and ``/ready`` ask
    them. ``sessions_open`` counts the sessions the process serves now."""

    loop: LoopOverload
    budget: SessionBudget
    starts: StartRate
    retry_after_s: int
    sessions_open: Callable[[], int] = lambda: 0
    _sessions_seen: int = 0  # sum over this CPU window's samples
    _samples: int = 0

    @classmethod
    def from_config(cls, server: ServerConfig) -> Admission:
        trip_cpu = server.overload_cpu_percent / 100
        return cls(
            LoopOverload(trip_lag_s=server.overload_lag_ms / 1000,
                         recover_after_s=server.overload_recover_s, trip_cpu=trip_cpu),
            SessionBudget(trip_cpu),
            StartRate(server.max_session_starts_per_s),
            server.overload_retry_after_s,
        )

    def observe(self, lag_s: float, now: float, cpu_busy: float,
                cpu_window_ended: bool, machine_busy: float = 0.0) -> bool:
        """One probe sample; True if the overload state of the loop changed.

        ``machine_busy`` (the share of all the machine's cores busy) counts like the
        process's own share, but only while the process uses at least
        :data:`MACHINE_COUNTS_FROM` of a core: a full machine leaves no core for more
        sessions, but an idle server on a machine busy with other work (a build, a test
        suite) is not what is overloaded.
        """
        if cpu_busy >= MACHINE_COUNTS_FROM:
            cpu_busy = max(cpu_busy, machine_busy)
        self._sessions_seen += self.sessions_open()
        self._samples += 1
        if cpu_window_ended:
            self.budget.estimate(cpu_busy, self._sessions_seen / self._samples)
            self._sessions_seen = self._samples = 0
        return self.loop.observe(lag_s, now, cpu_busy)

    @property
    def overloaded(self) -> bool:
        return self.loop.overloaded or self.budget.full(self.sessions_open())

    def refuse_session(self, now: float) -> str | None:
        """Why a new session must be turned away at ``now`` (a refusal reason), or None.

        A refused start takes no token, so refusals do not starve later arrivals.
        """
        if self.overloaded:
            return "overloaded"
        if not self.starts.take(now):
            return "session_start_rate"
        return None
