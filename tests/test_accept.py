"""Connections waiting in the kernel's accept queue are taken together: one yielding
``accept`` for a whole wave, each connection served, none lost on close."""

from __future__ import annotations

import trio
import trio.testing

from trio_scheduler.http.accept import BurstListener

BOUND_S = 10


class CountingListener:
    """A SocketListener's stand-in that counts its (yielding) accept calls."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self.socket = listener.socket
        self.accepts = 0

    async def accept(self) -> trio.SocketStream:
        self.accepts += 1
        return await self._listener.accept()

    async def aclose(self) -> None:
        await self._listener.aclose()


async def _listener() -> tuple[CountingListener, int]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return CountingListener(listener), listener.socket.getsockname()[1]


async def test_a_wave_of_connections_is_taken_with_one_waiting_accept(nursery):
    with trio.fail_after(BOUND_S):
        inner, port = await _listener()
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
        served: list[bytes] = []
        all_served = trio.Event()

        async def handler(stream):
            served.append(await stream.receive_some(10))
            if len(served) == 5:
                all_served.set()

        for n, client in enumerate(clients):
            await client.send_all(b"%d" % n)
        await nursery.start(trio.serve_listeners, handler, [BurstListener(inner, 64)])
        await all_served.wait()
        assert sorted(served) == [b"0", b"1", b"2", b"3", b"4"]
        assert inner.accepts <= 2  # one that waited and took the wave (and the next wait)


async def test_the_burst_is_bounded(nursery):
    with trio.fail_after(BOUND_S):
        inner, port = await _listener()
        for _ in range(5):
            await trio.open_tcp_stream("127.0.0.1", port)
        listener = BurstListener(inner, 2)
        streams = [await listener.accept() for _ in range(5)]
        assert len(streams) == 5
        assert inner.accepts == 3  # 2 + 2 + 1


async def test_closing_closes_what_was_taken_but_not_handed_out(nursery):
    with trio.fail_after(BOUND_S):
        inner, port = await _listener()
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        listener = BurstListener(inner, 64)
        await listener.accept()  # takes all three, hands out one
        await listener.aclose()
        for client in clients[1:]:
            assert await client.receive_some(10) == b""  # closed by the server


async def test_without_a_second_descriptor_it_accepts_one_at_a_time(nursery, monkeypatch):
    with trio.fail_after(BOUND_S):
        inner, port = await _listener()

        def no_descriptor(fd):
            raise OSError(24, "Too many open files")

        monkeypatch.setattr("trio_scheduler.http.accept.os.dup", no_descriptor)
        listener = BurstListener(inner, 64)
        for _ in range(2):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert len([await listener.accept() for _ in range(2)]) == 2
        assert inner.accepts == 2
        await listener.aclose()
