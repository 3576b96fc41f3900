"""Shared pytest fixtures. Keep each group small and self-contained."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from redis_server import (
    RedisClusterServers,
    RedisServer,
    RedisServerError,
    start_redis_cluster,
    start_redis_server,
)

S = TypeVar("S", RedisServer, RedisClusterServers)

pytest_plugins = ["timeout_names"]

# ---------------------------------------------------------------------------------------
# Real Redis: one redis-server, and one 3-primary Redis Cluster, per test session (free
# ports, never 6379), each started when a test first needs it and emptied per test.
# ---------------------------------------------------------------------------------------


def _running(start: Callable[[Path], S], directory: Path) -> Iterator[S]:
    """``start(directory)``, stopped after its tests; if it cannot start, fail the test with
    the servers' output (reported outside the except block: no chained traceback)."""
    try:
        servers = start(directory)
    except RedisServerError as exc:
        failure = str(exc)
    else:
        failure = None
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for this session and terminated at its end."""
    yield from _running(start_redis_server, tmp_path_factory.mktemp("redis-server"))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session redis-server's URL, after FLUSHALL so each test starts empty."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of one test alone, which it may freeze, thaw or restart."""
    server = start_redis_server(tmp_path)
    try:
        yield server
    finally:
        server.thaw()  # a frozen server would not stop
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries started for this session, stopped at its end."""
    yield from _running(start_redis_cluster, tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture
def redis_cluster(redis_cluster_servers: RedisClusterServers) -> Iterator[RedisClusterServers]:
    """The session cluster, after FLUSHALL on every primary so each test starts empty."""
    for server in redis_cluster_servers.servers:
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
    yield redis_cluster_servers


# -- a whole scheduler on a free port -------------------------------------------------

import attrs  # noqa: E402
import pytest  # noqa: E402

from instances import LENIENT_ADMISSION  # noqa: E402
from trio_scheduler.config import Config, with_overrides  # noqa: E402
from trio_scheduler.server import Scheduler, serve  # noqa: E402


@attrs.frozen
class RunningServer:
    scheduler: Scheduler
    host: str = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.scheduler.port

    @property
    def session_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/session"

    @property
    def node_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/node"

    async def ready_node(self, node) -> str:
        """Register ``node`` (a zh/en agent) and wait until it serves zh:en; its id."""
        from trio_scheduler.simulate.frames import heartbeat_frame, register_frame

        await node.send(register_frame())
        node_id = (await node.recv())["node_id"]
        await node.send(heartbeat_frame(node_id))
        await self.scheduler.publisher.wait_until(lambda s: "zh:en" in s.pools)
        return node_id


def make_config(**sections) -> Config:
    base = with_overrides(Config(), server={"host": "127.0.0.1", "port": 0, **LENIENT_ADMISSION})
    return with_overrides(base, **sections) if sections else base


@pytest.fixture(params=["memory", "redis"])
def store_kind(request):
    return request.param


@pytest.fixture
def start_server(nursery, store_kind, request):
    """``await start_server(**config_sections)`` runs a scheduler in the test's nursery,
    on the embedded store or on the test redis-server (per ``store_kind``)."""

    async def start(**sections) -> RunningServer:
        if store_kind == "redis":
            url = request.getfixturevalue("redis_url")
            store = dict(sections.pop("store", {}), redis_url=url)
            sections["store"] = store
        scheduler = await nursery.start(serve, make_config(**sections))
        return RunningServer(scheduler)

    return start


# -- a port someone else holds ----------------------------------------------------------

import socket  # noqa: E402


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 held by a listener without SO_REUSEPORT."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]
