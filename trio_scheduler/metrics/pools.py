"""Load per pool: what the ready nodes of each pool offer and what this instance holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trio_scheduler.management.snapshot import Snapshot


def pool_rows(snapshot: Snapshot, in_flight: Callable[[str], int]) -> list[dict[str, Any]]:
    """Each pool: its ready nodes, their slots, and the slots this instance holds."""
    rows = []
    for pool, node_ids in sorted(snapshot.pools.items()):
        views = [snapshot.nodes[n] for n in sorted(node_ids) if n in snapshot.nodes]
        capacity = sum(v.max_concurrent_jobs for v in views)
        in_use = sum(in_flight(v.node_id) for v in views)
        rows.append({
            "pool": pool,
            "nodes": [v.node_id for v in views],
            "capacity": capacity,
            "in_use": in_use,
            "load": round(in_use / capacity, 3) if capacity else 0.0,
        })
    return rows
