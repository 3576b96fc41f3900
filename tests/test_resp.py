"""The small Redis client on Trio sockets that carries messages between instances: its
reply parser, and posting and reading a stream against a real redis-server (password,
restart)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from redis_server import start_redis_server
from trio_scheduler.store import resp


def test_encode_is_an_array_of_bulk_strings():
    assert resp.encode("XADD", "k", 5, b"\xff") == (
        b"*4\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n5\r\n$1\r\n\xff\r\n")


REPLIES = (b"+OK\r\n-ERR wrong\r\n:42\r\n$-1\r\n*-1\r\n$4\r\nh\xc3\xa9y\r\n"
           b"*2\r\n*2\r\n$1\r\na\r\n:1\r\n*0\r\n")


def test_replies_are_parsed_however_the_bytes_are_cut():
    expected = ["OK", "ERR wrong", 42, None, None, "héy", [["a", 1], []]]
    for cut in (1, 2, 3, 7, len(REPLIES)):
        parser, replies = resp.ReplyParser(), []
        for start in range(0, len(REPLIES), cut):
            parser.feed(REPLIES[start:start + cut])
            replies += parser.replies()
        assert [str(r) if isinstance(r, resp.RespError) else r for r in replies] == expected
        assert isinstance(replies[1], resp.RespError)


def test_only_a_single_plain_redis_is_served():
    assert resp.address_of("redis://u:pw@h:6380/2") == resp.Address(
        host="h", port=6380, username="u", password="pw", db=2)
    assert resp.address_of("unix:///tmp/r.sock?db=3") == resp.Address(path="/tmp/r.sock", db=3)
    assert resp.address_of("rediss://h:6380") is None
    assert resp.address_of("redis+cluster://h:7000") is None


async def post_and_read(address: resp.Address, key: str, payloads: list[str]) -> list[str]:
    """Post ``payloads`` to ``key`` and read them back with the stream reader."""
    setup = await resp.Connection.open(address, timeout_s=5)
    await setup.call("XADD", key, "*", "open", "1")
    await setup.aclose()
    poster = resp.Poster(address, timeout_s=5)
    got: list[str] = []
    all_in = trio.Event()

    async def handle(payload: str) -> None:
        got.append(payload)
        if len(got) == len(payloads):
            all_in.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(poster.run)
        for payload in payloads[:1]:  # before the reader's first read
            poster.submit("XADD", key, "NOMKSTREAM", "*", "m", payload)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(lambda task_status: resp.read_stream(
            address, key, handle, block_ms=200, count=10, timeout_s=5, task_status=task_status))
        for payload in payloads[1:]:
            poster.submit("XADD", key, "NOMKSTREAM", "*", "m", payload)
        with trio.fail_after(10):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    return got


async def test_a_stream_is_posted_and_read_in_order(redis_url):
    address = resp.address_of(redis_url)
    payloads = [f"message {i}" for i in range(100)]
    assert await post_and_read(address, "t:inbox", payloads) == payloads


async def test_a_password_is_presented(tmp_path):
    server = start_redis_server(tmp_path, extra_args=("--requirepass", "s3cret"))
    try:
        port = server.port
        address = resp.address_of(f"redis://:s3cret@127.0.0.1:{port}/1")
        assert await post_and_read(address, "t:inbox", ["a", "b"]) == ["a", "b"]
        with pytest.raises(resp.RespError, match="NOAUTH|WRONGPASS|invalid"):
            connection = await resp.Connection.open(resp.address_of(
                f"redis://127.0.0.1:{port}/0"), timeout_s=5)
            await connection.call("XLEN", "t:inbox")
    finally:
        server.stop()


async def test_posting_and_reading_go_on_after_a_redis_restart(own_redis):
    address = resp.address_of(own_redis.url)
    key = "t:inbox"
    setup = await resp.Connection.open(address, timeout_s=5)
    await setup.call("XADD", key, "*", "open", "1")
    await setup.aclose()
    poster = resp.Poster(address, timeout_s=5)
    got: list[str] = []
    arrived = trio.Event()

    async def handle(payload: str) -> None:
        got.append(payload)
        arrived.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(poster.run)
        await nursery.start(lambda task_status: resp.read_stream(
            address, key, handle, block_ms=200, count=10, timeout_s=5, task_status=task_status))
        poster.submit("XADD", key, "*", "m", "before")
        with trio.fail_after(10):
            await arrived.wait()
        await trio.to_thread.run_sync(own_redis.restart)  # everything is gone
        with trio.fail_after(20):
            while got[-1] != "after":  # both sides reconnect by themselves
                arrived = trio.Event()
                poster.submit("XADD", key, "*", "m", "after")
                with trio.move_on_after(1):
                    await arrived.wait()
        nursery.cancel_scope.cancel()
    assert got[0] == "before" and got[-1] == "after"
