"""Messages between instances: one inbox stream per instance, in the shared Redis.

Posting never waits: the message joins the store bridge's queue like any fire-and-forget
command and leaves in the next batch, after everything queued before it, so messages
from one instance to another arrive in the order they were posted. An instance reads its
own inbox with a blocking read on a connection of its own, in a worker thread.

An inbox exists only while its instance lives: it is created by its reader and kept by
its heartbeat, and messages are only ever added to an existing one, so the inbox of an
instance that died expires with whatever was posted to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.exceptions
import structlog
import trio

log = structlog.get_logger(__name__)

READ_BLOCK_MS = 1000  # a blocked read returns at least this often (lets a stop through)
READ_BATCH = 512
RETRY_S = 0.5  # after a failed read (Redis down), before reading again


class Bus:
    def __init__(self, store: Any, instance_id: str, *, max_len: int) -> None:
        self._store = store
        self.instance_id = instance_id
        self._max_len = max_len
        self.posted = 0
        self.received = 0
        self.undecodable = 0

    def post(self, instance_id: str, message: dict[str, Any]) -> bool:
        """Queue ``message`` for ``instance_id``'s inbox; never waits."""
        message["from"] = self.instance_id
        self._store.post(instance_id, orjson.dumps(message), self._max_len)
        self.posted += 1
        return True

    def broadcast(self, instances: Iterable[str], message: dict[str, Any]) -> None:
        payload = orjson.dumps({**message, "from": self.instance_id})
        for instance_id in instances:
            if instance_id != self.instance_id:
                self._store.post(instance_id, payload, self._max_len)
                self.posted += 1

    async def run(
        self,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read this instance's inbox and hand every message to ``handle``, in order."""
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
                try:
                    message = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    self.undecodable += 1
                    continue
                self.received += 1
                await handle(message)
