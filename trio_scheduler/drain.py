"""Graceful drain, the way an orchestrator stops a pod (SIGTERM, then a grace period).

At once: no new session is accepted (its upgrade gets 503) and ``/ready`` answers 503, so
the load balancer sends browsers elsewhere. Then the server waits, for at most ``[server]
drain_grace_s``, until every job it handed to a node has ended and its outcome has reached
the browser. Open sessions go on meanwhile (their new utterances still become jobs);
nodes stay connected, as they deliver the results. The caller then stops the server,
which closes every socket with 1001.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import structlog
import trio

if TYPE_CHECKING:
    from trio_scheduler.server import Scheduler

log = structlog.get_logger(__name__)


async def drain(scheduler: Scheduler) -> bool:
    """Stop taking sessions and wait for the work in flight; False if the grace ran out.

    With other instances sharing the store, the work in flight includes their jobs on this
    instance's nodes: stopping would close those nodes' sockets under them. Their ends
    (a result passed on, a cancel from their instance) do not move the tally that wakes
    this wait, so it also looks again every ``[cluster] wait_retry_ms``.
    """
    scheduler.accepting = False
    scheduler.draining.set()
    grace_s = scheduler.config.server.drain_grace_s
    tally = scheduler.sessions.metrics
    dispatcher = scheduler.dispatcher
    cluster = scheduler.cluster
    recheck_s = scheduler.config.cluster.wait_retry_ms / 1000 if cluster else math.inf

    def relayed() -> int:
        return len(cluster.relays) if cluster is not None else 0

    def idle() -> bool:
        return dispatcher.routed_jobs == 0 and tally.unsent_outcomes == 0 and relayed() == 0

    log.info("draining", jobs_on_nodes=dispatcher.routed_jobs,
             jobs_of_other_instances=relayed(), grace_s=grace_s)
    with trio.move_on_after(grace_s):
        while not idle():
            with trio.move_on_after(recheck_s):
                await tally.wait_until(idle)
        log.info("drained: every job in flight has ended")
        return True
    log.warning("drain grace ran out", jobs_on_nodes=dispatcher.routed_jobs,
                jobs_of_other_instances=relayed())
    return False
