"""Jobs of other instances' sessions on this instance's nodes: where their answers go.

When another instance sends a job to one of our nodes, we remember which instance it came
from; the node's frames about that job (acks, partials, the result) are sent back there,
and if the node's connection ends, that instance hears of it at once (it fails the job
over). An entry lives as long as the job's reservation can (job timeout plus margin).
"""

from __future__ import annotations

from typing import Any

import attrs

from trio_scheduler.dispatch.dispatcher import InvalidResult
from trio_scheduler.protocol import codec
from trio_scheduler.protocol.messages import JobCancel, JobResult


def _is_duplicate_refusal(result: JobResult | InvalidResult) -> bool:
    return isinstance(result, JobResult) and not result.success and (
        result.error is not None and result.error.code == "DUPLICATE_JOB_ID"
    )


@attrs.define
class Relay:
    origin: str  # the instance of the job's session
    node_id: str
    link: Any  # the node connection the job was sent through
    expires_at: float  # trio clock


class Relays:
    def __init__(self, bus: Any, lifetime_s: float) -> None:
        self._bus = bus
        self._lifetime_s = lifetime_s
        self._relays: dict[str, Relay] = {}  # job_id -> relay (insertion = expiry order)
        self.forwarded = 0

    def __len__(self) -> int:
        return len(self._relays)

    def add(self, job_id: str, origin: str, node_id: str, link: Any, now: float) -> None:
        self._relays.pop(job_id, None)  # re-added at the end: entries stay in expiry order
        self._relays[job_id] = Relay(origin, node_id, link, now + self._lifetime_s)

    def forward(self, node_id: str, message: Any, raw: str | None = None) -> bool:
        """Send a node's frame about a relayed job back to its session's instance; False
        when the job is not one we relay for that node. A result ends the relay (but a
        refusal of a repeated job id, which the first copy's answer follows). The frame
        goes as the node sent it (``raw``) when there is one: it was checked here and is
        decoded once more there, with no encoding in between."""
        relay = self._relays.get(message.job_id)
        if relay is None or relay.node_id != node_id:
            return False
        if isinstance(message, JobResult | InvalidResult) and not _is_duplicate_refusal(message):
            del self._relays[message.job_id]
        self.forwarded += 1
        if isinstance(message, InvalidResult):
            return self._bus.post(relay.origin, {
                "kind": "invalid_result", "node": node_id, "job": message.job_id,
                "session": message.session_id, "reason": message.reason,
            })
        frame = raw if raw is not None else codec.encode(message)
        return self._bus.post(relay.origin, {"kind": "from_node", "node": node_id,
                                             "frame": frame})

    def drop(self, job_id: str) -> None:
        """The job's session cancelled it: nothing more of it is wanted there."""
        self._relays.pop(job_id, None)

    def node_lost(self, node_id: str, link: Any) -> None:
        """The node's connection ended: every job sent through it is lost to its session."""
        for job_id, relay in list(self._relays.items()):
            if relay.node_id == node_id and relay.link is link:
                del self._relays[job_id]
                self._bus.post(relay.origin, {"kind": "node_lost", "node": node_id,
                                              "job": job_id})

    def instance_lost(self, instance_id: str) -> None:
        """Nobody will read the answers of a dead instance's jobs: the nodes stop them."""
        for job_id in [j for j, r in self._relays.items() if r.origin == instance_id]:
            relay = self._relays.pop(job_id)
            relay.link.send(codec.encode(JobCancel(job_id, None, "its session's instance died")))

    def sweep(self, now: float) -> None:
        while self._relays:
            job_id, relay = next(iter(self._relays.items()))
            if relay.expires_at > now:
                break
            del self._relays[job_id]
