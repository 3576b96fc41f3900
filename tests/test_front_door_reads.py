"""A large frame arrives in a few reads of the socket, not in 4 KiB pieces: each read is a
turn of the event loop for its connection, and a node's result with TTS audio is large."""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket

from trio_scheduler.http.front_door import FrontDoor, Response

BOUND_S = 10


class CountingStream(trio.abc.Stream):
    """The server's end of an in-memory connection, counting its reads."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream, self.reads = stream, 0

    async def receive_some(self, max_bytes=None):
        self.reads += 1
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data):
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self):
        await self._stream.aclose()


def _door(nursery, handler, receive_buffer_bytes: int = 65536, **options) -> FrontDoor:
    async def http(request):
        return Response.json(404, {})

    return FrontDoor(
        websocket_routes={"/ws/node": handler, "/ws/session": handler}, http_handler=http,
        max_message_bytes=4 * 1024 * 1024, max_head_bytes=16384, handshake_timeout_s=5,
        close_timeout_s=1, max_connections=10, receive_buffer_bytes=receive_buffer_bytes,
        protocol_nursery=nursery, **options,
    )


async def _reads_for_one_frame(nursery, frame_bytes: int, receive_buffer_bytes: int) -> int:
    received = trio.Event()
    server_end, client_end = trio.testing.memory_stream_pair()
    counting = CountingStream(server_end)

    async def handler(ws, request):
        reads_before = counting.reads
        assert len(await ws.get_message()) == frame_bytes
        handler.reads = counting.reads - reads_before
        received.set()

    door = _door(nursery, handler, receive_buffer_bytes)
    nursery.start_soon(door.handle, counting)
    client = await trio_websocket.wrap_client_stream(nursery, client_end, "x", "/ws/node")
    await client.send_message("r" * frame_bytes)
    await received.wait()
    await client.aclose()
    return handler.reads


async def test_a_large_frame_takes_a_few_reads(nursery):
    with trio.fail_after(BOUND_S):
        assert await _reads_for_one_frame(nursery, 200_000, receive_buffer_bytes=65536) <= 5
        # trio-websocket's own default, for comparison: one read per 4 KiB
        assert await _reads_for_one_frame(nursery, 200_000, receive_buffer_bytes=4096) >= 40


async def test_a_node_socket_may_queue_the_frames_of_a_read(nursery):
    """The node path gets its configured message queue; other paths trio-websocket's 1."""
    queues = {}
    seen = trio.Event()

    async def handler(ws, request):
        queues[request.path] = ws._recv_channel.statistics().max_buffer_size
        if len(queues) == 2:
            seen.set()

    door = _door(nursery, handler, message_queue_sizes={"/ws/node": 32})
    with trio.fail_after(BOUND_S):
        for path in ("/ws/node", "/ws/session"):
            server_end, client_end = trio.testing.memory_stream_pair()
            nursery.start_soon(door.handle, server_end)
            await trio_websocket.wrap_client_stream(nursery, client_end, "x", path)
        await seen.wait()
    assert queues == {"/ws/node": 32, "/ws/session": 1}
