"""``GET /stats``: the metrics' picture as one JSON document, for scripts and the dashboard.

Pools with their nodes and load, sessions per language pair, job counts and percentiles
of the recent dispatch and end-to-end latencies (the last ``[metrics]
recent_latency_samples`` jobs). The pieces are pure functions of what they are given.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from trio_scheduler.http.admin import node_rows
from trio_scheduler.http.front_door import Request, Response
from trio_scheduler.metrics.pools import pool_rows

if TYPE_CHECKING:
    from trio_scheduler.server import Scheduler

PERCENTILES = (50, 90, 99)


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """Nearest-rank percentiles of latencies in seconds, as milliseconds."""
    ordered = sorted(samples_s)
    summary: dict[str, Any] = {"count": len(ordered)}
    for p in PERCENTILES:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        summary[f"p{p}"] = round(ordered[rank - 1] * 1000, 1) if ordered else None
    return summary


def language_pair(spec: Any) -> str:
    """``zh:en`` for a one-way session, ``zh<>en`` for a two-way one."""
    if spec.mode == "two_way_auto":
        return f"{spec.lang_a}<>{spec.lang_b}"
    return f"{spec.src_lang}:{spec.tgt_lang}"


def sessions_by_pair(specs: Iterable[Any]) -> dict[str, int]:
    return dict(sorted(collections.Counter(language_pair(s) for s in specs).items()))


async def stats_document(scheduler: Scheduler) -> dict[str, Any]:
    tally = scheduler.sessions.metrics
    dispatcher = scheduler.dispatcher
    specs = [s.spec for s in list(scheduler.sessions.sessions.values()) if s.spec is not None]
    return {
        "instance_id": scheduler.instance_id,
        "draining": not scheduler.accepting,
        "overloaded": scheduler.admission.overloaded,
        "session_cap": _finite(scheduler.admission.budget.cap),
        "event_loop_lag_ms": round(scheduler.loop_lag.lag_s * 1000, 1),
        "cpu_percent": round(scheduler.loop_lag.cpu_busy * 100, 1),
        "machine_cpu_percent": round(scheduler.loop_lag.machine_busy * 100, 1),
        "sessions": {"open": len(specs), "by_language_pair": sessions_by_pair(specs)},
        "nodes": await node_rows(scheduler.manager, dispatcher),
        "pools": pool_rows(scheduler.publisher.current, dispatcher.in_flight),
        "jobs": {
            "started": tally.started,
            "finished": dict(tally.finished),
            "waiting": dispatcher.waiting,
            "on_nodes": dispatcher.routed_jobs,
        },
        "latency": {
            "dispatch_ms": percentiles_ms(tally.recent_dispatch_s),
            "end_to_end_ms": percentiles_ms(tally.recent_end_to_end_s),
        },
    }


def _finite(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def stats_endpoint(scheduler: Scheduler):
    async def stats(request: Request) -> Response:
        return Response.json(200, await stats_document(scheduler))

    return stats
