"""Which node ids a node's credential lets it claim.

``[nodes] auth_tokens`` comes in two forms. A list of tokens: any holder is any node (it
may register with any ``node_id``, and so take over a live node's registration). A table
from token to the node ids it may claim: each entry is an id, or a prefix ending in ``*``
(``"farm-*"``). A takeover of a live node then needs a token allowed for that id, like its
first registration: one node's token cannot take another node's users' audio.
"""

from __future__ import annotations

import secrets
import attrs

ANY = None


@attrs.frozen
class NodeIdentity:
    """What one connection's credential allows: ``patterns`` of ids (None: any id)."""

    patterns: tuple[str, ...] | None = ANY

    def allows(self, node_id: str) -> bool:
        if self.patterns is None:
            return True
        return any(
            node_id.startswith(p[:-1]) if p.endswith("*") else node_id == p
            for p in self.patterns
        )

    def new_id(self) -> str | None:
        """The id to give a node that registers without one: its only allowed id, or a
        fresh one under its first prefix; None when that is not up to the credential."""
        if self.patterns is None:
            return None
        exact = [p for p in self.patterns if not p.endswith("*")]
        if len(self.patterns) == 1 and exact:
            return exact[0]
        prefixes = [p[:-1] for p in self.patterns if p.endswith("*")]
        return prefixes[0] + secrets.token_hex(4).upper() if prefixes else None
