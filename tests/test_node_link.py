"""A node's outbound queue: never waits, bounded in frames and in queued text."""

from __future__ import annotations

import pytest
import trio

from trio_scheduler.nodes.link import NodeLink


async def test_queue_is_bounded_in_characters():
    link = NodeLink(queue_size=8, max_queued_chars=100)
    assert link.send("a" * 60)
    assert not link.send("b" * 60)  # 120 characters would be queued
    assert link.send("c" * 40)
    assert link.queued_chars == 100
    assert await link.next_frame() == "a" * 60
    assert link.send("d" * 60)
    assert link.queued_chars == 100


async def test_queue_is_bounded_in_frames():
    link = NodeLink(queue_size=2)
    assert link.send("a") and link.send("b")
    assert not link.send("c")


async def test_a_frame_larger_than_the_budget_goes_when_the_queue_is_empty():
    link = NodeLink(queue_size=8, max_queued_chars=10)
    assert link.send("x" * 50)
    assert not link.send("y")
    assert await link.next_frame() == "x" * 50
    assert link.queued_chars == 0


async def test_shut_link_refuses_and_ends_the_writer():
    link = NodeLink(queue_size=8)
    link.shut()
    assert not link.send("a")
    with pytest.raises(trio.EndOfChannel):
        await link.next_frame()


async def test_the_writer_takes_every_queued_frame_at_once():
    link = NodeLink(queue_size=8, max_queued_chars=100)
    for frame in ("a", "bb", "ccc"):
        assert link.send(frame)
    assert await link.next_frames() == ["a", "bb", "ccc"]
    assert link.queued_chars == 0
    assert link.send("d")
    link.shut()
    assert await link.next_frames() == ["d"]  # what was queued before the shut still goes
    with pytest.raises(trio.EndOfChannel):
        await link.next_frames()
