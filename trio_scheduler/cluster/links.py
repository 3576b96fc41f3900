"""The link to a node connected to another instance: frames become inbox messages."""

from __future__ import annotations

from typing import Protocol

import attrs


class Poster(Protocol):
    def post(self, instance_id: str, message: dict) -> bool: ...


@attrs.frozen
class RemoteLink:
    """Reaches ``node_id`` through the inbox of ``instance``, the instance it is connected to.

    Equal links mean the same registration (instance and epoch), which is how a notice
    that the node went away is matched to the jobs sent through it. ``send`` never waits,
    like a local link: the bus queues the message.
    """

    instance: str
    node_id: str
    epoch: int
    bus: Poster = attrs.field(eq=False, repr=False)

    def send(self, frame: str) -> bool:
        return self.bus.post(self.instance, {"kind": "to_node", "node": self.node_id,
                                             "frame": frame})

    def cancel(self, job_id: str, frame: str) -> bool:
        return self.bus.post(self.instance, {"kind": "cancel", "node": self.node_id,
                                             "job": job_id, "frame": frame})

    def assign(self, job_id: str, session_id: str, frame: str) -> bool:
        return self.bus.post(self.instance, {
            "kind": "assign", "node": self.node_id, "job": job_id, "session": session_id,
            "frame": frame,
        })
