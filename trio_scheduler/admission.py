"""Admission control: take new sessions only while the process keeps up with the ones it has.

A process that accepts more streaming sessions than its core can serve does not slow down
evenly: every frame waits behind every other, timers fire late, jobs time out, and the
sessions it already had lose their answers along with the new ones. How late the event
loop wakes a sleeper (see :mod:`trio_scheduler.loop_lag`) is the earliest sign of that,
visible before any job is late. So new session upgrades are refused (HTTP 503 with
``Retry-After``, and ``/ready`` says ``overloaded`` so a load balancer sends new browsers
elsewhere) while the loop runs behind; nodes are always let in, as they add capacity.

Two rules keep the state from flapping and from overshooting:

* **hysteresis**: it trips when ``trip_samples`` probe wake-ups in a row are at least
  ``trip_lag_s`` late (one garbage-collector pause does not turn browsers away), and
  recovers only after the lag has stayed below half of that for ``recover_after_s``;
* **a start rate**: at most ``starts_per_s`` new sessions per second (a bucket of one
  second's worth), because a burst of arrivals (every browser reconnecting after a
  restart) is admitted faster than the lag it causes can show.

Both are pure bookkeeping over the times they are given, so tests drive them directly.
"""

from __future__ import annotations

import attrs

from trio_scheduler.config import ServerConfig


@attrs.define
class LoopOverload:
    """Whether the event loop runs too far behind to take new sessions."""

    trip_lag_s: float
    recover_after_s: float
    trip_samples: int = 2
    overloaded: bool = False
    trips: int = 0  # times it went from accepting to overloaded
    _late_in_a_row: int = 0
    _calm_since: float | None = None

    @property
    def recover_lag_s(self) -> float:
        return self.trip_lag_s / 2

    def observe(self, lag_s: float, now: float) -> bool:
        """Take one lag sample taken at ``now``; True if the state changed."""
        if not self.overloaded:
            self._late_in_a_row = self._late_in_a_row + 1 if lag_s >= self.trip_lag_s else 0
            if self._late_in_a_row >= self.trip_samples:
                self.overloaded, self._calm_since = True, None
                self.trips += 1
                return True
            return False
        if lag_s >= self.recover_lag_s:
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


@attrs.define
class Admission:
    """The two rules together, as the upgrade gate and ``/ready`` ask them."""

    loop: LoopOverload
    starts: StartRate
    retry_after_s: int

    @classmethod
    def from_config(cls, server: ServerConfig) -> Admission:
        return cls(
            LoopOverload(trip_lag_s=server.overload_lag_ms / 1000,
                         recover_after_s=server.overload_recover_s),
            StartRate(server.max_session_starts_per_s),
            server.overload_retry_after_s,
        )

    @property
    def overloaded(self) -> bool:
        return self.loop.overloaded

    def refuse_session(self, now: float) -> str | None:
        """Why a new session must be turned away at ``now`` (a refusal reason), or None.

        A refused start takes no token, so refusals do not starve later arrivals.
        """
        if self.loop.overloaded:
            return "overloaded"
        if not self.starts.take(now):
            return "session_start_rate"
        return None
