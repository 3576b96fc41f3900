"""How the Redis store reaches Redis: one server, or a Redis Cluster.

The bridge of :mod:`~trio_scheduler.store.redis` runs the same commands in the same
non-transactional pipeline either way; what differs is small and lives here.

- **The client.** ``redis.Redis`` connects on its first command. ``RedisCluster`` connects
  when it is built (it asks its seed node for the slot map), so :class:`Cluster` builds it on
  first use, in the worker thread, and again on the next batch if that failed: a cluster that
  is down when the scheduler starts makes a store that is unavailable, not a failed start.
- **Routing.** Each command names the one key it routes by (the key schema gives every key
  a script touches together one hash tag). The cluster pipeline is handed the node owning
  that key: left to itself, it asks the server for the keys of every EVALSHA it queues
  (``COMMAND GETKEYS``, one synchronous round trip per script call). A stale slot map is
  still corrected by redis-py, which follows MOVED and ASK replies.
- **Scripts.** A script runs on whichever primary owns its keys, so SCRIPT LOAD goes to
  every primary.
- **Health.** PING for one server. A cluster node answers PING even while the cluster
  refuses every keyed command (a primary lost, slots uncovered), so for a cluster the store
  is healthy when ``CLUSTER INFO`` says ``cluster_state:ok``.

Every method except :meth:`close` runs in the bridge's worker thread, one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import redis.cluster

from trio_scheduler.store.urls import cluster_seed_url

__all__ = ["Cluster", "Standalone", "Topology", "open_topology"]


class Standalone:
    """One ``redis-server`` (or a fakeredis client in tests)."""

    health_command: tuple[str, ...] = ("PING",)

    def __init__(self, client: redis.Redis, *, owned: bool = True) -> None:
        self._client = client
        self._owned = owned  # a client passed in by the caller is the caller's to close

    def client(self) -> redis.Redis:
        return self._client

    def dedicated_client(self) -> redis.Redis:
        """A client with connections of its own, for a blocking read (an inbox)."""
        pool = self._client.connection_pool
        return redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs))

    def route(self, key: str | None) -> dict[str, Any]:
        """Options of ``execute_command`` for a command on ``key``: none, there is one server."""
        return {}

    def script_targets(self) -> list[dict[str, Any]]:
        """Options of one SCRIPT LOAD per server that must have the scripts."""
        return [{}]

    @staticmethod
    def healthy(reply: Any) -> bool:
        return bool(reply)

    def close(self) -> None:
        if self._owned:
            self._client.close()  # closes pooled sockets: does not block


class Cluster:
    """A Redis Cluster, through redis-py's ``RedisCluster``, built on first use."""

    health_command: tuple[str, ...] = ("CLUSTER INFO",)

    def __init__(self, connect: Callable[[], redis.cluster.RedisCluster]) -> None:
        self._connect = connect
        self._client: redis.cluster.RedisCluster | None = None

    def client(self) -> redis.cluster.RedisCluster:
        """The cluster client; builds it (a network round trip) when there is none yet."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def dedicated_client(self) -> redis.cluster.RedisCluster:
        """A cluster client of its own, for a blocking read (an inbox); it routes the
        read to the primary owning the stream."""
        return self._connect()

    def route(self, key: str | None) -> dict[str, Any]:
        """Send a command on ``key`` to the primary that owns its slot; a command without a
        key goes where redis-py sends it (its default node)."""
        if key is None:
            return {}
        return {"target_nodes": self.client().get_node_from_key(key)}

    def script_targets(self) -> list[dict[str, Any]]:
        return [{"target_nodes": node} for node in self.client().get_primaries()]

    @staticmethod
    def healthy(reply: Any) -> bool:
        return isinstance(reply, dict) and reply.get("cluster_state") == "ok"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


Topology = Standalone | Cluster


def open_topology(url: str, *, socket_timeout_s: float) -> Topology:
    """The topology a store URL names: ``redis+cluster://`` / ``rediss+cluster://`` a cluster
    reached through that seed node, any other scheme one server. Connects nothing yet."""
    timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": socket_timeout_s}
    seed_url = cluster_seed_url(url)
    if seed_url is not None:
        return Cluster(
            lambda: redis.cluster.RedisCluster.from_url(
                seed_url, decode_responses=True, **timeouts
            )
        )
    return Standalone(redis.Redis.from_url(url, decode_responses=True, **timeouts))
