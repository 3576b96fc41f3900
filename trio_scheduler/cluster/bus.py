"""Messages between instances: one inbox stream per instance, in the shared Redis.

Posting never waits, and messages from one instance to another arrive in the order they
were posted. On a single Redis (``redis://``, ``unix://``) both sides speak to Redis on
Trio sockets (:mod:`~trio_scheduler.store.resp`): a poster task writes whatever has queued
up as one batch, and the reader blocks in ``XREAD`` on a connection of its own — no thread
hop, which would add a millisecond to every job sent to another instance's node and every
answer coming back. With TLS or a Redis Cluster the messages go through the store's
threaded bridge and a reader in a worker thread instead.

An inbox exists only while its instance lives: it is created by its reader and kept by
its heartbeat, and messages are only ever added to an existing one, so the inbox of an
instance that died expires with whatever was posted to it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.exceptions
import structlog
import trio

from trio_scheduler.store import resp

log = structlog.get_logger(__name__)

READ_BLOCK_MS = 1000  # a blocked read returns at least this often (lets a stop through)
READ_BATCH = 512
RETRY_S = 0.5  # after a failed read (Redis down), before reading again


class Bus:
    def __init__(
        self,
        store: Any,
        instance_id: str,
        *,
        max_len: int,
        address: resp.Address | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._store = store
        self.instance_id = instance_id
        self._max_len = max_len
        self._address = address  # Redis on Trio sockets, or None: the threaded path
        self._timeout_s = timeout_s
        self._poster = resp.Poster(address, timeout_s=timeout_s) if address else None
        self.posted = 0
        self.received = 0
        self.undecodable = 0

    def post(self, instance_id: str, message: dict[str, Any]) -> bool:
        """Queue ``message`` for ``instance_id``'s inbox; never waits."""
        message["from"] = self.instance_id
        self._post(instance_id, orjson.dumps(message))
        return True

    def broadcast(self, instances: Iterable[str], message: dict[str, Any]) -> None:
        payload = orjson.dumps({**message, "from": self.instance_id})
        for instance_id in instances:
            if instance_id != self.instance_id:
                self._post(instance_id, payload)

    def _post(self, instance_id: str, payload: bytes) -> None:
        if self._poster is not None:
            self._poster.submit("XADD", self._store.inbox_key(instance_id), "NOMKSTREAM",
                                "MAXLEN", "~", self._max_len, "*", "m", payload)
        else:
            self._store.post(instance_id, payload, self._max_len)
        self.posted += 1

    async def run(
        self,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read this instance's inbox and hand every message to ``handle``, in order."""

        async def deliver(payload: str | bytes) -> None:
            try:
                message = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.undecodable += 1
                return
            self.received += 1
            await handle(message)

        if self._address is None or self._poster is None:
            await self._read_in_a_thread(deliver, task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self._poster.run)
            await nursery.start(functools.partial(
                resp.read_stream, self._address, self._store.inbox_key(self.instance_id),
                deliver, block_ms=READ_BLOCK_MS, count=READ_BATCH, timeout_s=self._timeout_s,
            ))
            task_status.started()

    async def _read_in_a_thread(
        self, deliver: Callable[[str | bytes], Awaitable[None]], *, task_status
    ) -> None:
        reader = self._store.inbox_reader(self.instance_id)
        task_status.started()
        while True:
            try:
                # Abandoned on cancellation: the read returns within READ_BLOCK_MS anyway.
                payloads = await trio.to_thread.run_sync(
                    reader.read, READ_BLOCK_MS, READ_BATCH, abandon_on_cancel=True
                )
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("inbox read failed; retrying", error=str(exc))
                await trio.sleep(RETRY_S)
                continue
            for payload in payloads:
                await deliver(payload)
