"""Frames in batches: several in one write, every frame of one read in one turn; the peer
sees each frame, in order; a closed peer is ``ConnectionClosed`` as with ``send_message``."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trio_websocket

from trio_scheduler.http.ws_batches import (
    can_batch,
    deliver_without_waiting,
    receive_batch,
    send_texts,
)

BOUND_S = 10


class CountingStream:
    """Passes everything through to the real stream and counts the writes."""

    def __init__(self, stream) -> None:
        self._stream, self.writes = stream, 0

    async def send_all(self, data) -> None:
        self.writes += 1
        await self._stream.send_all(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)


async def _pair(nursery):
    """A connected (server side, client side) pair of real trio-websocket connections."""
    sides_send, sides_receive = trio.open_memory_channel(1)

    async def handler(request):
        ws = await request.accept()
        await sides_send.send(ws)
        await trio.sleep_forever()

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    client = await trio_websocket.connect_websocket(
        nursery, "127.0.0.1", server.port, "/", use_ssl=False)
    return await sides_receive.receive(), client


async def test_several_frames_go_in_one_write_and_arrive_each_in_order(nursery):
    with trio.fail_after(BOUND_S):
        ws, client = await _pair(nursery)
        assert can_batch(ws), "this trio-websocket no longer offers what batching needs"
        counting = CountingStream(ws._stream)
        ws._stream = counting
        texts = ['{"n":1}', '{"n":2}', "x" * 70_000]  # the last one needs a long header
        await send_texts(ws, texts)
        assert counting.writes == 1
        assert [await client.get_message() for _ in texts] == texts


async def test_a_closed_peer_is_connection_closed(nursery):
    with trio.fail_after(BOUND_S):
        ws, client = await _pair(nursery)
        await client.aclose()
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()  # the server side has seen the close
        with pytest.raises(trio_websocket.ConnectionClosed):
            await send_texts(ws, ["a", "b"])


class StandIn:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_message(self, message: str) -> None:
        self.sent.append(message)


async def test_another_socket_gets_the_frames_one_by_one():
    ws = StandIn()
    assert not can_batch(ws)
    await send_texts(ws, ["a", "b", "c"])
    assert ws.sent == ["a", "b", "c"]


async def _memory_pair(nursery, message_queue_size: int):
    """A (server side, client side) pair over an in-memory stream: what one side writes
    at once, the other reads at once."""
    server_end, client_end = trio.testing.memory_stream_pair()

    async def accept():
        request = await trio_websocket.wrap_server_stream(
            nursery, server_end, message_queue_size=message_queue_size)
        return await request.accept()

    accepted = trio.Event()
    sides = {}

    async def server_side():
        sides["server"] = await accept()
        accepted.set()

    nursery.start_soon(server_side)
    client = await trio_websocket.wrap_client_stream(nursery, client_end, "x", "/")
    await accepted.wait()
    return sides["server"], client


async def test_frames_received_together_are_taken_in_one_turn(nursery):
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=8)
        deliver_without_waiting(ws)
        await send_texts(client, ["a", "b", "c"])  # one write: one read on the other side
        assert await receive_batch(ws) == ["a", "b", "c"]
        await send_texts(client, ["d"])
        assert await receive_batch(ws) == ["d"]


async def test_a_full_queue_still_waits_and_loses_nothing(nursery):
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=2)
        deliver_without_waiting(ws)
        texts = [str(n) for n in range(7)]
        await send_texts(client, texts)
        received = []
        while len(received) < len(texts):
            received += await receive_batch(ws)
        assert received == texts


async def test_a_closed_connection_ends_the_batches(nursery):
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=8)
        deliver_without_waiting(ws)
        await send_texts(client, ["last"])
        await client.aclose()
        assert await receive_batch(ws) == ["last"]
        with pytest.raises(trio_websocket.ConnectionClosed):
            await receive_batch(ws)
