"""One contract for every Store backend: MemoryStore, and RedisStore on fakeredis, on a
redis-server and on a 3-primary Redis Cluster.

MemoryStore's semantics are the contract; every Redis variant must give the same answers.
Times are wall-clock ms an hour ahead of now: reserve.lua sets the set's PEXPIREAT to its
latest score, so scores in the real past would make Redis delete the keys under the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import fakeredis
import pytest
import redis
import redis.cluster
import trio
import trio.testing

from redis_server import RedisClusterServers, RedisServer, free_port
from trio_scheduler.store import MemoryStore, Reservation, Store, StoreUnavailable, open_store
from trio_scheduler.store.keys import Keys
from trio_scheduler.store.redis import RedisStore, open_redis_store
from trio_scheduler.store.topology import Cluster

BACKENDS = ["memory", "fakeredis", "redis", "cluster"]
REDIS_BACKENDS = ["fakeredis", "redis", "cluster"]


class FreezableRedis(fakeredis.FakeRedis):
    """A Redis that can stop answering (like a SIGSTOPped server) and come back."""

    def __init__(self) -> None:
        super().__init__(decode_responses=True)
        self.answering = threading.Event()
        self.answering.set()

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def execute_when_answering(*args, **kwargs):
            assert self.answering.wait(timeout=10), "the test never let Redis answer again"
            return execute(*args, **kwargs)

        pipe.execute = execute_when_answering
        return pipe


class Backend:
    """One store backend of the contract (this one: MemoryStore): how to open a store on it
    and, for Redis, a client of the same data behind the store's back (``admin``)."""

    def __init__(self) -> None:
        self.admin: Any = None

    def open(self, **options: Any) -> Any:
        return open_store(None)

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()


class FakeBackend(Backend):
    """fakeredis in the process; ``frozen()``: Redis stops answering the store for the block
    (its commands wait, unanswered), as does :meth:`ServerBackend.frozen`."""

    def __init__(self) -> None:
        super().__init__()
        self.admin = FreezableRedis()

    def open(self, **options: Any) -> Any:
        return open_redis_store("redis://fakeredis", client=self.admin, **options)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.admin.answering.clear()
        try:
            yield
        finally:
            self.admin.answering.set()

    def close(self) -> None:
        pass  # in the process: nothing to close


class ServerBackend(Backend):
    """A real redis-server, or the servers of a real cluster: ``frozen()`` stops them."""

    def __init__(self, url: str, servers: list[RedisServer], admin: Any) -> None:
        super().__init__()
        self.url = url
        self.servers = servers
        self.admin = admin

    def open(self, **options: Any) -> Any:
        return open_redis_store(self.url, **options)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        try:
            for server in self.servers:
                server.freeze()
            yield
        finally:
            for server in self.servers:
                server.thaw()


def make_backend(kind: str, request: pytest.FixtureRequest) -> Backend:
    """The backend ``kind``; a real server or cluster is only started when a test needs it."""
    if kind == "memory":
        return Backend()
    if kind == "fakeredis":
        return FakeBackend()
    if kind == "redis":
        url = request.getfixturevalue("redis_url")  # emptied for this test
        server = request.getfixturevalue("redis_server")
        return ServerBackend(url, [server], redis.Redis.from_url(url, decode_responses=True))
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    admin = redis.cluster.RedisCluster.from_url(cluster.servers[0].url, decode_responses=True)
    return ServerBackend(cluster.url, cluster.servers, admin)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = make_backend(request.param, request)
    yield backend
    backend.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    async with backend.open() as store:
        yield store


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = make_backend(request.param, request)
    yield backend
    backend.close()


@pytest.fixture
async def redis_store(redis_backend: Backend) -> AsyncIterator[RedisStore]:
    async with redis_backend.open() as store:
        assert isinstance(store, RedisStore)
        yield store


@pytest.fixture
def t0() -> int:
    return int(time.time() * 1000) + 3_600_000


# ---------------------------------------------------------------------------------------
# The contract, on every backend
# ---------------------------------------------------------------------------------------


async def test_reserve_up_to_capacity_then_refused(store: Store, t0: int) -> None:
    results = [await store.reserve("n1", f"job{i}:1", 3, t0, t0 + 10_000) for i in range(3)]
    assert results == [Reservation(True, 1), Reservation(True, 2), Reservation(True, 3)]
    assert await store.reserve("n1", "job3:1", 3, t0, t0 + 10_000) == Reservation(False, 3)
    assert await store.in_use("n1", t0) == 3


async def test_expired_reservations_stop_counting(store: Store, t0: int) -> None:
    assert await store.reserve("n1", "a:1", 2, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n1", "b:1", 2, t0, t0 + 5_000) == Reservation(True, 2)
    assert await store.reserve("n1", "c:1", 2, t0 + 999, t0 + 9_000) == Reservation(False, 2)
    # At its expiry instant a:1 no longer counts, so c:1 takes its slot.
    assert await store.reserve("n1", "c:1", 2, t0 + 1_000, t0 + 9_000) == Reservation(True, 2)
    assert await store.in_use("n1", t0 + 1_000) == 2
    assert await store.in_use("n1", t0 + 5_000) == 1


async def test_rereserving_a_member_is_idempotent(store: Store, t0: int) -> None:
    assert await store.reserve("n1", "a:1", 2, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n1", "a:1", 2, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n1", "b:1", 2, t0, t0 + 5_000) == Reservation(True, 2)
    # At capacity, the holder is still granted and takes no second slot...
    assert await store.reserve("n1", "a:1", 2, t0 + 10, t0 + 9_000) == Reservation(True, 2)
    assert await store.reserve("n1", "c:1", 2, t0 + 10, t0 + 9_000) == Reservation(False, 2)
    assert await store.in_use("n1", t0 + 10) == 2
    # ...and its expiry was refreshed: past its first expiry and b's, a:1 still counts.
    assert await store.in_use("n1", t0 + 5_000) == 1
    assert await store.reserve("n1", "c:1", 2, t0 + 5_000, t0 + 9_000) == Reservation(True, 2)


async def test_release_returns_true_then_false(store: Store, t0: int) -> None:
    assert await store.release("n1", "a:1") is False
    await store.reserve("n1", "a:1", 2, t0, t0 + 1_000)
    assert await store.release("n1", "a:1") is True
    assert await store.release("n1", "a:1") is False
    assert await store.in_use("n1", t0) == 0


async def test_release_frees_a_slot(store: Store, t0: int) -> None:
    assert await store.reserve("n1", "a:1", 1, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n1", "b:1", 1, t0, t0 + 1_000) == Reservation(False, 1)
    assert await store.release("n1", "a:1") is True
    assert await store.reserve("n1", "b:1", 1, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.in_use("n1", t0) == 1


async def test_in_use_counts_only_unexpired(store: Store, t0: int) -> None:
    assert await store.in_use("nobody", t0) == 0
    for member, expiry in [("a:1", t0 + 100), ("b:1", t0 + 200), ("c:1", t0 + 300)]:
        await store.reserve("n1", member, 10, t0, expiry)
    assert await store.in_use("n1", t0) == 3
    assert await store.in_use("n1", t0 + 99) == 3
    assert await store.in_use("n1", t0 + 100) == 2  # expiry is exclusive: a:1 is gone
    assert await store.in_use("n1", t0 + 250) == 1
    assert await store.in_use("n1", t0 + 300) == 0


async def test_capacity_is_per_node(store: Store, t0: int) -> None:
    assert await store.reserve("n1", "a:1", 1, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n2", "b:1", 1, t0, t0 + 1_000) == Reservation(True, 1)
    assert await store.reserve("n1", "c:1", 1, t0, t0 + 1_000) == Reservation(False, 1)
    assert await store.reserve("n2", "a:1", 1, t0, t0 + 1_000) == Reservation(False, 1)
    assert await store.release("n2", "a:1") is False
    assert (await store.in_use("n1", t0), await store.in_use("n2", t0)) == (1, 1)


async def test_node_state_round_trip(store: Store, t0: int) -> None:
    assert await store.get_node("n1") is None
    await store.put_node("n1", {"status": "online", "capacity": "4", "owner": "i-1"})
    assert await store.get_node("n1") == {"status": "online", "capacity": "4", "owner": "i-1"}
    await store.put_node("n1", {"status": "draining"})  # fields are merged
    assert await store.get_node("n1") == {"status": "draining", "capacity": "4", "owner": "i-1"}
    assert await store.get_node("n2") is None
    await store.reserve("n1", "a:1", 4, t0, t0 + 1_000)
    await store.remove_node("n1")
    assert await store.get_node("n1") is None
    await store.remove_node("n1")  # harmless twice
    assert await store.in_use("n1", t0) == 1  # reservations are not node state


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_concurrent_reserves_grant_exactly_capacity(store: Store, t0: int) -> None:
    results: dict[str, Reservation] = {}

    async def reserve(member: str) -> None:
        results[member] = await store.reserve("n1", member, 7, t0, t0 + 10_000)

    batches_before = store.batches if isinstance(store, RedisStore) else 0
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(reserve, f"job{i}:1")
    batches = (store.batches if isinstance(store, RedisStore) else 0) - batches_before

    granted = sorted(m for m, r in results.items() if r.granted)
    assert len(results) == 50
    assert len(granted) == 7
    assert sorted(r.in_use for r in results.values() if r.granted) == [1, 2, 3, 4, 5, 6, 7]
    assert {r.in_use for r in results.values() if not r.granted} == {7}
    assert await store.in_use("n1", t0) == 7
    for member in granted:
        assert await store.release("n1", member) is True
    assert await store.in_use("n1", t0) == 0
    if isinstance(store, RedisStore):
        # 50 callers shared a handful of thread hops instead of taking 50.
        assert 1 <= batches <= 5


# ---------------------------------------------------------------------------------------
# What only the Redis bridge has: scripts by SHA, per-request errors, cancellation, outages
# ---------------------------------------------------------------------------------------


async def test_noscript_is_recovered(
    redis_store: RedisStore, redis_backend: Backend, t0: int
) -> None:
    assert await redis_store.reserve("n1", "a:1", 5, t0, t0 + 1_000) == Reservation(True, 1)
    # Another client empties the script cache (of every primary), as a Redis restart would.
    other = redis_backend.admin
    other.script_flush()
    sha = redis_store._scripts["reserve"].sha
    assert other.script_exists(sha) == [False]

    results: list[Reservation] = []

    async def reserve(member: str) -> None:
        results.append(await redis_store.reserve("n1", member, 5, t0, t0 + 1_000))

    async with trio.open_nursery() as nursery:  # several NOSCRIPTs in one batch: one reload
        for i in range(3):
            nursery.start_soon(reserve, f"b{i}:1")
    assert sorted(r.in_use for r in results) == [2, 3, 4]
    assert all(r.granted for r in results)
    assert other.script_exists(sha) == [True]
    assert await redis_store.reserve("n1", "c:1", 5, t0, t0 + 1_000) == Reservation(True, 5)


async def test_an_error_reply_fails_only_its_caller(
    redis_store: RedisStore, redis_backend: Backend, t0: int
) -> None:
    redis_backend.admin.set(Keys().reservations("broken"), "not a sorted set")
    outcomes: dict[str, object] = {}

    async def reserve(node_id: str) -> None:
        try:
            outcomes[node_id] = await redis_store.reserve(node_id, "a:1", 1, t0, t0 + 1_000)
        except redis.ResponseError as exc:
            outcomes[node_id] = exc

    batches_before = redis_store.batches
    async with trio.open_nursery() as nursery:
        for node_id in ["ok1", "broken", "ok2"]:
            nursery.start_soon(reserve, node_id)
    assert redis_store.batches - batches_before == 1  # the three shared one pipeline
    assert outcomes["ok1"] == outcomes["ok2"] == Reservation(True, 1)
    assert isinstance(outcomes["broken"], redis.ResponseError)
    assert "WRONGTYPE" in str(outcomes["broken"])


SERVER_STATE_REPLIES = [
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
    "NOREPLICAS Not enough good replicas to write.",
    "BUSY Redis is busy running a script.",
    "CLUSTERDOWN The cluster is down",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
]


async def test_server_state_replies_mean_the_store_is_unavailable(
    redis_backend: Backend, t0: int
) -> None:
    # Each reply comes off the wire as Redis sends it (a script returns it), through the
    # real client: redis-py turns most of these codes into exception classes, and on a
    # cluster retries TRYAGAIN before giving up. The deadline leaves it the time to.
    async with redis_backend.open(call_timeout_s=5.0) as store:
        outcomes: dict[str, object] = {}

        async def reply_with(error: str) -> None:
            key = Keys().node(error.split()[0])
            script = "return redis.error_reply(ARGV[1])"
            try:
                outcomes[error] = await store._call(("EVAL", script, 1, key, error), key)
            except Exception as exc:
                outcomes[error] = exc

        async def reserve() -> None:
            outcomes["reserve"] = await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)

        async with trio.open_nursery() as nursery:
            for error in SERVER_STATE_REPLIES:
                nursery.start_soon(reply_with, error)
            nursery.start_soon(reserve)
    assert outcomes.pop("reserve") == Reservation(True, 1)  # the batch's other request
    assert {error: type(outcome) for error, outcome in outcomes.items()} == {
        error: StoreUnavailable for error in SERVER_STATE_REPLIES
    }


async def test_a_cancelled_reservation_is_undone_and_the_bridge_goes_on(
    redis_store: RedisStore, redis_backend: Backend, t0: int
) -> None:
    with redis_backend.frozen():  # the reservation is sent and stays unanswered...
        async with trio.open_nursery() as nursery:
            nursery.start_soon(redis_store.reserve, "n1", "a:1", 2, t0, t0 + 1_000)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # ...when its caller gives up
    # The script ran once Redis answered, for nobody: its undo ran after it.
    assert await redis_store.in_use("n1", t0) == 0
    assert await redis_store.reserve("n1", "a:1", 2, t0, t0 + 1_000) == Reservation(True, 1)
    assert await redis_store.ping() is True


async def test_release_soon_is_carried_out_before_later_calls(store: Store, t0: int) -> None:
    await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)
    store.release_soon("n1", "a:1")
    assert await store.in_use("n1", t0) == 0
    assert (await store.reserve("n1", "b:1", 1, t0, t0 + 1_000)).granted


async def test_a_frozen_redis_fails_each_call_at_its_deadline_without_queueing(
    redis_backend: Backend, t0: int
) -> None:
    deadline_s = 0.2
    async with redis_backend.open(call_timeout_s=deadline_s) as store:
        assert await store.ping() is True
        with redis_backend.frozen():
            started = trio.current_time()
            with pytest.raises(StoreUnavailable, match="did not answer"):
                await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)
            assert deadline_s <= trio.current_time() - started < deadline_s + 1
            # Redis is still frozen: later calls fail at once instead of queueing behind it.
            started = trio.current_time()
            for member in ("b:1", "c:1"):
                with pytest.raises(StoreUnavailable, match="has not answered"):
                    await store.reserve("n1", member, 1, t0, t0 + 1_000)
            assert await store.ping() is False
            assert trio.current_time() - started < deadline_s
        with trio.fail_after(5):
            await store.hop_ended()
        # The first reservation ran once Redis answered, for nobody: its undo followed it.
        assert await store.release("n1", "a:1") is False
        assert await store.in_use("n1", t0) == 0
        assert (await store.reserve("n1", "d:1", 1, t0, t0 + 1_000)).granted


async def test_a_closed_store_raises_store_unavailable(t0: int) -> None:
    async with open_redis_store("redis://fakeredis", client=fakeredis.FakeRedis(decode_responses=True)) as store:
        assert await store.ping() is True
    with pytest.raises(StoreUnavailable):
        await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)
    assert await store.ping() is False


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_unreachable_redis(scheme: str, t0: int) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with open_store(url) as store:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailable):
            await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)
        with pytest.raises(StoreUnavailable):
            await store.release("n1", "a:1")
        with pytest.raises(StoreUnavailable):
            await store.in_use("n1", t0)
        with pytest.raises(StoreUnavailable):
            await store.put_node("n1", {"status": "online"})
        with pytest.raises(StoreUnavailable):
            await store.get_node("n1")
        with pytest.raises(StoreUnavailable):
            await store.remove_node("n1")
        assert await store.ping() is False


# ---------------------------------------------------------------------------------------
# What only a Redis Cluster has: hash slots, several primaries, redirections
# ---------------------------------------------------------------------------------------


def test_a_cluster_is_healthy_only_while_it_says_its_state_is_ok() -> None:
    # Its nodes answer PING even while the cluster refuses every keyed command.
    assert Cluster.healthy({"cluster_state": "ok", "cluster_slots_ok": "16384"}) is True
    assert Cluster.healthy({"cluster_state": "fail", "cluster_slots_ok": "10923"}) is False
    assert Cluster.healthy(True) is False  # a PONG is not a cluster's state


@pytest.fixture
def cluster_admin(redis_cluster: RedisClusterServers) -> Iterator[redis.cluster.RedisCluster]:
    """A client of the session cluster, to look at the data behind the store's back."""
    admin = redis.cluster.RedisCluster.from_url(redis_cluster.servers[0].url, decode_responses=True)
    yield admin
    admin.close()


def server_of(
    key: str, cluster: RedisClusterServers, admin: redis.cluster.RedisCluster
) -> RedisServer:
    """The server of the primary that owns ``key``."""
    port = admin.get_node_from_key(key).port
    return next(server for server in cluster.servers if server.port == port)


def test_keys_a_script_touches_together_share_a_hash_slot(
    redis_cluster: RedisClusterServers, cluster_admin: redis.cluster.RedisCluster
) -> None:
    keys = Keys()
    slot = cluster_admin.cluster_keyslot  # CLUSTER KEYSLOT: the server's own hash
    for node_id in ["node-1DDFF3B5", "n1", "", "}odd", "a{b}c"]:
        assert slot(keys.reservations(node_id)) == slot(keys.node(node_id)), node_id
    for instance_id in ["inst-0a1b2c3d", "i2", "", "}odd"]:
        assert slot(keys.instance(instance_id)) == slot(keys.instances()), instance_id
    # What is touched alone spreads: nodes and inboxes land on every primary.
    primaries = {node.name for node in cluster_admin.get_primaries()}
    owner = cluster_admin.get_node_from_key
    assert {owner(keys.reservations(f"node-{i:08X}")).name for i in range(30)} == primaries
    assert {owner(keys.inbox(f"inst-{i:08x}")).name for i in range(30)} == primaries


def spread_node_ids(admin: redis.cluster.RedisCluster, per_primary: int = 2) -> list[str]:
    """Node ids whose reservations live on every primary, ``per_primary`` on each."""
    by_owner: dict[str, list[str]] = {node.name: [] for node in admin.get_primaries()}
    i = 0
    while any(len(ids) < per_primary for ids in by_owner.values()):
        node_id = f"node-{i:08X}"
        ids = by_owner[admin.get_node_from_key(Keys().reservations(node_id)).name]
        if len(ids) < per_primary:
            ids.append(node_id)
        i += 1
    return [node_id for ids in by_owner.values() for node_id in ids]


async def reserve_on_each(store: RedisStore, node_ids: list[str], t0: int) -> dict[str, Reservation]:
    """One reservation on each node, all at once (so they share a pipeline)."""
    results: dict[str, Reservation] = {}

    async def reserve(node_id: str) -> None:
        results[node_id] = await store.reserve(node_id, "a:1", 1, t0, t0 + 1_000)

    async with trio.open_nursery() as nursery:
        for node_id in node_ids:
            nursery.start_soon(reserve, node_id)
    return results


async def test_a_noscript_from_one_primary_reloads_the_scripts(
    redis_cluster: RedisClusterServers, cluster_admin: redis.cluster.RedisCluster, t0: int
) -> None:
    node_ids = spread_node_ids(cluster_admin)

    def loaded_on() -> set[int]:
        """Ports of the primaries that have the reserve script."""
        loaded = set()
        for server in redis_cluster.servers:
            with redis.Redis.from_url(server.url) as client:
                if client.script_exists(sha) == [True]:
                    loaded.add(server.port)
        return loaded

    async with open_redis_store(redis_cluster.url) as store:
        sha = store._scripts["reserve"].sha
        assert loaded_on() == {server.port for server in redis_cluster.servers}
        flushed = server_of(Keys().reservations(node_ids[0]), redis_cluster, cluster_admin)
        with redis.Redis.from_url(flushed.url) as client:
            client.script_flush()  # as a restart of that one primary would
        assert flushed.port not in loaded_on()

        results = await reserve_on_each(store, node_ids, t0)
    assert results == {node_id: Reservation(True, 1) for node_id in node_ids}
    assert cluster_admin.script_exists(sha) == [True]  # on every primary again


def command_stats(cluster: RedisClusterServers) -> dict[str, int]:
    """Calls per command, summed over the cluster's servers, since their last RESETSTAT."""
    calls: dict[str, int] = {}
    for server in cluster.servers:
        with redis.Redis.from_url(server.url) as client:
            for name, stats in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                calls[command] = calls.get(command, 0) + stats["calls"]
    return calls


def reset_stats(cluster: RedisClusterServers) -> None:
    for server in cluster.servers:
        with redis.Redis.from_url(server.url) as client:
            client.config_resetstat()


async def test_script_calls_go_straight_to_their_primary(
    redis_cluster: RedisClusterServers, cluster_admin: redis.cluster.RedisCluster, t0: int
) -> None:
    node_ids = spread_node_ids(cluster_admin, per_primary=4)
    async with open_redis_store(redis_cluster.url) as store:
        reset_stats(redis_cluster)
        batches_before = store.batches
        results = await reserve_on_each(store, node_ids, t0)
        batches = store.batches - batches_before
    assert all(result.granted for result in results.values())
    assert batches == 1
    calls = command_stats(redis_cluster)
    # Each script call went straight to its primary: redis-py was never left to ask a
    # server where the keys of an EVALSHA are (COMMAND GETKEYS, a round trip each).
    assert calls["evalsha"] == len(node_ids)
    assert "command|getkeys" not in calls


def move_empty_slot(slot: int, source: RedisServer, target: RedisServer,
                    cluster: RedisClusterServers) -> None:
    """Give an empty hash slot to another primary, the way a resharding does (the target
    takes it first, with a new config epoch, so no stale claim of the source can win)."""
    clients = {server.port: redis.Redis.from_url(server.url, decode_responses=True)
               for server in cluster.servers}
    try:
        source_id = clients[source.port].cluster("MYID")
        target_id = clients[target.port].cluster("MYID")
        clients[target.port].cluster("SETSLOT", slot, "IMPORTING", source_id)
        clients[source.port].cluster("SETSLOT", slot, "MIGRATING", target_id)
        order = [target.port, source.port] + [port for port in clients if port not in
                                              (target.port, source.port)]
        for port in order:
            clients[port].cluster("SETSLOT", slot, "NODE", target_id)
    finally:
        for client in clients.values():
            client.close()


async def test_a_moved_slot_is_followed_within_the_batch(
    redis_cluster: RedisClusterServers, cluster_admin: redis.cluster.RedisCluster, t0: int
) -> None:
    node_ids = spread_node_ids(cluster_admin)
    moved_key = Keys().reservations(node_ids[0])
    slot = cluster_admin.keyslot(moved_key)
    source = server_of(moved_key, redis_cluster, cluster_admin)
    target = next(server for server in redis_cluster.servers if server is not source)
    async with open_redis_store(redis_cluster.url) as store:  # learns today's slot map
        assert await store.ping() is True
        move_empty_slot(slot, source, target, redis_cluster)
        try:
            reset_stats(redis_cluster)
            results = await reserve_on_each(store, node_ids, t0)
            assert results == {node_id: Reservation(True, 1) for node_id in node_ids}
            with redis.Redis.from_url(source.url) as client:  # it was redirected
                assert client.info("errorstats")["errorstat_MOVED"]["count"] >= 1
            with redis.Redis.from_url(target.url) as client:
                assert client.exists(moved_key) == 1
            assert await store.in_use(node_ids[0], t0) == 1  # read where it now lives
        finally:
            with redis.Redis.from_url(target.url) as client:
                client.delete(moved_key)
            move_empty_slot(slot, target, source, redis_cluster)


def test_memory_is_the_default_backend() -> None:
    async def main() -> type:
        async with open_store(None) as store:
            return type(store)

    assert trio.run(main) is MemoryStore


async def test_the_slots_of_a_dead_instance_are_given_back(redis_store: RedisStore, t0: int):
    for member in ("a:1@inst-dead", "b:1@inst-live", "c:2@inst-dead", "d:1"):
        await redis_store.reserve("n1", member, 8, t0, t0 + 1_000)
    await redis_store.reserve("n2", "e:1@inst-dead", 8, t0, t0 + 1_000)
    assert await redis_store.release_instance(["n1", "n2", "n3"], "inst-dead") == 3
    assert await redis_store.in_use("n1", t0) == 2  # inst-live's and the unnamed one
    assert await redis_store.in_use("n2", t0) == 0


async def test_an_inbox_reader_gets_what_was_posted_before_it_first_read(
    redis_store: RedisStore,
):
    await redis_store.open_inbox("inst-a", ttl_ms=60_000)
    redis_store.post("inst-a", b"early", max_len=100)
    redis_store.post("inst-nobody", b"lost", max_len=100)  # no inbox: not created by a post
    assert await redis_store.ping()  # queued after the posts: they have run
    reader = redis_store.inbox_reader("inst-a")
    try:
        assert await trio.to_thread.run_sync(reader.read, 100, 10) == ["early"]
        redis_store.post("inst-a", b"later", max_len=100)
        assert await trio.to_thread.run_sync(reader.read, 1000, 10) == ["later"]
    finally:
        reader.close()
