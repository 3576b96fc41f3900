"""A small Redis client on a Trio stream, for the one path where a thread hop hurts.

The store reaches Redis through redis-py in a worker thread (:mod:`~trio_scheduler.store.redis`),
which costs a thread hop per batch: fine for reservations, too slow for the messages
instances send each other, where every hop adds to a job's latency (a job for another
instance's node goes there and its answers come back). Those messages are plain stream
commands, so they go over RESP2 directly on Trio sockets: :class:`Connection` speaks the
protocol, and :class:`Poster` / :func:`read_stream` are the two uses.

Only a single Redis reached by ``redis://`` or ``unix://`` is served here; with TLS or a
Redis Cluster the messages take the threaded path (the caller checks :func:`address_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import structlog
import trio
from redis.connection import parse_url

from trio_scheduler.channels import receive_batch

log = structlog.get_logger(__name__)

RETRY_S = 0.5  # after a connection failed, before connecting again


class RespError(Exception):
    """An error reply from Redis (the command was refused, not the connection lost)."""


class ConnectionLost(Exception):
    """The connection closed or broke: what was in flight may or may not have run."""


def encode(*args: Any) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


_NOT_YET = object()


class ReplyParser:
    """Turns the bytes Redis sends into replies, however the bytes are cut.

    Strings come back as ``str`` (UTF-8), null as None, errors as :class:`RespError`
    instances (returned, not raised: each reply belongs to its own command).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def replies(self) -> list[Any]:
        """Every complete reply received so far, in order."""
        out = []
        while True:
            reply, used = self._parse(0)
            if reply is _NOT_YET:
                return out
            del self._buffer[:used]
            out.append(reply)

    def _parse(self, at: int) -> tuple[Any, int]:
        end = self._buffer.find(b"\r\n", at)
        if end < 0:
            return _NOT_YET, at
        kind, line, after = self._buffer[at:at + 1], bytes(self._buffer[at + 1:end]), end + 2
        if kind == b"+":
            return line.decode(), after
        if kind == b"-":
            return RespError(line.decode()), after
        if kind == b":":
            return int(line), after
        if kind == b"$":
            length = int(line)
            if length < 0:
                return None, after
            if len(self._buffer) < after + length + 2:
                return _NOT_YET, at
            return bytes(self._buffer[after:after + length]).decode(), after + length + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(after)
                if item is _NOT_YET:
                    return _NOT_YET, at
                items.append(item)
            return items, after
        raise ConnectionLost(f"unexpected reply type {kind!r}")


@attrs.frozen
class Address:
    host: str | None = None
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    db: int = 0


def address_of(url: str) -> Address | None:
    """Where ``url`` points, if this client can go there (``redis://``, ``unix://``)."""
    if not url.startswith(("redis://", "unix://")):
        return None
    fields = parse_url(url)
    return Address(
        host=fields.get("host", "localhost") if "path" not in fields else None,
        port=int(fields.get("port", 6379)),
        path=fields.get("path"),
        username=fields.get("username"),
        password=fields.get("password"),
        db=int(fields.get("db", 0)),
    )


class Connection:
    """One connection to Redis; commands and replies in order."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._parser = ReplyParser()
        self._pending: list[Any] = []

    @classmethod
    async def open(cls, address: Address, timeout_s: float) -> Connection:
        with trio.fail_after(timeout_s):
            if address.path is not None:
                stream = await trio.open_unix_socket(address.path)
            else:
                stream = await trio.open_tcp_stream(address.host, address.port)
            connection = cls(stream)
            try:
                if address.password is not None:
                    credentials = [address.username] if address.username else []
                    await connection.call("AUTH", *credentials, address.password)
                if address.db:
                    await connection.call("SELECT", address.db)
            except BaseException:
                await stream.aclose()
                raise
        return connection

    async def send(self, commands: Sequence[bytes]) -> None:
        """Write encoded commands without waiting for their replies."""
        try:
            await self._stream.send_all(b"".join(commands))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(str(exc)) from exc

    async def replies(self, count: int) -> list[Any]:
        """The next ``count`` replies."""
        while len(self._pending) < count:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionLost(str(exc)) from exc
            if not data:
                raise ConnectionLost("Redis closed the connection")
            self._parser.feed(data)
            self._pending += self._parser.replies()
        out, self._pending = self._pending[:count], self._pending[count:]
        return out

    async def call(self, *args: Any) -> Any:
        """One command and its reply; an error reply raises :class:`RespError`."""
        await self.send([encode(*args)])
        [reply] = await self.replies(1)
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def aclose(self) -> None:
        await self._stream.aclose()


class Poster:
    """Commands sent without waiting, in order, batched per write (like the store bridge).

    :meth:`submit` never waits; a task (:meth:`run`) writes whatever has queued up as one
    write and reads its replies before the next. A batch lost with its connection is
    logged and dropped: its callers did not wait for it.
    """

    def __init__(self, address: Address, *, timeout_s: float, max_batch: int = 512) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self.failed = 0  # commands refused by Redis or lost with a connection

    def submit(self, *args: Any) -> None:
        self._send.send_nowait(encode(*args))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        connection: Connection | None = None
        try:
            while True:
                batch = await receive_batch(self._receive, self._max_batch)
                try:
                    if connection is None:
                        connection = await Connection.open(self._address, self._timeout_s)
                    with trio.fail_after(self._timeout_s):
                        await connection.send(batch)
                        replies = await connection.replies(len(batch))
                except (ConnectionLost, OSError, RespError, trio.TooSlowError) as exc:
                    self.failed += len(batch)
                    log.warning("inbox messages lost with the connection", error=str(exc),
                                messages=len(batch))
                    if connection is not None:
                        await connection.aclose()
                        connection = None
                    await trio.sleep(RETRY_S)
                    continue
                errors = [r for r in replies if isinstance(r, RespError)]
                if errors:
                    self.failed += len(errors)
                    log.warning("inbox messages refused", error=str(errors[0]),
                                messages=len(errors))
        finally:
            if connection is not None:
                with trio.CancelScope(shield=True):
                    await connection.aclose()


async def read_stream(
    address: Address, key: str, handle: Any, *, block_ms: int, count: int, timeout_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``key`` from its start, forever, handing each entry's ``m`` field to
    ``handle`` (awaited, in order); reconnects after a failure."""
    last_id = "0-0"
    task_status.started()
    while True:
        try:
            connection = await Connection.open(address, timeout_s)
        except (OSError, ConnectionLost, RespError, trio.TooSlowError) as exc:
            log.warning("inbox read failed; retrying", error=str(exc))
            await trio.sleep(RETRY_S)
            continue
        try:
            while True:
                reply = await connection.call("XREAD", "COUNT", count, "BLOCK", block_ms,
                                              "STREAMS", key, last_id)
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        last_id = entry_id
                        values = dict(zip(fields[::2], fields[1::2], strict=True))
                        if "m" in values:
                            await handle(values["m"])
        except (ConnectionLost, RespError) as exc:
            log.warning("inbox read failed; retrying", error=str(exc))
            await trio.sleep(RETRY_S)
        finally:
            with trio.CancelScope(shield=True):
                await connection.aclose()
