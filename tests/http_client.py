"""A bare HTTP/1.1 request for the tests of the server's plain-HTTP endpoints."""

from __future__ import annotations

import attrs
import orjson
import trio

HTTP_BOUND_S = 10  # the whole exchange, connect to close


@attrs.frozen
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body) if self.body else {}


async def http_exchange(
    port: int, method: str, path: str, token: str | None = None, headers: str = ""
) -> HttpReply:
    """One request to 127.0.0.1:port, read until the server closes (it always does).
    ``headers``: extra header lines, each ending in CRLF."""
    headers += f"Authorization: Bearer {token}\r\n" if token else ""
    with trio.fail_after(HTTP_BOUND_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return HttpReply(int(status_line.split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body)


async def http_request(
    port: int, method: str, path: str, token: str | None = None, headers: str = ""
) -> tuple[int, dict]:
    """(status, JSON body) of one request."""
    reply = await http_exchange(port, method, path, token, headers)
    return reply.status, reply.json()
