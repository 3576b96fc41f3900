"""Key schema of the shared store: one place that names every key."""

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
