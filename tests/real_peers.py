"""Helpers for tests over real sockets: peers that reach a state, with bounded waits."""

from __future__ import annotations

import trio
import trio_websocket

from trio_scheduler.simulate.frames import heartbeat_frame, register_frame
from trio_scheduler.simulate.peer import Peer

WIRE_BOUND_S = 10  # no step of these tests takes longer on a healthy machine


async def wait_for_node_status(scheduler, node_id: str, status: str | None) -> None:
    """Until the node has ``status`` in the scheduler's snapshot (None: until it is gone)."""

    def reached(snapshot) -> bool:
        view = snapshot.nodes.get(node_id)
        return view is None if status is None else (
            view is not None and str(view.status) == status
        )

    with trio.fail_after(WIRE_BOUND_S):
        await scheduler.publisher.wait_until(reached)


async def make_ready(node: Peer, scheduler, **register) -> str:
    """Register ``node`` and heartbeat until the scheduler has it ready; its id."""
    with trio.fail_after(WIRE_BOUND_S):
        await node.send(register_frame(**register))
        node_id = (await node.recv_type("node_register_ack"))["node_id"]
        await node.send(heartbeat_frame(node_id))
    await wait_for_node_status(scheduler, node_id, "ready")
    return node_id


async def outcome_frames(client: Peer, timeout_s: float = WIRE_BOUND_S) -> list[dict]:
    """Every frame up to and including the next utterance outcome."""
    frames = []
    with trio.fail_after(timeout_s):
        while True:
            frames.append(frame := await client.recv())
            if frame["type"] in ("translation_result", "missing_result"):
                return frames


async def close_code(peer: Peer, timeout_s: float = WIRE_BOUND_S) -> int | None:
    """The close code of ``peer``'s socket, once the server closes it (frames before are
    skipped)."""
    with trio.fail_after(timeout_s):
        try:
            async for _ in peer.frames():
                pass
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None
    return None
