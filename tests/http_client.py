"""A bare HTTP/1.1 request for the tests of the server's plain-HTTP endpoints."""

from __future__ import annotations

import orjson
import trio


async def http_request(
    port: int, method: str, path: str, token: str | None = None, headers: str = ""
) -> tuple[int, dict]:
    """(status, JSON body) of one request to 127.0.0.1:port; the server closes after it.
    ``headers``: extra header lines, each ending in CRLF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    headers += f"Authorization: Bearer {token}\r\n" if token else ""
    async with stream:
        await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        raw = b""
        while chunk := await stream.receive_some(4096):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body) if body else {}
