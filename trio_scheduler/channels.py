"""Taking what waits in a memory channel at once.

Several tasks serve a queue in batches: the Redis bridge and the inbox poster (one round
trip for everything queued), the trace writer (one write), the management owner (one
snapshot for a burst of commands), a node's writer (one socket write). They all take the
first item, waiting for it, then whatever else is already queued, without waiting.
"""

from __future__ import annotations

import math
from typing import TypeVar

import trio

T = TypeVar("T")


def take_queued(channel: trio.MemoryReceiveChannel[T], limit: float = math.inf) -> list[T]:
    """Up to ``limit`` items already queued, oldest first; never waits. A channel that is
    closed or ended gives what it still had (the next ``receive`` says it ended)."""
    items: list[T] = []
    while len(items) < limit:
        try:
            items.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return items


async def receive_batch(channel: trio.MemoryReceiveChannel[T], limit: float = math.inf) -> list[T]:
    """The next item (waiting for one) and up to ``limit - 1`` more already queued."""
    first = await channel.receive()
    return [first, *take_queued(channel, limit - 1)]
