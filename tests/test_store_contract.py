"""One contract for every Store backend: MemoryStore, RedisStore on fakeredis, on redis-server.

MemoryStore's semantics are the contract; both Redis variants must give the same answers.
Times are wall-clock ms an hour ahead of now: reserve.lua sets the set's PEXPIREAT to its
latest score, so scores in the real past would make Redis delete the keys under the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakeredis
import pytest
import redis
import trio
import trio.testing

from redis_server import free_port
from trio_scheduler.store import MemoryStore, Reservation, Store, StoreUnavailable, open_store
from trio_scheduler.store.keys import Keys
from trio_scheduler.store.redis import RedisStore, open_redis_store

BACKENDS = ["memory", "fakeredis", "redis"]
REDIS_BACKENDS = ["fakeredis", "redis"]


@asynccontextmanager
async def open_backend(kind: str, url: str | None) -> AsyncIterator[Store]:
    if kind == "memory":
        async with open_store(None) as store:
            yield store
    elif kind == "fakeredis":
        client = fakeredis.FakeRedis(decode_responses=True)
        async with open_redis_store("redis://fakeredis", client=client) as store:
            yield store
    else:
        assert url is not None
        async with open_redis_store(url) as store:
            yield store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(kind, url): the real redis-server is only started when a test needs it."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return request.param, url


@pytest.fixture
async def store(backend: tuple[str, str | None]) -> AsyncIterator[Store]:
    async with open_backend(*backend) as store:
        yield store


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return request.param, url


@pytest.fixture
async def redis_store(redis_backend: tuple[str, str | None]) -> AsyncIterator[RedisStore]:
    async with open_backend(*redis_backend) as store:
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
    redis_store: RedisStore, redis_backend: tuple[str, str | None], t0: int
) -> None:
    kind, url = redis_backend
    assert await redis_store.reserve("n1", "a:1", 5, t0, t0 + 1_000) == Reservation(True, 1)
    # Another client empties the script cache, as a Redis restart would.
    other = redis_store._topology.client() if kind == "fakeredis" else redis.Redis.from_url(url)
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
    if kind == "redis":
        other.close()


async def test_an_error_reply_fails_only_its_caller(
    redis_store: RedisStore, redis_backend: tuple[str, str | None], t0: int
) -> None:
    kind, url = redis_backend
    other = redis_store._topology.client() if kind == "fakeredis" else redis.Redis.from_url(url)
    other.set(Keys().reservations("broken"), "not a sorted set")
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
    if kind == "redis":
        other.close()


async def test_a_cancelled_reservation_is_undone_and_the_bridge_goes_on(
    redis_store: RedisStore, t0: int
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(redis_store.reserve, "n1", "a:1", 2, t0, t0 + 1_000)
        await trio.testing.wait_all_tasks_blocked()  # sent, and waiting for its reply
        nursery.cancel_scope.cancel()
    # The script may have run for nobody: its undo runs after it, so no slot stays taken.
    assert await redis_store.in_use("n1", t0) == 0
    assert await redis_store.reserve("n1", "a:1", 2, t0, t0 + 1_000) == Reservation(True, 1)
    assert await redis_store.ping() is True


async def test_release_soon_is_carried_out_before_later_calls(store: Store, t0: int) -> None:
    await store.reserve("n1", "a:1", 1, t0, t0 + 1_000)
    store.release_soon("n1", "a:1")
    assert await store.in_use("n1", t0) == 0
    assert (await store.reserve("n1", "b:1", 1, t0, t0 + 1_000)).granted


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


async def test_a_frozen_redis_fails_each_call_at_its_deadline_without_queueing(t0: int) -> None:
    client = FreezableRedis()
    deadline_s = 0.2
    async with open_redis_store("redis://fake", client=client, call_timeout_s=deadline_s) as store:
        assert await store.ping() is True
        client.answering.clear()
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
        client.answering.set()
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


async def test_unreachable_redis(t0: int) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
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


def test_memory_is_the_default_backend() -> None:
    async def main() -> type:
        async with open_store(None) as store:
            return type(store)

    assert trio.run(main) is MemoryStore
