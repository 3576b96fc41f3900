"""Store URLs: which ones name a Redis Cluster, and what the cluster client is given.

Kept free of redis-py so configuration can check a URL without importing it.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

#: URL schemes of a Redis Cluster's seed node, and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_seed_url(url: str) -> str | None:
    """The plain ``redis://`` / ``rediss://`` URL of the seed node a cluster URL names, or
    None when ``url`` does not name a cluster."""
    scheme, _, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES:
        return None
    return f"{CLUSTER_SCHEMES[scheme]}://{rest}"


def cluster_url_problem(url: str) -> str | None:
    """What is wrong with a cluster URL, or None (also for a URL that names no cluster).

    A cluster has only database 0. redis-py refuses another one only when it first connects,
    long after start-up, so configuration refuses it at once.
    """
    if cluster_seed_url(url) is None:
        return None
    parts = urlsplit(url)
    databases = {parts.path.strip("/") or "0", *parse_qs(parts.query).get("db", [])}
    if databases != {"0"}:
        return f"a Redis Cluster has only database 0, got {url!r}"
    return None
