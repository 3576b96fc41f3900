"""Redis backend of the :class:`~trio_scheduler.store.base.Store`, on redis-py's sync client.

Why a batching thread bridge
----------------------------
redis-py is the product's client, and its synchronous client blocks, so every call has to
leave the Trio loop through a worker thread. That hop is the expensive part: one call
through ``trio.to_thread.run_sync`` costs ≈ 230 µs here, and with 50–100 concurrent callers
≈ 360–450 µs of CPU per call — more than all the WebSocket work of a job. A command inside a
pipeline, by contrast, costs ≈ 30–40 µs.

So no caller touches a thread. Each call becomes a small :class:`_Request` sent over a memory
channel to one *bridge task*, which takes the first request, drains everything else that has
queued up meanwhile (up to ``max_batch``), and runs the lot as ONE non-transactional pipeline
in ONE thread hop. While that hop is in flight the next batch accumulates, so the hop cost is
shared by however many callers are waiting: under load the per-call cost tends towards the
pipelined cost, and a lone caller pays one hop, as it would without the bridge.

Errors stay per caller: the pipeline runs with ``raise_on_error=False``, so a failing
command only fails its own request. Only what breaks the whole round trip (the connection)
fails the whole batch, and each of its callers gets its own :class:`StoreUnavailable`.

Atomic steps are Lua scripts (``store/lua/*.lua``) run by SHA: their SHA-1 is computed
locally, they are loaded with SCRIPT LOAD when the store opens, and a NOSCRIPT reply (Redis
restarted or SCRIPT FLUSH) reloads the script and retries that request once, in the same hop.

The same store runs on one Redis and on a Redis Cluster (:mod:`~trio_scheduler.store.topology`
holds what differs). On a cluster the pipeline is a ClusterPipeline: it sends each node its
share of the batch, follows MOVED/ASK replies and retries the commands of a node whose
connection broke one by one, and still returns one reply or error per command. A node that
cannot be connected at all fails the whole batch, like a lost connection to a single Redis.

The bridge thread and the busy loop
-----------------------------------
The bridge thread needs the GIL for every step of a round trip (build the pipeline, send,
parse each reply), and a busy event loop holds it: CPython hands it over only every
``sys.getswitchinterval()`` (5 ms by default), so under load each step of the thread
waited up to 5 ms, a batch took hundreds of milliseconds, and calls failed their deadline
with Redis answering in microseconds. While a Redis store is open the switch interval is
:data:`SWITCH_INTERVAL_S` (the loop thread is the only other one, so the extra switches
cost little), and replies are parsed by hiredis (C) rather than in Python.

Deadlines
---------
Every awaited call has a deadline (``call_timeout_s``): a frozen Redis fails each caller
after that long, never after the calls queued ahead of it. While a thread hop has been out
longer than the deadline, new calls fail at once without queueing (Redis is not answering;
there is no point in lining up behind it). A caller that gave up (deadline or cancellation)
leaves its request behind: a read or a reservation not yet sent is dropped unsent, and a
reservation that may still run is followed by its undo (ZREM), which runs after it because
the bridge keeps the order of requests. ``release_soon`` queues a release without waiting
at all. The queue is unbounded: awaited calls are bounded by their deadlines and the
breaker, and fire-and-forget releases by the slots that exist.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import redis
import redis.exceptions
import structlog
import trio

from trio_scheduler.channels import receive_batch, take_queued
from trio_scheduler.startup import StoreUnreachable
from trio_scheduler.store.base import Reservation, StoreUnavailable
from trio_scheduler.store.keys import Keys
from trio_scheduler.store.topology import Standalone, Topology, open_topology

__all__ = ["RedisStore", "open_redis_store"]

log = structlog.get_logger(__name__)

#: Errors meaning "Redis cannot be reached / did not answer" (BusyLoadingError and
#: AuthenticationError are ConnectionError subclasses), or, from a cluster client, "the
#: cluster cannot be reached or has no usable slot map". They become StoreUnavailable.
_UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.RedisClusterException,
)

_PENDING: Any = object()


@attrs.frozen
class _Script:
    name: str
    source: str
    sha: str  # SHA-1 of the source: the same digest Redis computes on SCRIPT LOAD


def _load_script_sources() -> dict[str, _Script]:
    """Every ``lua/*.lua`` file of this package, by file stem (``reserve.lua`` → ``reserve``)."""
    scripts = {}
    for entry in importlib.resources.files("trio_scheduler.store").joinpath("lua").iterdir():
        if entry.name.endswith(".lua"):
            source = entry.read_text(encoding="utf-8")
            name = entry.name.removesuffix(".lua")
            sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
            scripts[name] = _Script(name, source, sha)
    return scripts


class _Request:
    """One command waiting for the bridge, and the slot its outcome comes back in.

    ``value``/``error`` are written by the worker thread and read by the caller only after
    ``done`` is set, which the bridge does once the thread hop has returned.
    """

    __slots__ = ("command", "key", "script", "done", "value", "error", "batch_error",
                 "droppable", "abandoned")

    def __init__(
        self,
        command: tuple[Any, ...],
        key: str | None,
        script: _Script | None = None,
        *,
        droppable: bool = False,
    ) -> None:
        self.command = command  # arguments of Pipeline.execute_command
        self.key = key  # the key it routes by on a cluster (None: a command without keys)
        self.script = script  # set for EVALSHA: what to reload on NOSCRIPT
        self.droppable = droppable  # may be skipped once its caller gave up
        self.abandoned = False  # its caller stopped waiting (deadline or cancellation)
        self.done = trio.Event()
        self.value: Any = _PENDING
        self.error: BaseException | None = None
        # True when the error is not this command's own reply but something that broke the
        # whole batch (connection lost, store closed, a bug): reported as StoreUnavailable.
        self.batch_error = False

    @property
    def resolved(self) -> bool:
        return self.error is not None or self.value is not _PENDING

    def fail(self, error: BaseException, *, batch: bool) -> None:
        self.value = _PENDING
        self.error = error
        self.batch_error = batch

    def outcome(self) -> Any:
        """The reply, or raise this caller's own exception (called on the caller's task)."""
        error = self.error
        if error is None:
            return self.value
        if self.batch_error or isinstance(error, _UNREACHABLE) or _server_state_error(error):
            # A fresh exception per caller: a shared instance raised in several tasks would
            # have its traceback rewritten by each of them.
            raise StoreUnavailable(f"Redis store unavailable: {error}") from error
        raise error  # this command's own error reply (WRONGTYPE, …): a fresh instance


# Error replies that say the server cannot serve right now (failover, memory, persistence,
# replicas, a cluster down or resharding), not that the command was wrong: the store is
# unavailable. redis-py turns some codes into exception classes and strips the code from the
# message; the others keep it as the message's first word.
_SERVER_STATE_CLASSES = (
    redis.exceptions.ReadOnlyError,  # READONLY
    redis.exceptions.OutOfMemoryError,  # OOM
    redis.exceptions.TryAgainError,  # TRYAGAIN
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN, redirections without end
)
_SERVER_STATE_CODES = frozenset(
    {"READONLY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
     "CLUSTERDOWN"}
)


def _server_state_error(error: BaseException) -> bool:
    if isinstance(error, _SERVER_STATE_CLASSES):
        return True
    if not isinstance(error, redis.ResponseError):
        return False
    words = str(error).split(maxsplit=1)
    return bool(words) and words[0] in _SERVER_STATE_CODES


class RedisStore:
    """The :class:`~trio_scheduler.store.base.Store` on Redis, through a batching thread bridge.

    Build it with :func:`open_redis_store`, which runs the bridge task; a bare instance
    queues requests that nobody serves.

    ``batches`` and ``requests`` count the pipelines run and the commands they carried
    (``requests / batches`` is the mean batch size, for benchmarks and tests).
    """

    def __init__(
        self,
        topology: Topology,
        *,
        key_prefix: str = "ts:",
        max_batch: int = 256,
        call_timeout_s: float = 0.5,
    ) -> None:
        self._topology = topology
        self._keys = Keys(key_prefix)
        self._max_batch = max_batch
        self._call_timeout_s = call_timeout_s
        self._scripts = _load_script_sources()
        self._send, self._receive = trio.open_memory_channel[_Request](math.inf)
        self._hop_started_at: float | None = None  # trio clock, while a thread hop is out
        self._hop_ended = trio.Event()
        self.batches = 0
        self.requests = 0
        self.dropped = 0  # requests skipped because their caller had given up

    # ------------------------------------------------------------------ Store methods

    async def reserve(
        self, node_id: str, member: str, capacity: int, now_ms: int, expires_at_ms: int
    ) -> Reservation:
        script = self._scripts["reserve"]
        key = self._keys.reservations(node_id)
        granted, in_use = await self._call(
            ("EVALSHA", script.sha, 1, key, member, capacity, now_ms, expires_at_ms),
            key,
            script,
            droppable=True,
            undo=("ZREM", key, member),
        )
        return Reservation(bool(granted), int(in_use))

    async def release(self, node_id: str, member: str) -> bool:
        key = self._keys.reservations(node_id)
        return int(await self._call(("ZREM", key, member), key)) > 0

    def release_soon(self, node_id: str, member: str) -> None:
        key = self._keys.reservations(node_id)
        self._submit(_Request(("ZREM", key, member), key))

    async def release_instance(self, node_ids: list[str], instance_id: str) -> int:
        """Give back the slots these nodes hold for a dead instance; how many there were."""
        script = self._scripts["release_instance"]
        try:
            requests = [
                self._start(("EVALSHA", script.sha, 1, key, f"@{instance_id}"), key, script)
                for key in (self._keys.reservations(n) for n in node_ids)
            ]
        except StoreUnavailable:
            await trio.lowlevel.checkpoint()
            raise
        removed = 0
        for request in requests:
            removed += int(await self._finish(request))
        if not requests:
            await trio.lowlevel.checkpoint()
        return removed

    async def in_use(self, node_id: str, now_ms: int) -> int:
        # "(now" is an exclusive bound: an entry expiring exactly at now_ms no longer counts,
        # as in MemoryStore (expiry > now_ms) and reserve.lua (drops score <= now).
        key = self._keys.reservations(node_id)
        return int(await self._call(("ZCOUNT", key, f"({now_ms}", "+inf"), key, droppable=True))

    async def put_node(
        self, node_id: str, fields: Mapping[str, str], ttl_ms: int | None = None
    ) -> None:
        if not fields:
            # HSET needs at least one pair, and Redis has no empty hashes: nothing to write.
            await trio.lowlevel.checkpoint()
            return
        key = self._keys.node(node_id)
        also = (("PEXPIRE", key, ttl_ms),) if ttl_ms is not None else ()
        await self._call(("HSET", key, *_flat(fields)), key, also=also)

    async def put_nodes(
        self, nodes: Mapping[str, Mapping[str, str]], ttl_ms: int | None = None
    ) -> None:
        try:
            requests = []
            for node_id, fields in nodes.items():
                key = self._keys.node(node_id)
                requests.append(self._start(("HSET", key, *_flat(fields)), key))
                if ttl_ms is not None:
                    self._submit(_Request(("PEXPIRE", key, ttl_ms), key))
        except StoreUnavailable:
            await trio.lowlevel.checkpoint()
            raise
        for request in requests:
            await self._finish(request)
        if not requests:
            await trio.lowlevel.checkpoint()

    async def get_nodes(self, node_ids: list[str]) -> dict[str, dict[str, str]]:
        """Mirrored nodes by id, in one batch; ids without a hash are left out."""
        try:
            keys = [self._keys.node(n) for n in node_ids]
            requests = [self._start(("HGETALL", key), key, droppable=True) for key in keys]
        except StoreUnavailable:
            await trio.lowlevel.checkpoint()
            raise
        found = {}
        for node_id, request in zip(node_ids, requests, strict=True):
            fields = await self._finish(request)
            if fields:
                found[node_id] = dict(fields)
        return found

    # ------------------------------------------------------------------ instances

    async def announce(self, instance_id: str, fields: Mapping[str, str], ttl_ms: int,
                       expires_at_ms: int) -> bool:
        """Rewrite this instance's hash for ``ttl_ms`` more; False if it was gone (the
        first time, or the store lost it)."""
        script = self._scripts["instance_beat"]
        instances = self._keys.instances()
        existed = await self._call(
            ("EVALSHA", script.sha, 2, instances, self._keys.instance(instance_id),
             instance_id, expires_at_ms, ttl_ms, *_flat(fields)),
            instances,
            script,
        )
        return bool(existed)

    async def live_instances(self) -> dict[str, dict[str, str]]:
        script = self._scripts["instance_list"]
        instances = self._keys.instances()
        reply = await self._call(
            ("EVALSHA", script.sha, 1, instances, self._keys.instance_prefix()),
            instances, script, droppable=True,
        )
        return {
            reply[i]: dict(zip(reply[i + 1][::2], reply[i + 1][1::2], strict=True))
            for i in range(0, len(reply), 2)
        }

    async def withdraw(self, instance_id: str) -> None:
        """A graceful stop: the instance is gone at once, and so is its inbox."""
        instances, inbox = self._keys.instances(), self._keys.inbox(instance_id)
        self._submit(_Request(("DEL", inbox), inbox))
        await self._call(("DEL", self._keys.instance(instance_id)), instances,
                         also=(("ZREM", instances, instance_id),))

    async def open_inbox(self, instance_id: str, ttl_ms: int) -> None:
        """Create (or keep) this instance's inbox stream for ``ttl_ms`` more. Messages for
        an instance are only ever added to an existing inbox, so the inbox of an instance
        that died expires with everything in it."""
        key = self._keys.inbox(instance_id)
        await self._call(("XADD", key, "MAXLEN", "~", 1000, "*", "open", "1"), key,
                         also=(("PEXPIRE", key, ttl_ms),))

    def inbox_key(self, instance_id: str) -> str:
        return self._keys.inbox(instance_id)

    def post(self, instance_id: str, payload: bytes, max_len: int) -> None:
        """Add a message to an instance's inbox without waiting (never creates the inbox;
        the stream keeps about its last ``max_len`` messages)."""
        key = self._keys.inbox(instance_id)
        self._submit(_Request(("XADD", key, "NOMKSTREAM", "MAXLEN", "~", max_len, "*", "m",
                               payload), key))

    def inbox_reader(self, instance_id: str) -> InboxReader:
        """A blocking reader of this instance's inbox, on its own connection (run its
        ``read`` in a worker thread)."""
        return InboxReader(self._topology.dedicated_client(), self._keys.inbox(instance_id))

    async def remove_node(self, node_id: str) -> None:
        key = self._keys.node(node_id)
        await self._call(("DEL", key), key)

    async def get_node(self, node_id: str) -> dict[str, str] | None:
        key = self._keys.node(node_id)
        fields = await self._call(("HGETALL", key), key, droppable=True)
        return dict(fields) if fields else None

    async def ping(self) -> bool:
        """True when Redis answers PING (a cluster: says its state is ok); never raises (it
        backs ``GET /ready``)."""
        topology = self._topology
        try:
            return topology.healthy(
                await self._call(topology.health_command, None, droppable=True)
            )
        except (StoreUnavailable, redis.exceptions.RedisError):
            return False

    # ------------------------------------------------------------------ caller side

    async def _call(
        self,
        command: tuple[Any, ...],
        key: str | None,
        script: _Script | None = None,
        *,
        droppable: bool = False,
        undo: tuple[Any, ...] | None = None,
        also: tuple[tuple[Any, ...], ...] = (),
    ) -> Any:
        """Run one command on ``key`` through the bridge and wait, at most
        ``call_timeout_s``, for its reply. ``undo`` (on the same key) is queued if the caller
        gives up while the command may still run (a reservation taken for nobody); ``also``
        are commands on the same key queued right after it, not waited for."""
        try:
            request = self._start(command, key, script, droppable=droppable)
        except StoreUnavailable:
            await trio.lowlevel.checkpoint()
            raise
        for extra in also:
            self._submit(_Request(extra, key))
        return await self._finish(request, undo)

    def _start(
        self,
        command: tuple[Any, ...],
        key: str | None,
        script: _Script | None = None,
        *,
        droppable: bool = False,
    ) -> _Request:
        hop_started_at = self._hop_started_at
        if hop_started_at is not None and (
            trio.current_time() - hop_started_at > self._call_timeout_s
        ):
            raise StoreUnavailable(
                f"Redis has not answered for over {self._call_timeout_s:g} s"
            )
        request = _Request(command, key, script, droppable=droppable)
        self._submit(request, raise_if_closed=True)
        return request

    async def _finish(self, request: _Request, undo: tuple[Any, ...] | None = None) -> Any:
        try:
            with trio.move_on_after(self._call_timeout_s):
                await request.done.wait()
        finally:
            if not request.done.is_set():
                # Deadline or cancellation: the bridge may still run it, or drop it.
                request.abandoned = True
                if undo is not None:
                    self._submit(_Request(undo, request.key))
        if not request.done.is_set():
            raise StoreUnavailable(f"Redis did not answer within {self._call_timeout_s:g} s")
        return request.outcome()

    async def hop_ended(self) -> None:
        """Wait until no thread hop is out (Redis answered, or the connection failed)."""
        if self._hop_started_at is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._hop_ended.wait()

    def _submit(self, request: _Request, *, raise_if_closed: bool = False) -> None:
        """Queue a request for the bridge without waiting (the queue is unbounded)."""
        try:
            self._send.send_nowait(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if raise_if_closed:
                raise StoreUnavailable("Redis store is closed") from None
            log.debug("store.redis.closed; request not sent", command=request.command[0])

    # ------------------------------------------------------------------ bridge task

    async def _bridge(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run queued requests, one pipeline per thread hop, until cancelled."""
        task_status.started()
        try:
            while True:
                batch = self._drop_abandoned(await receive_batch(self._receive, self._max_batch))
                if not batch:
                    continue
                try:
                    # abandon_on_cancel=False: on shutdown the hop in flight finishes and its
                    # callers get their real outcome, never a thread left talking to Redis.
                    self._hop_started_at = trio.current_time()
                    self._hop_ended = trio.Event()
                    await trio.to_thread.run_sync(self._run_batch, batch, abandon_on_cancel=False)
                except BaseException as exc:
                    closed = StoreUnavailable("Redis store is closing")
                    for request in batch:
                        if not request.resolved:
                            request.fail(exc if isinstance(exc, Exception) else closed, batch=True)
                    if not isinstance(exc, Exception):
                        raise  # Cancelled (shutdown) or KeyboardInterrupt
                    log.exception("store.redis.bridge_error", batch_size=len(batch))
                finally:
                    self._hop_started_at = None
                    self._hop_ended.set()
                    self.batches += 1
                    self.requests += len(batch)
                    for request in batch:
                        request.done.set()
        finally:
            # Fail whatever is still queued, then close: later sends raise BrokenResourceError,
            # which callers see as StoreUnavailable. No checkpoint in between, so no request
            # can slip in unanswered.
            closed = StoreUnavailable("Redis store is closed")
            for request in take_queued(self._receive):
                request.fail(closed, batch=True)
                request.done.set()
            self._receive.close()

    def _drop_abandoned(self, batch: list[_Request]) -> list[_Request]:
        """Skip what nobody waits for any more and need not run (reads, reservations)."""
        kept = []
        for request in batch:
            if request.abandoned and request.droppable:
                self.dropped += 1
                request.fail(StoreUnavailable("abandoned by its caller"), batch=True)
                request.done.set()
            else:
                kept.append(request)
        return kept

    # ------------------------------------------------------------------ worker thread side

    def _run_batch(self, batch: list[_Request]) -> None:
        """In the worker thread: run ``batch`` as one pipeline, resolving every request."""
        try:
            self._pipeline(batch)
            retry = [
                r for r in batch
                if r.script is not None and isinstance(r.error, redis.exceptions.NoScriptError)
            ]
            if retry:
                # Redis lost its script cache (restart, SCRIPT FLUSH): load again, retry once.
                # Unresolved first, so a failure of the reload itself reaches these callers.
                for request in retry:
                    request.error = None
                self._load_scripts({r.script.name: r.script for r in retry}.values())
                self._pipeline(retry)
        except Exception as exc:
            for request in batch:
                if not request.resolved:
                    request.fail(exc, batch=True)

    def _pipeline(self, requests: list[_Request]) -> None:
        topology = self._topology
        pipe = topology.client().pipeline(transaction=False)
        for request in requests:
            pipe.execute_command(*request.command, **topology.route(request.key))
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.exceptions.DataError as exc:
            # An argument redis-py cannot encode fails the packing of the whole pipeline
            # before anything is sent: run each request alone so only its caller fails.
            if len(requests) == 1:
                requests[0].fail(exc, batch=False)
            else:
                for request in requests:
                    self._pipeline([request])
            return
        for request, reply in zip(requests, replies, strict=True):
            if isinstance(reply, Exception):
                request.fail(reply, batch=False)
            else:
                request.value = reply

    def _load_scripts(self, scripts: Any = None) -> None:
        """SCRIPT LOAD on every server that runs scripts (in a worker thread); raises what
        the client raises."""
        targets = self._topology.script_targets()
        loads = [
            (script, target)
            for script in (self._scripts.values() if scripts is None else scripts)
            for target in targets
        ]
        pipe = self._topology.client().pipeline(transaction=False)
        for script, target in loads:
            pipe.execute_command("SCRIPT LOAD", script.source, **target)
        for (script, _), sha in zip(loads, pipe.execute(), strict=True):
            if sha != script.sha:  # cannot happen unless Redis changes its digest
                raise RuntimeError(f"SCRIPT LOAD of {script.name}.lua gave {sha}, expected {script.sha}")


def _flat(fields: Mapping[str, str]) -> list[Any]:
    flat: list[Any] = []
    for name, value in fields.items():
        flat += (name, value)
    return flat


class InboxReader:
    """Reads one stream with blocking XREAD on a connection of its own (not the bridge's:
    a blocked read would hold every other command up). Not thread-safe: one thread."""

    def __init__(self, client: Any, key: str) -> None:
        self._client = client  # a client of its own (Topology.dedicated_client)
        self._key = key
        # From the start: the inbox is this instance's alone (its id is new each run),
        # and a first read from "$" would miss what was posted before it began.
        self._last_id = "0-0"

    def read(self, block_ms: int, count: int) -> list[bytes | str]:
        """The next messages (their payloads), waiting up to ``block_ms`` for one."""
        reply = self._client.xread({self._key: self._last_id}, count=count, block=block_ms)
        payloads = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                self._last_id = entry_id
                if "m" in fields:
                    payloads.append(fields["m"])
        return payloads

    def close(self) -> None:
        self._client.close()


SWITCH_INTERVAL_S = 0.0005  # see "The bridge thread and the busy loop" above


class _ShortSwitchInterval:
    """Keeps the switch interval short while any Redis store of the process is open (tests
    and ``--workers`` siblings in one process may open and close several, in any order)."""

    def __init__(self) -> None:
        self._open = 0
        self._saved = 0.0

    def hold(self) -> None:
        if self._open == 0:
            self._saved = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved, SWITCH_INTERVAL_S))
        self._open += 1

    def release(self) -> None:
        self._open -= 1
        if self._open == 0:
            sys.setswitchinterval(self._saved)


_short_switch_interval = _ShortSwitchInterval()


@asynccontextmanager
async def open_redis_store(
    url: str,
    *,
    key_prefix: str = "ts:",
    client: redis.Redis | None = None,
    socket_timeout_s: float = 5.0,
    call_timeout_s: float = 0.5,
    startup_wait_s: float | None = None,
) -> AsyncIterator[RedisStore]:
    """Open a :class:`RedisStore` on ``url`` and run its bridge task for the block's duration.

    ``url`` names one Redis (``redis://``, ``rediss://``, ``unix://``) or a Redis Cluster
    through one of its nodes (``redis+cluster://host:port``, ``rediss+cluster://``).
    ``client`` replaces the client built from ``url`` (tests pass a
    ``fakeredis.FakeRedis(decode_responses=True)``); it must decode responses. A client
    passed in belongs to the caller and is not closed; the one built here is.

    With ``startup_wait_s``, Redis must answer within that many seconds (it is asked again
    and again meanwhile, as it may be starting too), else :class:`StoreUnreachable`: a
    server started against a Redis it cannot reach says so at once rather than failing
    every job. Without it, Redis being down does not prevent opening: the scripts are
    loaded now if Redis answers and otherwise on the first NOSCRIPT reply, calls raise
    :class:`StoreUnavailable` and ``ping()`` is False until it comes back. Either way a
    later outage is reported by readiness and by the jobs it fails.
    """
    if client is None:
        topology = open_topology(url, socket_timeout_s=socket_timeout_s)
    else:
        topology = Standalone(client, owned=False)
    _short_switch_interval.hold()
    try:
        store = RedisStore(topology, key_prefix=key_prefix, call_timeout_s=call_timeout_s)
        if startup_wait_s is not None:
            await _wait_until_answering(store, url, startup_wait_s)
        else:
            try:
                await trio.to_thread.run_sync(store._load_scripts)
            except _UNREACHABLE as exc:
                log.warning("store.redis.unreachable_at_start", error=str(exc))
        # The bridge outlives the block's own cancellation: a server that is stopping
        # still releases slots and withdraws from the store in its cleanup, so the bridge
        # is stopped only once the block is over.
        bridge_scope = trio.CancelScope(shield=True)

        async def run_bridge(*, task_status: trio.TaskStatus[None]) -> None:
            with bridge_scope:
                await store._bridge(task_status=task_status)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run_bridge)
                try:
                    yield store
                finally:
                    bridge_scope.cancel()
        except BaseExceptionGroup as group:
            # The bridge never raises, so a group here only wraps the exception of the
            # caller's block: give the caller back its own exception, not a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        topology.close()
        _short_switch_interval.release()


async def _wait_until_answering(store: RedisStore, url: str, wait_s: float) -> None:
    """Load the scripts, asking again with growing pauses, for at most ``wait_s``."""
    failure: Exception | None = None
    pause_s = 0.25
    with trio.move_on_after(wait_s):
        while True:
            try:
                # Abandoned if the wait ends first: a connect can take socket_timeout_s.
                await trio.to_thread.run_sync(store._load_scripts, abandon_on_cancel=True)
                return
            except _UNREACHABLE as exc:
                if failure is None:
                    log.warning("waiting for the store", store=redacted(url), error=str(exc),
                                wait_s=wait_s)
                failure = exc
            await trio.sleep(pause_s)
            pause_s = min(2 * pause_s, 2.0)
    cause = f": {failure}" if failure is not None else ""
    raise StoreUnreachable(f"Redis at {redacted(url)} did not answer within {wait_s:g} s{cause}")


def redacted(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter)."""
    url = re.sub(r"(?<=://)([^/@:]*):[^/]*@", r"\1:***@", url)
    return re.sub(r"(?<=[?&]password=)[^&]*", "***", url)
