"""The frame fast path: the common frames parsed without wsproto, everything else by
wsproto, and the events always what wsproto alone would have given, in the same order."""

from __future__ import annotations

import collections
import random

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from trio_scheduler.http.stream import ReplayStream
from trio_scheduler.http.ws_frames import FastTextFrames, parse_common_frames, parse_text_frames

BOUND_S = 10


def _open_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto (client, server) pair past the handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert [type(event) for event in server.events()] == [Request]
    client.receive_data(server.send(AcceptConnection()))
    assert [type(event) for event in client.events()] == [AcceptConnection]
    return client, server


def _text(client: WSConnection, text: str, finished: bool = True) -> bytes:
    return client.send(TextMessage(data=text, message_finished=finished))


def _parsed(data: bytes) -> tuple[list[str], int]:
    out: collections.deque = collections.deque()
    taken = parse_text_frames(data, out)
    assert all(event.frame_finished and event.message_finished for event in out)
    return [event.data for event in out], taken


def test_whole_text_frames_are_parsed_with_7_and_16_bit_lengths():
    client, _ = _open_pair()
    texts = ["", "short", "é" * 100, '{"type":"audio_chunk"}' * 1000]  # 0 B … 22 KB
    data = b"".join(_text(client, text) for text in texts)
    assert _parsed(data) == (texts, len(data))


@pytest.mark.parametrize("why", ["ping", "fragment", "cut", "64-bit length", "binary"])
def test_parsing_stops_at_the_first_frame_it_leaves_to_wsproto(why):
    client, _ = _open_pair()
    first = _text(client, "first")
    other = {
        "ping": lambda: client.send(Ping(b"p")),
        "fragment": lambda: _text(client, "part", finished=False),
        "cut": lambda: _text(client, "whole frame")[:-1],
        "64-bit length": lambda: _text(client, "x" * 70_000),
        "binary": lambda: client.send(BytesMessage(data=b"bytes")),
    }[why]()
    after = b"" if why == "cut" else first  # a cut frame can only be the last of a read
    assert _parsed(first + other + after) == (["first"], len(first))


def _masked_frame(payload: bytes, *, length_bytes: bytes | None = None) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    if length_bytes is None:
        return bytes([0x81, 0x80 | len(payload)]) + mask + masked
    return bytes([0x81, 0x80 | 126]) + length_bytes + mask + masked


def test_frames_wsproto_refuses_are_left_to_it():
    """Invalid UTF-8, a length not minimally encoded, an unmasked client frame: wsproto
    closes with its code, so they must reach it."""
    assert _parsed(_masked_frame(b"\xff\xfe")) == ([], 0)
    assert _parsed(_masked_frame(b"ab", length_bytes=b"\x00\x02")) == ([], 0)
    assert _parsed(b"\x81\x02ab" + b"\x00" * 4) == ([], 0)


def _events_of(server, reads: list[bytes]) -> list:
    events = []
    for data in reads:
        server.receive_data(data)
        events += list(server.events())
    return events


def test_what_comes_out_is_what_wsproto_alone_gives_however_the_reads_fall():
    """Random streams of every kind of frame, cut into reads at random places: the fast
    path and plain wsproto give the same events in the same order."""
    rng = random.Random(7)
    for _ in range(200):
        client, _ = _open_pair()
        frames = []
        for _ in range(rng.randrange(1, 12)):
            kind = rng.choice(["text", "text", "text", "big", "ping", "fragments", "binary"])
            if kind == "text":
                frames.append(_text(client, "ü" * rng.randrange(0, 300)))
            elif kind == "big":
                frames.append(_text(client, "b" * rng.choice([200, 70_000])))
            elif kind == "ping":
                frames.append(client.send(Ping(b"ping")))
            elif kind == "fragments":
                frames.append(_text(client, "one", finished=False) + _text(client, "two"))
            else:
                frames.append(client.send(BytesMessage(data=b"\x00" * 10)))
        if rng.random() < 0.3:
            frames.append(_masked_frame(b"\xff"))  # invalid UTF-8: wsproto closes (1007)
        data = b"".join(frames)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 6))))
        reads = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        _, plain = _open_pair()
        _, wrapped = _open_pair()
        fast = FastTextFrames(wrapped)
        expected = _events_of(plain, reads)
        assert _events_of(fast, reads) == expected
        assert fast.state == plain.state


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_a_whole_text_message_is_framed_as_wsproto_frames_it(size):
    client, server = _open_pair()
    _, plain = _open_pair()
    text = ("é" * size)[:size]  # multi-byte: the length is the UTF-8 length
    data = FastTextFrames(server).send(TextMessage(data=text))
    assert data == plain.send(TextMessage(data=text))
    client.receive_data(data)
    assert [event.data for event in client.events()] == [text]


def test_a_fragmented_message_and_what_follows_it_are_framed_by_wsproto():
    client, server = _open_pair()
    _, plain = _open_pair()
    fast = FastTextFrames(server)
    messages = [TextMessage(data="one", message_finished=False), TextMessage(data="two"),
                TextMessage(data="three"), Ping(b"p")]
    assert [fast.send(m) for m in messages] == [plain.send(m) for m in messages]


def test_the_end_of_the_connection_comes_after_the_frames_before_it():
    """(Plain wsproto puts its 1006 before frames it has not parsed yet; trio-websocket
    never feeds it the end this way, it only stops reading. Here the order of the bytes
    is kept.)"""
    client, server = _open_pair()
    fast = FastTextFrames(server)
    fast.receive_data(_text(client, "last"))
    fast.receive_data(None)
    events = list(fast.events())
    assert events[0] == TextMessage(data="last")
    assert isinstance(events[1], CloseConnection) and events[1].code == 1006


def test_nothing_is_parsed_after_a_close_wsproto_made_up_for_a_bad_frame():
    """wsproto answers a close frame with an invalid code (999) with its own 1002 and
    parses nothing more, though its state stays open: the fast path must not either."""
    client, _ = _open_pair()
    bad_close = bytes([0x88, 0x82]) + b"\x00" * 4 + b"\x03\xe7"  # masked, zero mask
    reads = [bad_close, _text(client, "after")]
    _, plain = _open_pair()
    _, wrapped = _open_pair()
    expected = _events_of(plain, reads)
    assert [type(event) for event in expected] == [CloseConnection]
    assert _events_of(FastTextFrames(wrapped), reads) == expected


def test_what_may_not_be_sent_after_a_close_is_dropped_not_raised():
    """trio-websocket's reader answers a ping, and closes for a message over the size
    limit, whatever the state: after the server's close wsproto raises on both, and
    nothing in the reader catches it (it would stop the server)."""
    _, server = _open_pair()
    fast = FastTextFrames(server)
    closing = fast.send(CloseConnection(code=1000))
    assert closing and fast.state.name == "LOCAL_CLOSING"
    assert fast.send(Pong(b"p")) == b""
    assert fast.send(CloseConnection(code=1009)) == b""


async def _connection_pair(nursery, max_message_size: int = 100_000):
    """A trio-websocket server connection (as the front door makes them) and the raw TCP
    stream of its peer, which writes frames made by a wsproto client."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    peer = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listeners[0].accept()
    client = WSConnection(ConnectionType.CLIENT)
    await peer.send_all(client.send(Request(host="x", target="/")))
    request = await trio_websocket.wrap_server_stream(
        nursery, ReplayStream(b"", server_stream), max_message_size=max_message_size)
    ws = await request.accept()
    client.receive_data(await peer.receive_some())
    assert [type(event) for event in client.events()] == [AcceptConnection]
    return ws, client, peer


async def test_a_real_connection_takes_the_fast_path_and_keeps_every_message_in_order(nursery):
    """Fails if trio-websocket or wsproto no longer have what the fast path relies on."""
    with trio.fail_after(BOUND_S):
        ws, client, peer = await _connection_pair(nursery)
        assert parse_common_frames(ws)
        assert isinstance(ws._wsproto, FastTextFrames)
        data = (_text(client, "a") + client.send(Ping(b"p")) + _text(client, "b" * 70_000)
                + _text(client, "c", finished=False) + _text(client, "d") + _text(client, "e"))
        await peer.send_all(data)
        assert [await ws.get_message() for _ in range(4)] == ["a", "b" * 70_000, "cd", "e"]
        client.receive_data(await peer.receive_some())  # the pong trio-websocket sent
        assert [type(event).__name__ for event in client.events()] == ["Pong"]


@pytest.mark.parametrize("frame, code", [
    (_masked_frame(b"\xff\xfe"), 1007),  # invalid UTF-8
    (b"\x81\x02ab", 1002),  # a client frame without a mask
])
async def test_a_bad_frame_closes_with_wsprotos_code(nursery, frame, code):
    with trio.fail_after(BOUND_S):
        ws, client, peer = await _connection_pair(nursery)
        assert parse_common_frames(ws)
        await peer.send_all(_text(client, "fine") + frame)
        assert await ws.get_message() == "fine"
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == code


async def test_a_message_over_the_size_limit_closes_with_1009(nursery):
    with trio.fail_after(BOUND_S):
        ws, client, peer = await _connection_pair(nursery, max_message_size=50_000)
        assert parse_common_frames(ws)
        await peer.send_all(_text(client, "x" * 1000) + _text(client, "y" * 60_000))
        assert await ws.get_message() == "x" * 1000
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1009


async def test_another_kind_of_socket_is_left_alone(nursery):
    assert not parse_common_frames(object())
    with trio.fail_after(BOUND_S):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        server_stream = await listeners[0].accept()

        async def server_side():
            request = await trio_websocket.wrap_server_stream(nursery, server_stream)
            await request.accept()

        nursery.start_soon(server_side)
        client = await trio_websocket.wrap_client_stream(nursery, client_stream, "x", "/")
        assert not parse_common_frames(client)  # a client masks what it sends
