"""Key schema of the shared store: one place that names every key.

Keys a script touches together share a hash tag (the part in braces), so they live in one
slot and every script runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Keys:
    prefix: str = "ts:"

    def reservations(self, node_id: str) -> str:
        """Sorted set of a node's in-flight attempts, scored by expiry (ms)."""
        return f"{self.prefix}res:{node_id}"

    def node(self, node_id: str) -> str:
        """Hash mirroring a node's public state."""
        return f"{self.prefix}node:{node_id}"

    def instances(self) -> str:
        """Sorted set indexing the live instances (an instance lives while its hash does)."""
        return f"{self.prefix}{{instances}}"

    def instance(self, instance_id: str) -> str:
        """Hash describing one live instance; same tag as :meth:`instances`."""
        return f"{self.instance_prefix()}{instance_id}"

    def instance_prefix(self) -> str:
        return f"{self.prefix}{{instances}}:"

    def inbox(self, instance_id: str) -> str:
        """Stream of messages for one instance (jobs for its nodes, answers for its sessions)."""
        return f"{self.prefix}inbox:{{{instance_id}}}"
