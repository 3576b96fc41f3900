"""Frames in batches: several in one write, every frame of one read in one turn; the peer
sees each frame, in order; a closed peer is ``ConnectionClosed`` as with ``send_message``."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
import trio_websocket

from trio_scheduler.http.stream import ReplayStream
from trio_scheduler.http.ws_batches import (
    can_batch,
    deliver_without_waiting,
    hand_over_messages,
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


async def test_handed_over_messages_go_to_the_consumer_and_the_end_still_shows(nursery):
    """The reader task itself delivers each message, in order; ``get_message`` then only
    says that the connection ended."""
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=8)
        delivered: list[str] = []
        three = trio.Event()

        async def deliver(message):
            delivered.append(message)
            if len(delivered) == 3:
                three.set()

        assert await hand_over_messages(ws, deliver)
        await send_texts(client, ["a", "b"])
        await client.send_message("c")
        await three.wait()
        assert delivered == ["a", "b", "c"]
        await client.aclose()
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert delivered == ["a", "b", "c"]


async def test_a_waiting_delivery_holds_the_socket_back_and_loses_nothing(nursery):
    """While ``deliver`` waits, the reader reads no further; what follows arrives after."""
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=8)
        delivered: list[str] = []
        go_on = trio.Event()
        first_in = trio.Event()

        async def deliver(message):
            delivered.append(message)
            first_in.set()
            await go_on.wait()

        await hand_over_messages(ws, deliver)
        await client.send_message("1")
        await first_in.wait()
        await client.send_message("2")
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["1"]
        go_on.set()
        while len(delivered) < 2:
            await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["1", "2"]


async def test_what_was_queued_before_the_hand_over_comes_first_in_order(nursery):
    """Frames the reader queued before the hand-over (a full queue, and the reader blocked
    on one more) are delivered first, in order, ahead of any frame that follows; the
    reader's next frames wait for them even while their delivery waits."""
    with trio.fail_after(BOUND_S):
        ws, client = await _memory_pair(nursery, message_queue_size=4)
        await send_texts(client, ["init", "c1", "c2", "c3", "c4", "c5"])
        await trio.testing.wait_all_tasks_blocked()  # 4 queued, the reader blocked on c4
        delivered: list[str] = []
        go_on = trio.Event()

        async def deliver(message):
            delivered.append(message)
            if message == "init":
                await go_on.wait()  # the consumer is slow to take the first one

        handing_over = trio.Event()

        async def hand_over():
            await hand_over_messages(ws, deliver)
            handing_over.set()

        nursery.start_soon(hand_over)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_message("c6")
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["init"]
        go_on.set()
        await handing_over.wait()
        while len(delivered) < 7:
            await trio.testing.wait_all_tasks_blocked()
        assert delivered == ["init", "c1", "c2", "c3", "c4", "c5", "c6"]


async def test_another_socket_is_not_handed_over():
    async def deliver(message):
        raise AssertionError("not called")

    assert not await hand_over_messages(StandIn(), deliver)


async def _replay_pair(nursery):
    """A (server side, client side) pair whose server side writes through a
    ``ReplayStream`` over a real TCP socket, as the front door's connections do."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listeners[0].accept()
    # Small fixed buffers (no autotuning): what the kernel takes at once is bounded.
    client_stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    server_stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sides = {}
    accepted = trio.Event()

    async def server_side():
        request = await trio_websocket.wrap_server_stream(
            nursery, ReplayStream(b"", server_stream))
        sides["server"] = await request.accept()
        accepted.set()

    nursery.start_soon(server_side)
    client = await trio_websocket.wrap_client_stream(nursery, client_stream, "x", "/")
    await accepted.wait()
    return sides["server"], client, client_stream


async def test_what_the_kernel_takes_at_once_is_written_without_a_checkpoint(nursery):
    with trio.fail_after(BOUND_S):
        ws, client, _ = await _replay_pair(nursery)
        with trio.testing.assert_no_checkpoints():
            assert await send_texts(ws, ['{"n":1}', '{"n":2}'], timeout_s=1)
        assert [await client.get_message(), await client.get_message()] == ['{"n":1}', '{"n":2}']


async def test_a_peer_that_stops_reading_gets_the_rest_later_or_times_out(nursery):
    """A write the kernel cannot take at once goes on as an ordinary ``send_all``: the
    peer gets every byte once it reads again; one that never reads costs ``timeout_s``.
    (Real time: a mock clock would jump while the kernel moves the bytes.)"""
    with trio.fail_after(BOUND_S):
        await _peer_that_stops_reading(nursery)


async def _peer_that_stops_reading(nursery):
    ws, client, _ = await _replay_pair(nursery)
    parts = [chr(ord("a") + n) * 900_000 for n in range(24)]  # far more than the buffers
    done = []

    async def send():
        done.append(await send_texts(ws, ["first", *parts], timeout_s=1000))

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert done == []  # the peer reads too little yet: the write waits
    assert [await client.get_message() for _ in range(25)] == ["first", *parts]
    await trio.testing.wait_all_tasks_blocked()
    assert done == [True]
    assert not await send_texts(ws, parts + parts, timeout_s=0.5)  # nobody reads them


async def test_send_now_on_a_closed_socket_writes_nothing(nursery):
    stream_a, stream_b = await _socket_pair()
    replay = ReplayStream(b"", stream_a)
    assert replay.send_now(b"hello") == 5
    assert await stream_b.receive_some(5) == b"hello"
    await stream_a.aclose()
    assert replay.send_now(b"hello") == 0  # no write to whatever now has its number


async def _socket_pair():
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)
