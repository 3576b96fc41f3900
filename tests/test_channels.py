"""Taking what waits in a memory channel at once."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_scheduler.channels import receive_batch, take_queued


async def test_a_batch_is_the_next_item_and_what_is_queued_up_to_the_limit():
    send, receive = trio.open_memory_channel(10)
    for n in range(5):
        send.send_nowait(n)
    assert await receive_batch(receive, limit=3) == [0, 1, 2]
    with trio.testing.assert_no_checkpoints():
        assert take_queued(receive) == [3, 4]
        assert take_queued(receive) == []


async def test_a_closed_channel_gives_what_it_still_had_then_ends():
    send, receive = trio.open_memory_channel(10)
    send.send_nowait("a")
    send.send_nowait("b")
    send.close()
    assert await receive_batch(receive) == ["a", "b"]
    with pytest.raises(trio.EndOfChannel):
        await receive_batch(receive)
