"""Delivering a session's outcomes in ``utterance_index`` order: pure, clock-driven.

Every utterance ends in one outcome (a result, a failure, a silence marker). Outcomes may
come back in any order; this queue releases them in index order. An outcome whose
predecessors are missing waits at most ``gap_timeout_s`` after it arrived; then the
missing indexes are skipped (the caller sends ``missing_result{reason:"gap_timeout"}``)
and delivery continues. A late outcome for a skipped index is dropped. At most
``max_pending`` outcomes wait; one more skips the oldest gap at once.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import attrs

T = TypeVar("T")


@attrs.frozen
class Deliver(Generic[T]):
    index: int
    item: T


@attrs.frozen
class Skip:
    index: int


Release = Deliver | Skip


class OrderedResults(Generic[T]):
    def __init__(self, gap_timeout_s: float, max_pending: int, first_index: int = 0) -> None:
        self._gap_timeout_s = gap_timeout_s
        self._max_pending = max_pending
        self._next = first_index
        self._pending: dict[int, tuple[T, float]] = {}
        self.dropped_late = 0

    @property
    def next_index(self) -> int:
        return self._next

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def put(self, index: int, item: T, now: float) -> list[Release]:
        if index < self._next or index in self._pending:
            self.dropped_late += 1
            return []
        self._pending[index] = (item, now)
        released = self._drain()
        if len(self._pending) > self._max_pending:
            released += self._skip_to(min(self._pending))
        return released

    def next_deadline(self) -> float:
        if not self._pending:
            return math.inf
        return min(arrived for _, arrived in self._pending.values()) + self._gap_timeout_s

    def on_timer(self, now: float) -> list[Release]:
        released: list[Release] = []
        while self._pending and now >= self.next_deadline():
            oldest = min(self._pending, key=lambda i: self._pending[i][1])
            released += self._skip_to(oldest)
        return released

    def _skip_to(self, index: int) -> list[Release]:
        """Give up on every missing index below ``index``, delivering what is there."""
        released: list[Release] = []
        for i in range(self._next, index):
            entry = self._pending.pop(i, None)
            released.append(Skip(i) if entry is None else Deliver(i, entry[0]))
        self._next = max(self._next, index)
        return released + self._drain()

    def _drain(self) -> list[Release]:
        released: list[Release] = []
        while self._next in self._pending:
            item, _ = self._pending.pop(self._next)
            released.append(Deliver(self._next, item))
            self._next += 1
        return released
