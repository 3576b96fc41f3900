"""The lock-free path from a job to a node, and from a node's answer back to its session.

Dispatch runs inside the session task: read the current snapshot, rank candidates with a
pure function, make one atomic reservation in the store, and put the ``job_assign`` on
the node's outbound channel without waiting for the node. The only shared mutable state
here is bookkeeping that is read and written without an await in between (a job
directory, a local load estimate and the queue of jobs waiting for capacity), which in
Trio needs no lock.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import structlog
import trio

from trio_scheduler.dispatch.selection import rank_candidates
from trio_scheduler.management.needs import Needs
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import NodeView, Snapshot
from trio_scheduler.store.base import Store, reservation_member

log = structlog.get_logger(__name__)


def wall_ms() -> int:
    return int(time.time() * 1000)


# -- events delivered to a session's inbox ------------------------------------------


class Inbox(Protocol):
    """Where a session task takes node events (see ``sessions.inbox.SessionInbox``)."""

    def put_node(self, event: Any, *, force: bool = False) -> bool: ...


@attrs.frozen
class NodeMessage:
    """A frame from a node about one of the session's jobs (already checked for origin)."""

    message: Any
    node_id: str
    received_at_ms: int


@attrs.frozen
class InvalidResult:
    """A node's ``job_result`` that could not be read (a value out of bounds, a missing
    field): the job it names fails now, instead of waiting for its timeout."""

    job_id: str
    session_id: str
    reason: str


@attrs.frozen
class NodeLost:
    job_id: str
    node_id: str


@attrs.frozen
class CapacityFreed:
    job_id: str


# -- outcomes of one dispatch attempt ------------------------------------------------


@attrs.frozen
class Dispatched:
    node_id: str


@attrs.frozen
class NoNode:
    """No ready node meets the job's needs (after exclusions).

    ``queued``: the job now waits for one (see :meth:`Dispatcher.wait_for_capacity`);
    False when the waiting queue of its pools is full.
    """

    queued: bool = False


@attrs.frozen
class AllFull:
    """Nodes meet the job's needs but none had a free slot; ``queued`` as for NoNode."""

    queued: bool = False


Outcome = Dispatched | NoNode | AllFull


@attrs.define
class JobRoute:
    session_id: str
    inbox: Inbox
    nodes: set[str]  # every node an attempt was sent to: results accepted only from these
    # node id -> the connection (link) the latest attempt on that node went through, so a
    # connection that ends reports only its own jobs, never a newer connection's.
    links: dict[str, Any] = attrs.Factory(dict)
    # The slot the current attempt holds: (node id, reservation member, node capacity).
    held: tuple[str, str, int] | None = None


@attrs.define
class Waiter:
    job_id: str
    needs: Needs
    inbox: Inbox
    woken_by: str | None = None  # the node whose free slot it was woken for
    poked: bool = False  # woken to ask again, not for a slot known to be free


class Counters:
    """Plain counters, read by tests and (later) the metrics endpoint."""

    def __init__(self) -> None:
        self.values: collections.Counter[str] = collections.Counter()

    def inc(self, name: str, by: int = 1) -> None:
        self.values[name] += by

    def __getitem__(self, name: str) -> int:
        return self.values[name]


class Dispatcher:
    def __init__(
        self,
        publisher: SnapshotPublisher,
        store: Store,
        *,
        job_timeout_ms: int,
        reservation_margin_ms: int,
        max_waiting_per_pool: int,
        dedup_window_ms: int = 30000,
        rng: random.Random | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        counters: Counters | None = None,
        instance_id: str | None = None,
    ) -> None:
        self._publisher = publisher
        self._store = store
        self.store_answers_at_once: bool = getattr(store, "answers_at_once", False)
        self.instance_id = instance_id
        self._reservation_ttl_ms = job_timeout_ms + reservation_margin_ms
        self._max_waiting = max_waiting_per_pool
        self._rng = rng or random.Random()
        self.clock_ms = clock_ms
        self.counters = counters or Counters()
        self._in_flight: collections.Counter[str] = collections.Counter()  # node -> our slots
        self._routes: dict[str, JobRoute] = {}
        self._waiters: collections.OrderedDict[str, Waiter] = collections.OrderedDict()
        # pools -> jobs waiting for them (the bound is per pool, whatever the pipelines)
        self._waiting_per_pool: collections.Counter[frozenset[str]] = collections.Counter()
        self._dedup_window_s = dedup_window_ms / 1000
        self._ended: dict[str, float] = {}  # job_id -> when it ended (insertion ordered)
        # Jobs of other instances' sessions on our nodes (set when several instances run).
        self.relays: Any = None
        publisher.add_listener(self._on_snapshot)

    @property
    def store(self) -> Store:
        return self._store

    # -- dispatch ------------------------------------------------------------------

    def in_flight(self, node_id: str) -> int:
        """Slots of ``node_id`` this instance holds (its own reservations)."""
        return self._in_flight[node_id]

    def load(self, node: NodeView) -> float:
        return self._in_flight[node.node_id] / node.max_concurrent_jobs

    @property
    def snapshot(self) -> Snapshot:
        return self._publisher.current

    def node(self, node_id: str) -> NodeView | None:
        return self._publisher.current.nodes.get(node_id)

    async def dispatch(
        self,
        *,
        job_id: str,
        attempt_id: int,
        frame: str,
        needs: Needs,
        session_id: str,
        inbox: Inbox,
        sticky_node_id: str | None,
        exclude: frozenset[str] = frozenset(),
        pinned_node_id: str | None = None,
    ) -> Outcome:
        """Try to hand one attempt of a job to a node; never waits for a node.

        A job that finds no node, or no free slot, is queued to wait for one before this
        returns, with no await in between: a slot freed or a node joining the moment after
        the attempt failed wakes it (its session learns of the failure only later).
        """
        snapshot = self._publisher.current
        ids = snapshot.candidates(needs) - exclude
        if pinned_node_id is not None:
            ids &= {pinned_node_id}
        if not ids:
            return NoNode(self.wait_for_capacity(job_id, needs, inbox))
        # Nodes this instance alone already fills cannot take the job: no store call for
        # them (another instance's reservations are still checked by the store).
        nodes = [snapshot.nodes[i] for i in ids]
        open_nodes = [n for n in nodes if self._in_flight[n.node_id] < n.max_concurrent_jobs]
        if not open_nodes:
            return AllFull(self.wait_for_capacity(job_id, needs, inbox))
        ranked = rank_candidates(
            open_nodes,
            sticky_node_id=sticky_node_id,
            load=self.load,
            rng=self._rng,
        )
        member = reservation_member(job_id, attempt_id, self.instance_id)
        for node in ranked:
            now_ms = self.clock_ms()
            reservation = await self._store.reserve(
                node.node_id,
                member,
                node.max_concurrent_jobs,
                now_ms,
                now_ms + self._reservation_ttl_ms,
            )
            if not reservation.granted:
                self.counters.inc("reservations_refused")
                continue
            # The reservation awaited: the node may have gone meanwhile. Everything from
            # here to the channel send is synchronous, so the node connection's cleanup
            # either sees this job in the directory or makes the send fail.
            if not _still_able(self._publisher.current, node, needs):
                self._store.release_soon(node.node_id, member)
                continue
            self._in_flight[node.node_id] += 1
            route = self._routes.get(job_id)
            if route is None:
                route = self._routes[job_id] = JobRoute(session_id, inbox, set())
            route.nodes.add(node.node_id)
            route.links[node.node_id] = node.link
            if not node.link.assign(job_id, session_id, frame):
                self._in_flight[node.node_id] -= 1
                self._store.release_soon(node.node_id, member)
                self.counters.inc("node_queue_full")
                continue
            self.counters.inc("jobs_dispatched")
            self.stop_waiting(job_id, took_slot=True)
            route.held = (node.node_id, member, node.max_concurrent_jobs)
            return Dispatched(node.node_id)
        return AllFull(self.wait_for_capacity(job_id, needs, inbox))

    def release(self, job_id: str, attempt_id: int, node_id: str) -> None:
        """Give back the slot of one attempt and hand it to the oldest waiting job.

        It does not wait for the store: a session must never stall on a release, and one
        that is lost (the store is down) expires by itself.
        """
        self._in_flight[node_id] -= 1
        if self._in_flight[node_id] <= 0:
            del self._in_flight[node_id]
        member = reservation_member(job_id, attempt_id, self.instance_id)
        self._store.release_soon(node_id, member)
        route = self._routes.get(job_id)
        if route is not None and route.held is not None and route.held[1] == member:
            route.held = None
        self._wake_one_for(node_id)

    async def reassert_reservations(self) -> None:
        """The store lost its data (Redis restarted): take again every slot our jobs
        hold, so other instances cannot give it away. A slot someone took meanwhile is
        lost to its job, which fails over as if its node had gone."""
        now_ms = self.clock_ms()
        for job_id, route in list(self._routes.items()):
            if route.held is None:
                continue
            node_id, member, capacity = route.held
            reservation = await self._store.reserve(
                node_id, member, capacity, now_ms, now_ms + self._reservation_ttl_ms
            )
            if not reservation.granted and self._routes.get(job_id) is route:
                log.warning("slot lost while the store was away; failing the job over",
                            job_id=job_id, node_id=node_id)
                _notify(route.inbox, NodeLost(job_id, node_id))

    def forget(self, job_id: str) -> None:
        """The job reached its end: stop routing node frames to its session.

        Its id is remembered for ``dedup_window_ms`` so that a repeated result is told
        apart (and counted) from a result for a job that never existed.
        """
        self.stop_waiting(job_id)
        if self._routes.pop(job_id, None) is not None:
            now = trio.current_time()
            self._ended[job_id] = now
            cutoff = now - self._dedup_window_s
            while self._ended:
                oldest_id, ended_at = next(iter(self._ended.items()))
                if ended_at > cutoff:
                    break
                del self._ended[oldest_id]

    def retained(self) -> dict[str, int]:
        """Sizes of what this keeps between jobs (for the metrics: nothing may grow)."""
        sizes = {
            "dispatcher_routes": len(self._routes),
            "dispatcher_ended_jobs": len(self._ended),
            "dispatcher_waiting_jobs": len(self._waiters),
            "dispatcher_node_loads": len(self._in_flight),
        }
        if self.relays is not None:
            sizes["relays"] = len(self.relays)
        return sizes

    @property
    def routed_jobs(self) -> int:
        """Jobs whose node frames are still routed to a session (0 when all ended)."""
        return len(self._routes)

    # -- node -> session routing -----------------------------------------------------

    def route_from_node(
        self, node_id: str, job_id: str, session_id: str, message: Any, raw: str | None = None
    ) -> bool:
        """Forward a node's frame about ``job_id`` to its session; False if refused.

        A node can only reach a session through a job that was sent to it: unknown jobs,
        other nodes' jobs and mismatched session ids are dropped and counted. ``raw``, the
        frame as the node sent it, travels on to a session on another instance.
        """
        route = self._routes.get(job_id)
        if route is None:
            if self.relays is not None and self.relays.forward(node_id, message, raw):
                return True  # a job of another instance's session: answered there
            if job_id in self._ended:
                self.counters.inc("node_frames_after_end")  # duplicates, late results
            else:
                self.counters.inc("node_frames_unknown_job")
            return False
        if node_id not in route.nodes or session_id != route.session_id:
            self.counters.inc("node_frames_foreign")
            return False
        if not route.inbox.put_node(NodeMessage(message, node_id, self.clock_ms())):
            # The session is not keeping up; its job timeout will report the outcome.
            self.counters.inc("session_inbox_full")
            return False
        return True

    def node_lost(self, node_id: str, link: Any) -> None:
        """Tell every session with a job sent through ``link`` that the node is gone.

        Each session releases its slot when it handles the notice, which also brings this
        instance's count for the node back down.
        """
        for job_id, route in list(self._routes.items()):
            if route.links.get(node_id) == link:
                _notify(route.inbox, NodeLost(job_id, node_id))
        if self.relays is not None:
            self.relays.node_lost(node_id, link)

    def remote_node_lost(self, job_id: str, node_id: str, instance: str) -> None:
        """The instance ``node_id`` is connected to says the job's attempt there is lost."""
        route = self._routes.get(job_id)
        link = route.links.get(node_id) if route is not None else None
        if link is not None and getattr(link, "instance", None) == instance:
            _notify(route.inbox, NodeLost(job_id, node_id))

    def instance_lost(self, instance: str) -> None:
        """An instance died: every job sent to one of its nodes is lost."""
        for job_id, route in list(self._routes.items()):
            for node_id, link in route.links.items():
                if getattr(link, "instance", None) == instance:
                    _notify(route.inbox, NodeLost(job_id, node_id))

    def poke_waiters(self) -> int:
        """Wake the oldest waiting job of each set of needs that some node could serve.

        When several instances share the nodes, a slot another instance frees wakes no
        one here: the waiting jobs ask again from time to time instead. Returns how many
        were woken.
        """
        snapshot = self._publisher.current
        woken = 0
        seen: set[Needs] = set()
        for waiter in self._waiters.values():
            if waiter.needs in seen:
                continue
            seen.add(waiter.needs)
            if waiter.woken_by is not None:
                continue
            candidates = snapshot.candidates(waiter.needs)
            if candidates:
                waiter.woken_by = next(iter(candidates))
                waiter.poked = True
                self._wake(waiter)
                woken += 1
        return woken

    # -- waiting for capacity ----------------------------------------------------------

    def wait_for_capacity(
        self, job_id: str, needs: Needs, inbox: Inbox
    ) -> bool:
        """Queue a job until a slot frees; False when its pool's queue is full.

        The job keeps its place until it calls :meth:`stop_waiting`. It is woken with a
        :class:`CapacityFreed` event when a slot that fits it frees up; if its retry loses
        the race, :meth:`keep_waiting` puts it back to sleep at the same place.
        """
        if job_id in self._waiters:
            return True
        if self._waiting_per_pool[needs.pools] >= self._max_waiting:
            return False
        self._waiters[job_id] = Waiter(job_id, needs, inbox)
        self._waiting_per_pool[needs.pools] += 1
        return True

    def keep_waiting(self, job_id: str) -> None:
        """The woken job could not use the slot (pinned elsewhere, node excluded, slot
        taken meanwhile): it sleeps again at its place and the wake goes on to the next."""
        waiter = self._waiters.get(job_id)
        if waiter is not None and waiter.woken_by is not None:
            node_id, waiter.woken_by = waiter.woken_by, None
            if waiter.poked:  # nothing known to be free: nothing to pass on
                waiter.poked = False
                return
            self._wake_one_for(node_id, after=job_id)

    def stop_waiting(self, job_id: str, *, took_slot: bool = False) -> None:
        """The job no longer waits. If it was woken for a slot it did not take (it timed
        out, or its session left meanwhile), the wake goes to the next waiting job."""
        waiter = self._waiters.pop(job_id, None)
        if waiter is None:
            return
        self._waiting_per_pool[waiter.needs.pools] -= 1
        if not self._waiting_per_pool[waiter.needs.pools]:
            del self._waiting_per_pool[waiter.needs.pools]
        if waiter.woken_by is not None and not took_slot and not waiter.poked:
            self._wake_one_for(waiter.woken_by)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _wake_one_for(self, node_id: str, *, after: str | None = None) -> None:
        node = self._publisher.current.nodes.get(node_id)
        if node is None or not node.schedulable:
            return
        waiters = iter(self._waiters.values())
        if after is not None:  # only the jobs queued behind ``after``
            for waiter in waiters:
                if waiter.job_id == after:
                    break
        for waiter in waiters:
            if waiter.woken_by is None and waiter.needs.met_by(node):
                waiter.woken_by = node_id
                self._wake(waiter)
                return

    def _wake(self, waiter: Waiter) -> None:
        self.counters.inc("waiter_wakeups")
        _notify(waiter.inbox, CapacityFreed(waiter.job_id))

    def _on_snapshot(self, old: Snapshot, new: Snapshot) -> None:
        if not self._waiters or (old.pools == new.pools and old.nodes == new.nodes):
            return
        # A node joined a pool (registered, recovered, …) or got a service ready: the jobs
        # it can now take try again. Nodes leaving free nothing, so they wake no one.
        for waiter in self._waiters.values():
            if waiter.woken_by is not None:
                continue
            joined = new.candidates(waiter.needs) - old.candidates(waiter.needs)
            if joined:
                waiter.woken_by = next(iter(joined))
                self._wake(waiter)


def _still_able(snapshot: Snapshot, node: NodeView, needs: Needs) -> bool:
    """The node is still the same connection, ready, and able to run the job."""
    current = snapshot.nodes.get(node.node_id)
    return (
        current is not None
        and current.link is node.link
        and current.schedulable
        and needs.met_by(current)
    )


def _notify(inbox: Inbox, event: Any) -> None:
    inbox.put_node(event)
