"""Metric families read from the server's own state at scrape time.

Nothing here runs on the hot path: a scrape reads the current snapshot, the sessions
table, the dispatcher's counters, the job tally, the process's frame counts and the front
door's connection count, and turns them into Prometheus families. docs/metrics.md lists
every family.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from trio_scheduler import __version__
from trio_scheduler.management.snapshot import NodeStatus
from trio_scheduler.metrics.pools import pool_rows
from trio_scheduler.protocol.codec import frame_counts
from trio_scheduler.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from trio_scheduler.server import Scheduler

PREFIX = "trio_scheduler_"
JOB_OUTCOMES = ("result", "silence", "failed", "timeout", "cancelled")
SESSION_DROPS = ("undecodable_payloads", "short_utterances", "silent_utterances", "node_events")
REFUSAL_REASONS = ("auth", "rate_limit", "overload", "connection_limit", "draining",
                   "overloaded", "session_start_rate")


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def labelled(
    kind: type[Metric], name: str, documentation: str, label: str, values: dict[str, float]
) -> Metric:
    family = kind(PREFIX + name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _count_tasks() -> int:
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:  # scraped outside Trio (a test calling collect())
        return 0
    count, stack = 0, [root] if root is not None else []
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def with_zeros(counts: collections.Counter[str], keys: tuple[str, ...]) -> dict[str, float]:
    """Known label values always present (a rate over a missing series is no rate)."""
    return {**dict.fromkeys(keys, 0), **counts}


class SchedulerCollector:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._nodes_and_pools()
        yield from self._jobs()
        yield from self._traffic()
        yield from self._internals()

    def _server(self) -> Iterator[Metric]:
        s = self._scheduler
        info = GaugeMetricFamily(
            PREFIX + "info", "This instance: its id, version and store.",
            labels=["instance_id", "version", "store"],
        )
        store = "redis" if s.config.store.redis_url else "memory"
        info.add_metric([s.instance_id, __version__, store], 1)
        yield info
        yield gauge("draining", "1 while the server drains (SIGTERM), else 0.",
                    0 if s.accepting else 1)
        yield gauge("event_loop_lag_seconds",
                    "How late the event loop woke the lag probe last time.",
                    s.loop_lag.lag_s)
        yield gauge("process_cpu_busy_ratio",
                    "CPU seconds this process used per second, over the last second.",
                    s.loop_lag.cpu_busy)
        yield gauge("machine_cpu_busy_ratio",
                    "Share of all the machine's cores busy over the last second.",
                    s.loop_lag.machine_busy)
        yield gauge("overloaded",
                    "1 while admission control refuses new sessions (the loop runs behind).",
                    1 if s.admission.overloaded else 0)
        yield counter("overload_trips", "Times admission control started refusing sessions.",
                      s.admission.loop.trips)
        open_connections = s.front_door.open_connections if s.front_door else 0
        yield gauge("connections_open", "Open TCP connections on the port.", open_connections)
        yield labelled(GaugeMetricFamily, "sockets_open", "Open WebSocket connections, by path.",
                       "socket", dict(s.open_sockets))
        yield gauge("sessions_open", "Sessions started with session_init and not ended.",
                    len(s.sessions.sessions))
        if s.recorder is not None:
            yield counter("trace_frames_dropped",
                          "Frames the trace writer could not keep up with.", s.recorder.dropped)

    def _nodes_and_pools(self) -> Iterator[Metric]:
        s = self._scheduler
        snapshot = s.publisher.current
        statuses = collections.Counter(str(view.status) for view in snapshot.nodes.values())
        yield labelled(GaugeMetricFamily, "nodes", "Registered nodes, by status.", "status",
                       with_zeros(statuses, tuple(str(status) for status in NodeStatus)))
        members = GaugeMetricFamily(PREFIX + "pool_nodes", "Ready nodes, by pool.",
                                    labels=["pool"])
        capacity = GaugeMetricFamily(PREFIX + "pool_capacity_slots",
                                     "Job slots of the ready nodes, by pool.", labels=["pool"])
        in_use = GaugeMetricFamily(PREFIX + "pool_slots_in_use",
                                   "Slots this instance holds on them, by pool.", labels=["pool"])
        for row in pool_rows(snapshot, s.dispatcher.in_flight):
            members.add_metric([row["pool"]], len(row["nodes"]))
            capacity.add_metric([row["pool"]], row["capacity"])
            in_use.add_metric([row["pool"]], row["in_use"])
        yield from (members, capacity, in_use)
        yield gauge("reservations_held", "Node slots this instance holds for jobs on nodes.",
                    sum(s.dispatcher.in_flight(node_id) for node_id in snapshot.nodes))
        yield counter("node_heartbeats", "Node heartbeats applied by the management owner.",
                      s.manager.heartbeats_applied)

    def _jobs(self) -> Iterator[Metric]:
        s = self._scheduler
        tally = s.sessions.metrics
        yield counter("jobs_started", "Utterances that became jobs.", tally.started)
        yield labelled(CounterMetricFamily, "jobs_finished", "Jobs that ended, by outcome.",
                       "outcome", with_zeros(tally.finished, JOB_OUTCOMES))
        yield labelled(CounterMetricFamily, "job_failures",
                       "Jobs that failed or timed out, by the error code the browser got.",
                       "code", dict(tally.failures))
        yield gauge("jobs_waiting", "Jobs waiting for a free node slot.", s.dispatcher.waiting)
        yield gauge("jobs_on_nodes", "Jobs handed to a node and not ended yet.",
                    s.dispatcher.routed_jobs)
        yield labelled(CounterMetricFamily, "dispatcher_events",
                       "Dispatch and routing events, by event (see docs/metrics.md).",
                       "event", dict(s.dispatcher.counters.values))
        drops = collections.Counter(tally.ended_session_drops)
        for session in list(s.sessions.sessions.values()):
            drops.update(session.tallies)
        yield labelled(CounterMetricFamily, "session_drops",
                       "What sessions dropped and counted, by what.",
                       "what", with_zeros(drops, SESSION_DROPS))

    def _internals(self) -> Iterator[Metric]:
        """What the server keeps between events, for a soak to watch for growth."""
        s = self._scheduler
        retained = {**s.dispatcher.retained(), **s.manager.retained(),
                    "sessions": len(s.sessions.sessions),
                    "unsent_outcomes": s.sessions.metrics.unsent_outcomes}
        yield labelled(GaugeMetricFamily, "retained_entries",
                       "Entries of the long-lived maps, by map (none may grow without bound).",
                       "map", retained)
        yield gauge("trio_tasks", "Trio tasks alive in the process.", _count_tasks())

    def _traffic(self) -> Iterator[Metric]:
        s = self._scheduler
        yield labelled(CounterMetricFamily, "frames_received",
                       "WebSocket frames decoded, by type (all sockets of the process).",
                       "type", dict(frame_counts.received))
        yield labelled(CounterMetricFamily, "frames_sent",
                       "WebSocket frames encoded, by type (all sockets of the process).",
                       "type", dict(frame_counts.sent))
        yield labelled(CounterMetricFamily, "errors_sent", "error frames sent, by code.",
                       "code", dict(frame_counts.errors_sent))
        refusals = collections.Counter(s.upgrade_gate.refusals)
        refusals["rate_limit"] += frame_counts.errors_sent[ErrorCode.RATE_LIMITED]
        refusals["overload"] += s.sessions.metrics.failures[ErrorCode.NODE_OVERLOADED]
        refusals["connection_limit"] += s.front_door.refused_over_limit if s.front_door else 0
        yield labelled(CounterMetricFamily, "refusals", "Work refused, by reason.", "reason",
                       with_zeros(refusals, REFUSAL_REASONS))
