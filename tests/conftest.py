"""Shared pytest fixtures. Keep each group small and self-contained."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redis_server import RedisServerError, start_redis_server

# ---------------------------------------------------------------------------------------
# Real Redis: one redis-server per test session (free port, never 6379), emptied per test.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server started for this session and terminated at its end."""
    try:
        server = start_redis_server(tmp_path_factory.mktemp("redis-server"))
    except RedisServerError as exc:
        failure = str(exc)  # reported outside the except block: no chained traceback
    else:
        failure = None
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """The session redis-server's URL, after FLUSHALL so each test starts empty."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushall()
    yield redis_server_url
