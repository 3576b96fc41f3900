"""The nursery tree: ``serve(config)`` runs the whole scheduler until cancelled.

    serve
    ├── store (memory, or the Redis bridge task)
    ├── management owner (+ heartbeat sweeper)
    ├── node directory: local nodes mirrored to the store — with Redis, inside the
    │   cluster tasks (inbox reader, instance heartbeat) that share nodes across instances
    ├── event-loop lag probe
    └── listener → one task per connection (session task / node task / HTTP reply,
                   routed by the table in ``http/table.py``)

Cancelling ``serve`` is the stop: listeners stop accepting, every WebSocket is closed
with 1001 (shielded, bounded by ``shutdown_grace_s``), sessions release their
reservations, then the store closes. A drain (:mod:`trio_scheduler.drain`) comes first
when the stop is a SIGTERM.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import attrs
import structlog
import trio
import trio_websocket
from prometheus_client import CollectorRegistry, ProcessCollector

from trio_scheduler.cluster.directory import NodeDirectory
from trio_scheduler.cluster.service import Cluster
from trio_scheduler.config import Config
from trio_scheduler.dispatch.dispatcher import Dispatcher
from trio_scheduler.http.accept import BurstListener
from trio_scheduler.http.auth import UpgradeGate, node_identity
from trio_scheduler.http.front_door import FrontDoor, Request
from trio_scheduler.http.table import route_table
from trio_scheduler.admission import Admission
from trio_scheduler.loop_lag import LoopLagProbe
from trio_scheduler.management.node_state import HealthRules
from trio_scheduler.management.owner import NodeManager
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.metrics.collector import SchedulerCollector
from trio_scheduler.metrics.jobs import JobTally
from trio_scheduler.metrics.store import MeasuredStore
from trio_scheduler.nodes.connection import NodeServices, run_node_socket
from trio_scheduler.nodes.identity import NodeIdentity
from trio_scheduler.sessions.session import SessionServices, run_session_socket
from trio_scheduler.startup import open_listeners
from trio_scheduler.store import open_store
from trio_scheduler.store.base import Store
from trio_scheduler.trace import RecordingSocket, TraceRecorder

log = structlog.get_logger(__name__)


@attrs.define
class Scheduler:
    """The scheduler's parts, wired together; independent of how sockets arrive.

    ``serve`` puts it behind a TCP port; tests may also feed it in-memory sockets.
    """

    config: Config
    store: Store
    publisher: SnapshotPublisher
    manager: NodeManager
    dispatcher: Dispatcher
    sessions: SessionServices
    nodes: NodeServices
    instance_id: str
    registry: CollectorRegistry
    loop_lag: LoopLagProbe
    admission: Admission
    port: int | None = None
    accepting: bool = True  # False once draining or stopping: no new sessions, not ready
    draining: trio.Event = attrs.Factory(trio.Event)  # set when a drain starts
    recorder: TraceRecorder | None = None
    cluster: Cluster | None = None  # with Redis: the other instances sharing it
    directory: NodeDirectory | None = None  # without: the local mirror alone
    front_door: FrontDoor | None = None  # once serving on a port
    upgrade_gate: UpgradeGate = attrs.field(init=False)
    open_sockets: collections.Counter[str] = attrs.Factory(collections.Counter)
    _cpu_windows_seen: int = 0

    def __attrs_post_init__(self) -> None:
        self.upgrade_gate = UpgradeGate(self.config, lambda: self.accepting, self.admission)
        self.admission.sessions_open = lambda: len(self.sessions.sessions)
        self.loop_lag.on_sample = self._lag_sampled
        self.registry.register(SchedulerCollector(self))

    @classmethod
    def build(cls, config: Config, store: Store, instance_id: str | None = None) -> Scheduler:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # RSS, open file descriptors, CPU (Linux)
        store = MeasuredStore(store, registry)
        publisher = SnapshotPublisher()
        nodes = config.nodes
        manager = NodeManager(
            publisher,
            default_max_concurrent_jobs=nodes.default_max_concurrent_jobs,
            heartbeat_interval_s=nodes.heartbeat_interval_s,
            heartbeat_timeout_s=nodes.heartbeat_timeout_s,
            health=HealthRules(
                required_services=frozenset(nodes.required_services),
                resource_threshold_percent=nodes.resource_threshold_percent,
                max_gpu_queue=nodes.max_gpu_queue,
            ),
            pairing_code_ttl_s=nodes.pairing_code_ttl_s,
        )
        instance_id = instance_id or "inst-" + secrets.token_hex(4)
        dispatcher = Dispatcher(
            publisher,
            store,
            instance_id=instance_id,
            job_timeout_ms=config.jobs.timeout_ms,
            reservation_margin_ms=config.jobs.reservation_margin_ms,
            max_waiting_per_pool=config.jobs.max_waiting_per_pool,
            dedup_window_ms=config.jobs.dedup_window_ms,
        )
        recorder = None
        if config.trace.path:
            recorder = TraceRecorder(
                Path(config.trace.path), audio=config.trace.audio,
                queue_size=config.trace.queue_size,
            )
        tally = JobTally(registry, config.metrics.recent_latency_samples)
        scheduler = cls(
            recorder=recorder,
            config=config,
            store=store,
            publisher=publisher,
            manager=manager,
            dispatcher=dispatcher,
            sessions=SessionServices(config, dispatcher, metrics=tally),
            nodes=NodeServices(config, manager, dispatcher),
            instance_id=instance_id,
            registry=registry,
            loop_lag=LoopLagProbe(config.metrics.loop_lag_interval_s),
            admission=Admission.from_config(config.server),
        )
        if config.store.redis_url:
            scheduler.cluster = Cluster(
                config, store, instance_id, publisher=publisher, manager=manager,
                dispatcher=dispatcher, describe=scheduler.describe,
            )
            scheduler.nodes.standing = scheduler.cluster.standing_of
        else:
            scheduler.directory = NodeDirectory(publisher, store, instance_id)
        return scheduler

    def _lag_sampled(self, lag_s: float, now: float) -> None:
        """Admission control hears every lag sample; a change of state is logged."""
        cpu_busy = self.loop_lag.cpu_busy
        window_ended = self.loop_lag.cpu_windows != self._cpu_windows_seen
        self._cpu_windows_seen = self.loop_lag.cpu_windows
        if not self.admission.observe(lag_s, now, cpu_busy, window_ended,
                                      self.loop_lag.machine_busy):
            return
        if self.admission.overloaded:
            log.warning("overloaded: refusing new sessions", lag_ms=round(lag_s * 1000),
                        cpu_percent=round(cpu_busy * 100), sessions=len(self.sessions.sessions))
        else:
            log.info("overload over: taking new sessions", sessions=len(self.sessions.sessions))

    def describe(self) -> dict[str, str]:
        """What this instance tells the others (and operators) about itself."""
        return {
            "host": self.config.server.host,
            "port": str(self.port or ""),
            "sessions": str(len(self.sessions.sessions)),
            "nodes": str(sum(1 for n in self.publisher.current.nodes.values() if n.local)),
            "accepting": "1" if self.accepting else "0",
        }

    @property
    def instance_labels(self) -> dict[str, str]:
        """Labels on every metric: the instance's id once several may share a store."""
        return {"scheduler_instance": self.instance_id} if self.config.store.redis_url else {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background tasks: management owner, store mirror, event-loop lag probe."""
        async with trio.open_nursery() as nursery:
            if self.recorder is not None:
                await nursery.start(self.recorder.run)
            await nursery.start(self.manager.run)
            if self.cluster is not None:
                await nursery.start(self.cluster.run)
            elif self.directory is not None:
                await nursery.start(self.directory.run)
            await nursery.start(self.loop_lag.run)
            task_status.started()

    @asynccontextmanager
    async def background_tasks(self) -> AsyncIterator[trio.Nursery]:
        """Run the background tasks around the body (which serves the sockets).

        The owner and the mirror must outlive the connections, whose cleanup still talks
        to them during a graceful stop: they run shielded and are cancelled after the body.
        The nursery yielded is just as long-lived, for tasks that must also see a stop
        through (the WebSocket protocol tasks that carry the closing handshakes).
        """
        background = trio.CancelScope(shield=True)

        async def run_background(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
            with background:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.run)
                    task_status.started(nursery)

        async with trio.open_nursery() as nursery:
            service_nursery = await nursery.start(run_background)
            try:
                yield service_nursery
            finally:
                self.accepting = False
                background.cancel()

    async def session_socket(self, ws: trio_websocket.WebSocketConnection, _: Request | None = None):
        if self.recorder is not None:
            ws = RecordingSocket(ws, self.recorder, "session")
        with self._counted("session"):
            await run_session_socket(ws, self.sessions)

    async def node_socket(
        self, ws: trio_websocket.WebSocketConnection, request: Request | None = None
    ):
        if self.recorder is not None:
            ws = RecordingSocket(ws, self.recorder, "node")
        # The gate let the upgrade in, so the request carries a valid token when tokens are
        # set; without a request (in-memory sockets in tests) any node is any node.
        identity = NodeIdentity()
        if request is not None:
            identity = node_identity(request, self.config.nodes.auth_tokens) or NodeIdentity(())
        with self._counted("node"):
            await run_node_socket(ws, self.nodes, identity)

    @contextmanager
    def _counted(self, socket: str) -> Iterator[None]:
        self.open_sockets[socket] += 1
        try:
            yield
        finally:
            self.open_sockets[socket] -= 1


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the scheduler; reports the running :class:`Scheduler` (with its bound port)."""
    async with open_store(
        config.store.redis_url,
        key_prefix=config.store.key_prefix,
        socket_timeout_s=config.store.socket_timeout_s,
        call_timeout_s=config.store.call_timeout_ms / 1000,
        startup_wait_s=config.store.startup_wait_s,
    ) as store:
        scheduler = Scheduler.build(config, store)
        async with scheduler.background_tasks() as service_nursery:
            await _serve_connections(scheduler, service_nursery, task_status)


async def _serve_connections(
    scheduler: Scheduler, service_nursery: trio.Nursery, task_status: trio.TaskStatus[Scheduler]
) -> None:
    config = scheduler.config
    listeners = await open_listeners(
        config.server.host, config.server.port, reuse_port=config.server.reuse_port
    )
    scheduler.port = listeners[0].socket.getsockname()[1]
    router = route_table(scheduler)
    front_door = scheduler.front_door = FrontDoor(
        websocket_routes=router.websocket_routes(),
        http_handler=router.handle,
        max_message_bytes=config.server.max_message_bytes,
        max_head_bytes=config.server.max_request_head_bytes,
        handshake_timeout_s=config.server.handshake_timeout_s,
        close_timeout_s=config.server.shutdown_grace_s,
        max_connections=config.server.max_connections,
        receive_buffer_bytes=config.server.receive_buffer_bytes,
        message_queue_sizes={"/ws/node": config.nodes.receive_queue_frames,
                             "/ws/session": config.sessions.receive_queue_frames},
        protocol_nursery=service_nursery,
        admit=scheduler.upgrade_gate.admit,
    )
    if not config.nodes.auth_tokens:
        log.warning(
            "node authentication is OFF: any peer can register as a node and receive "
            "users' audio; set [nodes] auth_tokens in production"
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio.serve_listeners, front_door.handle,
            [BurstListener(listener, config.server.accept_burst) for listener in listeners],
        )
        log.info(
            "scheduler listening",
            host=config.server.host,
            port=scheduler.port,
            store="redis" if config.store.redis_url else "memory",
            instance=scheduler.instance_id,
        )
        task_status.started(scheduler)
        await trio.sleep_forever()
