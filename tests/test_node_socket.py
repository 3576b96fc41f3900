"""What a node sees on its socket: registration rules, heartbeats, takeover, identity."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from harness import MemoryHarness
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame


async def register(h: MemoryHarness, frame: dict):
    node = h.node()
    await node.send(frame)
    return node, await node.recv()


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"capability_schema_version": "3.0"}, "INVALID_CAPABILITY_SCHEMA",
         "capability_schema_version"),
        ({"hardware": {"cpu_cores": 8, "memory_gb": 32, "gpus": []}}, "NO_GPU_AVAILABLE",
         "hardware.gpus"),
        ({"hardware": {"cpu_cores": 8, "memory_gb": 32}}, "NO_GPU_AVAILABLE", "hardware.gpus"),
        ({"hardware": {"memory_gb": 32, "gpus": []}}, "INVALID_MESSAGE", "hardware.cpu_cores"),
        ({"accept_public_jobs": None}, "INVALID_MESSAGE", "accept_public_jobs"),
        ({"max_concurrent_jobs": 0}, "INVALID_MESSAGE", "max_concurrent_jobs"),
    ],
)
async def test_rejected_registrations(nursery, change, code, field):
    h = await MemoryHarness.start(nursery)
    node, reply = await register(h, register_frame(**change))
    assert reply["type"] == "error" and reply["code"] == code
    assert reply["details"] == {"field": field}
    assert field.split(".")[-1] in reply["message"]
    assert h.scheduler.publisher.current.nodes == {}
    # The socket stays usable: a valid registration now succeeds.
    await node.send(register_frame())
    assert (await node.recv())["type"] == "node_register_ack"


async def test_gpu_not_required_when_configured_off(nursery):
    h = await MemoryHarness.start(nursery, nodes={"require_gpu": False})
    _, reply = await register(h, register_frame(hardware={"cpu_cores": 2, "memory_gb": 4}))
    assert reply["type"] == "node_register_ack"


async def test_schema_absent_counts_as_2_0(nursery):
    h = await MemoryHarness.start(nursery)
    frame = register_frame()
    del frame["capability_schema_version"]
    _, reply = await register(h, frame)
    assert reply["type"] == "node_register_ack"
    assert reply["status"] == "registering"


async def test_status_registering_until_first_healthy_heartbeat(nursery):
    h = await MemoryHarness.start(nursery)
    node, ack = await register(h, register_frame())
    node_id = ack["node_id"]
    view = h.scheduler.publisher.current.nodes[node_id]
    assert str(view.status) == "registering"
    assert h.scheduler.publisher.current.pools == {}
    await node.send(heartbeat_frame(node_id, cpu_percent=99.0))  # overloaded: not healthy
    await node.send(heartbeat_frame(node_id))
    await h.wait_node_status(node_id, "ready")
    pools = h.scheduler.publisher.current.pools
    assert set(pools) == {"zh:zh", "zh:en", "en:zh", "en:en", "zh:*", "en:*"}
    assert all(members == {node_id} for members in pools.values())


async def test_degraded_node_leaves_pools_and_comes_back(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    await node.send(heartbeat_frame(node_id, gpu_percent=99.5))
    await h.wait_node_status(node_id, "degraded")
    assert h.scheduler.publisher.current.pools == {}
    await node.send(heartbeat_frame(node_id))
    await h.wait_node_status(node_id, "ready")
    assert "zh:en" in h.scheduler.publisher.current.pools


async def test_heartbeat_before_register_is_ignored_quietly(nursery):
    h = await MemoryHarness.start(nursery)
    node = h.node()
    await node.send(heartbeat_frame("node-OLD00001"))
    await node.send(register_frame(node_id="node-OLD00001"))
    reply = await node.recv()
    assert reply["type"] == "node_register_ack"  # no error frame came first
    assert reply["node_id"] == "node-OLD00001"


async def test_job_frames_before_register_are_refused(nursery):
    h = await MemoryHarness.start(nursery)
    node = h.node()
    await node.send({"type": "job_ack", "job_id": "job-1", "attempt_id": 1,
                     "node_id": "node-X", "session_id": "s-1", "trace_id": "t"})
    reply = await node.recv()
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    assert "before node_register" in reply["message"]


async def test_messages_naming_another_node_are_rejected(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    await node.send(heartbeat_frame("node-SOMEONE1"))
    reply = await node.recv()
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    assert reply["details"] == {"field": "node_id"}


async def test_reconnect_takes_over_and_old_cleanup_leaves_new_registration(nursery):
    h = await MemoryHarness.start(nursery)
    old, node_id = await h.ready_node()
    new = h.node()
    await new.send(heartbeat_frame(node_id))  # the agent's reconnect sequence
    await new.send(register_frame(node_id=node_id))
    assert (await new.recv())["node_id"] == node_id
    with pytest.raises(Exception) as closed:
        await old.recv()
    assert type(closed.value).__name__ == "ConnectionClosed"
    assert old.ws.closed.code == 4001
    await trio.testing.wait_all_tasks_blocked()  # the old socket's cleanup has run
    view = h.scheduler.publisher.current.nodes[node_id]
    assert view.epoch == 2
    await new.send(heartbeat_frame(node_id))
    await h.wait_node_status(node_id, "ready")
    assert node_id in h.scheduler.publisher.current.pools["zh:en"]


async def test_capacity_from_register_or_default(nursery):
    h = await MemoryHarness.start(nursery, nodes={"default_max_concurrent_jobs": 3})
    _, own = await h.ready_node(max_concurrent_jobs=7)
    _, default = await h.ready_node()
    nodes = h.scheduler.publisher.current.nodes
    assert nodes[own].max_concurrent_jobs == 7
    assert nodes[default].max_concurrent_jobs == 3


async def test_node_socket_close_removes_node_at_once(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    await node.ws.aclose()
    await h.wait_node_status(node_id, None)
    assert h.scheduler.publisher.current.pools == {}
