"""The stream under every WebSocket: the replayed request head, then the socket itself,
read with no system call that fails and no second turn of the loop per frame."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from trio_scheduler.http import stream as stream_module
from trio_scheduler.http.stream import ReplayStream

BOUND_S = 10


async def _socket_pair():
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


@pytest.fixture
def reads(monkeypatch):
    """Every read of the socket, as what it returned (None: nothing there yet)."""
    seen = []
    real_read = stream_module._read

    def counting_read(sock, max_bytes):
        data = real_read(sock, max_bytes)
        seen.append(data)
        return data

    monkeypatch.setattr(stream_module, "_read", counting_read)
    return seen


async def test_the_request_head_comes_first_then_the_socket():
    ours, peer = await _socket_pair()
    replay = ReplayStream(b"GET / HTTP/1.1\r\n", ours)
    await peer.send_all(b"frame")
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some(4) == b"GET "
        assert await replay.receive_some() == b"/ HTTP/1.1\r\n"
        assert await replay.receive_some() == b"frame"


async def test_a_frame_that_arrives_later_is_read_once_after_the_socket_is_ready(
        nursery, reads):
    ours, peer = await _socket_pair()
    replay = ReplayStream(b"", ours)
    got = []
    done = trio.Event()

    async def read():
        got.append(await replay.receive_some(1024))
        done.set()

    nursery.start_soon(read)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [] and reads == []  # waiting for readiness: no read that fails
    await peer.send_all(b"frame")
    with trio.fail_after(BOUND_S):
        await done.wait()
    assert got == [b"frame"] and reads == [b"frame"]


async def test_after_a_full_read_the_rest_is_read_at_once_and_the_read_still_yields(reads):
    ours, peer = await _socket_pair()
    replay = ReplayStream(b"", ours)
    await peer.send_all(b"abcdef")
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some(3) == b"abc"  # as much as asked: more may be there
        with trio.testing.assert_checkpoints():
            assert await replay.receive_some(3) == b"def"
    assert reads == [b"abc", b"def"]


async def test_a_cancelled_read_takes_nothing():
    ours, peer = await _socket_pair()
    replay = ReplayStream(b"", ours)
    await peer.send_all(b"abcdef")
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some(3) == b"abc"
        with trio.CancelScope() as scope:  # data is there: read-first path
            scope.cancel()
            await replay.receive_some(3)
        assert scope.cancelled_caught
        assert await replay.receive_some(3) == b"def"
        with trio.CancelScope() as scope:  # nothing there: wait-first path
            scope.cancel()
            await replay.receive_some(3)
        assert scope.cancelled_caught
        await peer.send_all(b"g")
        assert await replay.receive_some(3) == b"g"


async def test_the_end_of_the_stream_is_empty_bytes():
    ours, peer = await _socket_pair()
    replay = ReplayStream(b"", ours)
    await peer.send_all(b"last")
    await peer.aclose()
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some() == b"last"
        assert await replay.receive_some() == b""


async def test_a_read_of_a_stream_closed_here_is_closed_resource(nursery):
    ours, _peer = await _socket_pair()
    replay = ReplayStream(b"", ours)
    failures = []
    done = trio.Event()

    async def read():
        try:
            await replay.receive_some()
        except trio.ClosedResourceError as exc:
            failures.append(exc)
        done.set()

    nursery.start_soon(read)
    await trio.testing.wait_all_tasks_blocked()
    await replay.aclose()  # while the read waits: it is woken
    with trio.fail_after(BOUND_S):
        await done.wait()
        assert len(failures) == 1
        with pytest.raises(trio.ClosedResourceError):
            await replay.receive_some()


async def test_a_reset_connection_is_broken_resource():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(BOUND_S):
        peer = await trio.open_tcp_stream("127.0.0.1", port)
        ours = await listeners[0].accept()
        replay = ReplayStream(b"", ours)
        # Closing with a zero linger sends a reset instead of an orderly end.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await replay.receive_some()
    await replay.aclose()
    await listeners[0].aclose()


async def test_max_bytes_below_one_is_refused():
    ours, _peer = await _socket_pair()
    with pytest.raises(ValueError):
        await ReplayStream(b"", ours).receive_some(0)


async def test_another_stream_is_used_through_its_own_methods():
    ours, peer = trio.testing.memory_stream_pair()
    replay = ReplayStream(b"", ours)
    await peer.send_all(b"frame")
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some() == b"frame"
    assert replay.send_now(b"x") == 0  # not a socket: the caller falls back to send_all


async def test_a_cancelled_read_keeps_the_request_head():
    ours, _peer = await _socket_pair()
    replay = ReplayStream(b"GET / HTTP/1.1\r\n", ours)
    with trio.CancelScope() as scope:
        scope.cancel()
        await replay.receive_some()
    assert scope.cancelled_caught
    with trio.fail_after(BOUND_S):
        assert await replay.receive_some() == b"GET / HTTP/1.1\r\n"
    with pytest.raises(ValueError):
        await replay.receive_some(0)
