"""Unit tests of in-order result delivery (sessions/ordering.py), with plain float times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_scheduler.sessions.ordering import Deliver, OrderedResults, Skip

GAP = 5.0  # seconds, the default gap timeout


def queue(max_pending: int = 200, first_index: int = 0) -> OrderedResults[str]:
    return OrderedResults(gap_timeout_s=GAP, max_pending=max_pending, first_index=first_index)


def item(i: int) -> str:
    return f"r{i}"


def D(i: int) -> Deliver:
    return Deliver(i, item(i))


def run(q: OrderedResults[str], steps) -> list:
    """Apply ``("put", index, now)`` / ``("timer", now)`` steps; all releases in order."""
    released = []
    for step in steps:
        if step[0] == "put":
            _, index, now = step
            released += q.put(index, item(index), now)
        else:
            released += q.on_timer(step[1])
    return released


# ---------------------------------------------------------------------------------------
# Tables


@pytest.mark.parametrize(
    ("steps", "expected", "next_index", "pending", "dropped"),
    [
        pytest.param([("put", 0, 0.0), ("put", 1, 0.1), ("put", 2, 0.2)],
                     [D(0), D(1), D(2)], 3, 0, 0, id="in-order"),
        pytest.param([("put", 1, 0.0), ("put", 2, 0.1)], [], 0, 2, 0, id="held-back"),
        pytest.param([("put", 2, 0.0), ("put", 1, 0.1), ("put", 0, 0.2)],
                     [D(0), D(1), D(2)], 3, 0, 0, id="reverse-order-released-together"),
        pytest.param([("put", 1, 0.0), ("put", 0, 0.1), ("put", 3, 0.2)],
                     [D(0), D(1)], 2, 1, 0, id="partial-release"),
        pytest.param([("put", 0, 0.0), ("put", 0, 0.1)], [D(0)], 1, 0, 1,
                     id="duplicate-of-delivered"),
        pytest.param([("put", 2, 0.0), ("put", 2, 0.1)], [], 0, 1, 1,
                     id="duplicate-of-pending"),
        pytest.param([("put", 1, 0.0), ("timer", 4.9)], [], 0, 1, 0, id="timer-before-gap"),
        pytest.param([("put", 1, 0.0), ("timer", 5.0)], [Skip(0), D(1)], 2, 0, 0,
                     id="gap-timeout-skip-then-deliver"),
        pytest.param([("put", 3, 1.0), ("timer", 6.0)], [Skip(0), Skip(1), Skip(2), D(3)],
                     4, 0, 0, id="gap-timeout-several-missing"),
        pytest.param([("put", 1, 0.0), ("timer", 5.0), ("put", 0, 5.1)],
                     [Skip(0), D(1)], 2, 0, 1, id="late-for-skipped-dropped"),
        pytest.param([("put", 3, 0.0), ("put", 1, 1.0), ("timer", 5.0)],
                     [Skip(0), D(1), Skip(2), D(3)], 4, 0, 0,
                     id="pending-below-skipped-index-delivered"),
        pytest.param([("put", 2, 0.0), ("put", 5, 3.0), ("timer", 5.0)],
                     [Skip(0), Skip(1), D(2)], 3, 1, 0, id="only-oldest-gap-skipped"),
        pytest.param([("put", 2, 0.0), ("put", 5, 3.0), ("timer", 8.0)],
                     [Skip(0), Skip(1), D(2), Skip(3), Skip(4), D(5)], 6, 0, 0,
                     id="both-gaps-expired"),
        pytest.param([("put", 2, 0.0), ("put", 5, 3.0), ("timer", 5.0), ("put", 3, 6.0),
                      ("put", 4, 6.5)],
                     [Skip(0), Skip(1), D(2), D(3), D(4), D(5)], 6, 0, 0,
                     id="second-gap-filled-in-time"),
        pytest.param([("timer", 1e9)], [], 0, 0, 0, id="timer-on-empty"),
    ],
)
def test_ordering_table(steps, expected, next_index, pending, dropped):
    q = queue()
    assert run(q, steps) == expected
    assert q.next_index == next_index
    assert q.pending_count == pending
    assert q.dropped_late == dropped


@pytest.mark.parametrize(
    ("max_pending", "steps", "expected", "next_index"),
    [
        pytest.param(2, [("put", 1, 0.0), ("put", 2, 0.1)], [], 0, id="at-limit-waits"),
        pytest.param(2, [("put", 1, 0.0), ("put", 2, 0.1), ("put", 3, 0.2)],
                     [Skip(0), D(1), D(2), D(3)], 4, id="overflow-skips-oldest-gap"),
        pytest.param(2, [("put", 2, 0.0), ("put", 5, 0.1), ("put", 7, 0.2)],
                     [Skip(0), Skip(1), D(2)], 3, id="overflow-skips-only-first-gap"),
        pytest.param(1, [("put", 4, 0.0), ("put", 9, 0.1)],
                     [Skip(0), Skip(1), Skip(2), Skip(3), D(4)], 5, id="limit-one"),
        pytest.param(2, [("put", 9, 0.0), ("put", 3, 1.0), ("put", 4, 2.0)],
                     [Skip(0), Skip(1), Skip(2), D(3), D(4)], 5,
                     id="lowest-index-not-oldest-arrival"),
    ],
)
def test_max_pending_overflow(max_pending, steps, expected, next_index):
    q = queue(max_pending=max_pending)
    assert run(q, steps) == expected
    assert q.next_index == next_index
    assert q.pending_count <= max_pending


@pytest.mark.parametrize(
    ("steps", "deadline"),
    [
        pytest.param([], math.inf, id="empty"),
        pytest.param([("put", 0, 1.0)], math.inf, id="delivered-at-once"),
        pytest.param([("put", 1, 1.0)], 6.0, id="one-waiting"),
        pytest.param([("put", 2, 1.0), ("put", 1, 2.5)], 6.0, id="oldest-arrival-counts"),
        pytest.param([("put", 1, 2.5), ("put", 2, 1.0)], 6.0, id="arrival-not-index"),
        pytest.param([("put", 2, 0.0), ("put", 5, 3.0), ("timer", 5.0)], 8.0,
                     id="after-partial-skip"),
        pytest.param([("put", 1, 0.0), ("timer", 5.0)], math.inf, id="after-full-skip"),
    ],
)
def test_next_deadline(steps, deadline):
    q = queue()
    run(q, steps)
    assert q.next_deadline() == deadline


def test_first_index():
    q = queue(first_index=10)
    assert q.put(9, "old", 0.0) == []
    assert q.dropped_late == 1
    assert q.put(10, "a", 0.0) == [Deliver(10, "a")]
    assert q.next_index == 11


def test_items_are_passed_through_unchanged():
    q: OrderedResults[dict] = OrderedResults(gap_timeout_s=1.0, max_pending=10)
    payload = {"text": "hello"}
    (release,) = q.put(0, payload, 0.0)
    assert isinstance(release, Deliver)
    assert release.item is payload


def test_custom_gap_timeout():
    q: OrderedResults[str] = OrderedResults(gap_timeout_s=0.25, max_pending=10)
    q.put(1, "b", 10.0)
    assert q.next_deadline() == 10.25
    assert q.on_timer(10.2) == []
    assert q.on_timer(10.25) == [Skip(0), Deliver(1, "b")]


# ---------------------------------------------------------------------------------------
# Property: every index ends exactly once, in order


@settings(max_examples=300)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(0, 15), st.floats(0, 20, allow_nan=False)), max_size=30
    ),
    max_pending=st.integers(1, 6),
)
def test_releases_are_in_order_and_unique(arrivals, max_pending):
    q = queue(max_pending=max_pending)
    released = []
    accepted: set[int] = set()
    late = 0
    now = 0.0
    for index, delay in arrivals:
        now += delay / 10
        released += q.on_timer(now)
        if index >= q.next_index and index not in accepted:
            accepted.add(index)
        else:
            late += 1
        released += q.put(index, item(index), now)
        assert q.pending_count <= max_pending
    released += q.on_timer(math.inf)
    indexes = [r.index for r in released]
    assert indexes == list(range(len(indexes)))
    assert q.pending_count == 0
    delivered = {r.index for r in released if isinstance(r, Deliver)}
    assert all(r.item == item(r.index) for r in released if isinstance(r, Deliver))
    assert delivered == accepted, "everything accepted is delivered, never skipped"
    assert q.dropped_late == late
