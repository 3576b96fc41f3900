"""Per-socket message rate limit: a token bucket, pure and clock-driven."""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # drop the message, tell the client RATE_LIMITED
    REFUSE_QUIETLY = "refuse_quietly"  # drop; the client was told within the last second
    CLOSE = "close"  # it keeps going: close the socket (1008)


class RateLimiter:
    """``rate`` messages per second on average, bursts up to ``rate``.

    Refused messages are dropped; the client hears ``RATE_LIMITED`` at most once per
    second, and a client that keeps sending after a second's worth of refused messages
    is closed.
    """

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._updated: float | None = None
        self._told_at: float | None = None
        self._refused = 0.0  # refused messages, draining at ``rate`` per second

    def check(self, now: float) -> Verdict:
        if self._updated is not None:
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self._rate, self._tokens + elapsed * self._rate)
            self._refused = max(0.0, self._refused - elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOW
        self._refused += 1.0
        if self._refused > self._rate:
            return Verdict.CLOSE
        if self._told_at is None or now - self._told_at >= 1.0:
            self._told_at = now
            return Verdict.REFUSE
        return Verdict.REFUSE_QUIETLY
