"""How many workers ``serve --workers`` runs, and what they need.

Each worker is a whole scheduler instance: its own sessions and nodes, in its own process.
A browser and the node serving it are on different workers as often as not (the kernel
spreads connections), so workers reach each other's nodes through the cluster routing,
which lives in Redis: more than one worker needs a Redis URL.
"""

from __future__ import annotations

import argparse
import os

from trio_scheduler.config import Config


def worker_count(text: str) -> int:
    """The argument of ``--workers``: a whole number >= 1, or ``auto``."""
    if text == "auto":
        return usable_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1 or 'auto', not {text!r}")
    return count


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's
    cpuset), which is every core of the machine when nothing restricts it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def redis_missing(count: int, config: Config) -> str | None:
    """Why ``count`` workers cannot run with ``config``, if they cannot."""
    if count > 1 and config.store.redis_url is None:
        return (
            f"{count} workers need a shared Redis (--redis-url or [store] redis_url): each "
            "is a scheduler instance, and they reach each other's nodes through it"
        )
    return None
