"""The server as operators and peers meet it: one port, HTTP endpoints, limits, shutdown."""

from __future__ import annotations

import fakeredis
import orjson
import pytest
import redis
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from conftest import RunningServer, make_config
from http_client import http_exchange, http_request
from harness import snapshot_where
from trio_scheduler.server import serve
from trio_scheduler.simulate.frames import heartbeat_frame, one_way_init, register_frame
from trio_scheduler.simulate.peer import CannotConnect, connect


BOUND_S = 10


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict]:
    return await http_request(port, method, path)


async def test_health_ready_and_unknown_paths(start_server):
    server = await start_server()
    assert await http_get(server.port, "/health") == (200, {"status": "ok"})
    assert await http_get(server.port, "/ready") == (200, {"status": "ready"})
    assert (await http_get(server.port, "/nope"))[0] == 404
    assert (await http_get(server.port, "/health", "POST"))[0] == 405


async def test_head_works_wherever_get_does(start_server):
    """Load balancers probe with HEAD: the same status and head as GET, no body."""
    server = await start_server()
    for path in ("/health", "/ready", "/metrics", "/stats", "/dashboard", "/nope"):
        got = await http_exchange(server.port, "GET", path)
        head = await http_exchange(server.port, "HEAD", path)
        assert head.status == got.status, path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.body == b"" and int(head.headers["content-length"]) > 0, path


async def test_plain_get_to_a_websocket_path_is_426(start_server):
    server = await start_server()
    for path in ("/ws/session", "/ws/node"):
        reply = await http_exchange(server.port, "GET", path)
        assert reply.status == 426 and reply.headers["upgrade"] == "websocket"
    # The sockets themselves still work.
    async with connect(server.session_url) as client:
        await client.send(one_way_init("zh", "en"))
        assert (await client.recv())["type"] == "session_init_ack"


async def test_request_head_larger_than_the_limit_gets_400(start_server):
    """Also when the whole head arrives in one read (h11 alone bounds only incomplete
    heads)."""
    server = await start_server(server={"max_request_head_bytes": 1024})
    padding = "X-Padding: " + "x" * 1100 + "\r\n"
    assert (await http_request(server.port, "GET", "/health", headers=padding))[0] == 400
    short = "X-Padding: " + "x" * 800 + "\r\n"
    assert (await http_request(server.port, "GET", "/health", headers=short))[0] == 200


async def test_unknown_websocket_path_is_refused_with_404(start_server):
    server = await start_server()
    with pytest.raises(CannotConnect) as refused:
        async with connect(f"ws://127.0.0.1:{server.port}/ws/other"):
            pass
    assert refused.value.status_code == 404


async def test_not_ready_while_redis_is_away(nursery, monkeypatch):
    """Redis answered at start, then went away: the server keeps running and says so."""
    redis_server = fakeredis.FakeServer()
    monkeypatch.setattr(redis.Redis, "from_url", lambda url, **_: fakeredis.FakeRedis(
        server=redis_server, decode_responses=True))
    config = make_config(store={"redis_url": "redis://127.0.0.1:6399/0"})
    scheduler = await nursery.start(serve, config)
    assert await http_get(scheduler.port, "/ready") == (200, {"status": "ready"})
    redis_server.connected = False
    status, body = await http_get(scheduler.port, "/ready")
    assert status == 503 and body["reason"] == "store unreachable"
    assert (await http_get(scheduler.port, "/health"))[0] == 200
    redis_server.connected = True
    assert (await http_get(scheduler.port, "/ready"))[0] == 200


async def test_invalid_messages_on_both_sockets_keep_them_open(start_server):
    server = await start_server()
    async with connect(server.session_url) as client, connect(server.node_url) as node:
        for peer in (client, node):
            await peer.send('{"type": 5}')
            reply = await peer.recv()
            assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
            assert reply["details"] == {"field": "type"}
        await client.send(one_way_init("zh", "en"))
        assert (await client.recv())["type"] == "session_init_ack"
        await node.send(register_frame())
        assert (await node.recv())["type"] == "node_register_ack"


async def test_oversized_message_closes_with_1009(start_server):
    server = await start_server(server={"max_message_bytes": 1000})
    async with connect(server.session_url) as client:
        await client.send("x" * 5000)
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.reason.code == 1009
    # The server keeps serving everyone else.
    async with connect(server.session_url) as client:
        await client.send(one_way_init("zh", "en"))
        assert (await client.recv())["type"] == "session_init_ack"


async def test_a_session_close_is_answered_and_the_socket_closed_at_once(start_server):
    """The frame is handled by the socket's reader task itself (the session was idle);
    the close it decides is made by the session task, at once: the reader could not read
    the browser's answer to a close it waited on (it would wait ``send_timeout_s``)."""
    server = await start_server(server={"send_timeout_s": 30})
    with trio.fail_after(5):
        async with connect(server.session_url) as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send({"type": "session_close", "session_id": session_id,
                               "reason": "done"})
            assert (await client.recv())["type"] == "session_close_ack"
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.reason.code == 1000


async def _raw_peer(port: int, path: str):
    """A TCP stream past the WebSocket handshake, and its wsproto client."""
    peer = await trio.open_tcp_stream("127.0.0.1", port)
    client = WSConnection(ConnectionType.CLIENT)
    await peer.send_all(client.send(Request(host="x", target=path)))
    events = []
    while not any(isinstance(event, AcceptConnection) for event in events):
        client.receive_data(await peer.receive_some())
        events += list(client.events())
    return peer, client


async def _until_closed(peer, client) -> list:
    """Every event until the server ends the TCP connection (a reset ends it too: the
    server may close with bytes of ours still unread)."""
    events = []
    try:
        while data := await peer.receive_some():
            client.receive_data(data)
            events += list(client.events())
    except trio.BrokenResourceError:
        pass
    return events


async def test_a_ping_after_the_servers_close_does_not_stop_the_server(start_server):
    """A peer answering the server's close frame with a ping: trio-websocket's reader
    would send a pong, which wsproto refuses after a close, outside any handler."""
    server = await start_server(nodes={"register_timeout_s": 0.2})
    with trio.fail_after(BOUND_S):
        peer, client = await _raw_peer(server.port, "/ws/node")
        events = []
        while not any(isinstance(event, CloseConnection) for event in events):
            client.receive_data(await peer.receive_some())  # 4003: no node_register
            events += list(client.events())
        # (wsproto would not send it: a hostile peer is not bound by that)
        await peer.send_all(bytes([0x89, 0x80 | 4]) + b"\x00" * 4 + b"ping")
        await peer.send_all(client.send(CloseConnection(code=1000)))
        await _until_closed(peer, client)
        peer, client = await _raw_peer(server.port, "/ws/session")  # still serving
        await peer.aclose()


async def test_a_message_over_the_limit_and_a_ping_in_one_read_close_with_1009(start_server):
    server = await start_server(server={"max_message_bytes": 1000})
    with trio.fail_after(BOUND_S):
        peer, client = await _raw_peer(server.port, "/ws/session")
        await peer.send_all(client.send(TextMessage(data="x" * 5000)) + client.send(Ping(b"p")))
        closes = [e for e in await _until_closed(peer, client) if isinstance(e, CloseConnection)]
        assert [close.code for close in closes] == [1009]
        peer, client = await _raw_peer(server.port, "/ws/session")  # still serving
        await peer.aclose()


async def test_node_socket_closed_leaves_pools_at_once(start_server):
    server = await start_server()
    publisher = server.scheduler.publisher
    async with connect(server.node_url) as node:
        await node.send(register_frame())
        node_id = (await node.recv())["node_id"]
        await node.send(heartbeat_frame(node_id))
        await snapshot_where(publisher, lambda s: node_id in s.pools.get("zh:en", ()))
    await snapshot_where(publisher, lambda s: node_id not in s.nodes)
    assert publisher.current.pools == {}


async def test_shutdown_closes_sockets_with_1001(nursery, store_kind, request):
    sections = {}
    if store_kind == "redis":
        sections["store"] = {"redis_url": request.getfixturevalue("redis_url")}
    with trio.CancelScope() as server_scope:
        pass
    stopped = trio.Event()

    async def run_server(*, task_status):
        nonlocal server_scope
        with trio.CancelScope() as server_scope:
            await serve(make_config(**sections), task_status=task_status)
        stopped.set()

    scheduler = await nursery.start(run_server)
    server = RunningServer(scheduler)
    async with connect(server.session_url) as client, connect(server.node_url) as node:
        await client.send(one_way_init("zh", "en"))
        await client.recv()
        await node.send(register_frame())
        await node.recv()
        server_scope.cancel()
        for peer in (client, node):
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await peer.recv()
            assert closed.value.reason.code == 1001
    with trio.fail_after(10):  # shutdown_grace_s (5 s) bounds the stop
        await stopped.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_session_origin_and_token_rules(start_server):
    server = await start_server(sessions={"allowed_origins": ["https://app.example"],
                                          "auth_tokens": ["s-tok"]})
    url = server.session_url
    for headers, status in [
        ([], 403),
        ([(b"Origin", b"https://evil.example")], 403),
        ([(b"Origin", b"https://app.example")], 401),
    ]:
        with pytest.raises(trio_websocket.HandshakeError) as refused:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                pass
        assert refused.value.status_code == status
    async with trio_websocket.open_websocket_url(
        url + "?token=s-tok", extra_headers=[(b"Origin", b"https://app.example")]
    ) as ws:
        await ws.send_message(orjson.dumps(one_way_init("zh", "en")).decode())
        assert orjson.loads(await ws.get_message())["type"] == "session_init_ack"


async def test_connections_above_the_limit_get_503(start_server):
    server = await start_server(server={"max_connections": 2})
    async with connect(server.session_url), connect(server.session_url):
        status, body = await http_get(server.port, "/health")
        assert (status, body) == (503, {"error": "too many connections"})
