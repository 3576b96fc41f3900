"""Choosing a node for a job: a pure function of a snapshot and a load estimate."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator

from trio_scheduler.management.snapshot import NodeView


def rank_candidates(
    nodes: Collection[NodeView],
    *,
    sticky_node_id: str | None,
    load: Callable[[NodeView], float],
    rng: random.Random,
) -> Iterator[NodeView]:
    """Order in which to try ``nodes`` for one job (PROTOCOL §3.4), lazily: the rest
    (3.) is sorted only when the first choices were all refused, which under normal load
    they are not.

    1. The node that served the session's previous utterance, while it has room: the node
       buffers audio across utterances of one turn.
    2. Power of two choices: of two random nodes, the less loaded one, then the other.
       It spreads load almost as well as "least loaded" without every dispatcher piling
       onto the same node between two load updates.
    3. The rest, least loaded first, ties broken at random, as fallbacks when a
       reservation is refused.

    Among equally loaded nodes, one connected to this instance comes before one on
    another instance (no hop through the store).
    """
    remaining = list(nodes)
    if sticky_node_id is not None:
        for node in remaining:
            if node.node_id == sticky_node_id and load(node) < 1.0:
                remaining.remove(node)
                yield node
                break
    if len(remaining) >= 2:
        first, second = rng.sample(remaining, 2)
        yield from sorted((first, second), key=lambda n: (load(n), not n.local, rng.random()))
        remaining = [n for n in remaining if n is not first and n is not second]
    remaining.sort(key=lambda n: (load(n), not n.local, rng.random()))
    yield from remaining
