"""Node management as operators and peers see it: pairing, drain, tokens, pools, snapshots."""

from __future__ import annotations

import attrs
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from harness import MemoryHarness, snapshot_where
from http_client import http_request
from trio_scheduler.http.admin import node_rows
from trio_scheduler.management.needs import Needs
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import CannotConnect, connect


# -- pairing ------------------------------------------------------------------------------


async def test_pairing_code_pins_the_session_to_its_node(nursery):
    h = await MemoryHarness.start(nursery)
    node_a = h.node()
    await node_a.send(register_frame())
    ack = await node_a.recv()
    code = ack["pairing_code"]
    assert len(code) == 6 and code.isdigit()
    a_id = ack["node_id"]
    await node_a.send(heartbeat_frame(a_id))
    await h.wait_node_status(a_id, "ready")
    node_b, b_id = await h.ready_node()
    other = (await h.ready_node())  # more idle capacity elsewhere must not matter
    client = h.session()
    await client.send(one_way_init("zh", "en", pairing_code=code))
    init_ack = await client.recv()
    assert init_ack["assigned_node_id"] == a_id
    session_id = init_ack["session_id"]
    for index in range(4):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        job = await node_a.recv_type("job_assign")
        await node_a.send(result_frame(job, a_id))
        assert (await client.recv_type("translation_result"))["utterance_index"] == index
    assert other  # (kept connected)


async def test_pinned_session_fails_instead_of_moving(nursery):
    h = await MemoryHarness.start(nursery)
    node_a = h.node()
    await node_a.send(register_frame())
    ack = await node_a.recv()
    a_id = ack["node_id"]
    await node_a.send(heartbeat_frame(a_id))
    await h.wait_node_status(a_id, "ready")
    node_b, b_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(
        client, one_way_init("zh", "en", pairing_code=ack["pairing_code"])
    )
    await node_a.send(heartbeat_frame(a_id, cpu_percent=99.0))
    await h.wait_node_status(a_id, "degraded")
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    event = await client.recv_type("ui_event")
    assert event["event"] == "ERROR" and event["error_code"] == "NODE_UNAVAILABLE"
    missing = await client.recv_type("missing_result")
    assert missing["reason"] == "job_failed"


@pytest.mark.parametrize("code", ["000000", "12345", "abcdef"])
async def test_unknown_pairing_code_makes_no_session(nursery, code):
    h = await MemoryHarness.start(nursery)
    await h.ready_node()
    client = h.session()
    await client.send(one_way_init("zh", "en", pairing_code=code))
    reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] == "INVALID_PAIRING_CODE"
    assert h.scheduler.sessions.sessions == {}


async def test_pairing_code_expires(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, nodes={"pairing_code_ttl_s": 60.0})
    node = h.node()
    await node.send(register_frame())
    ack = await node.recv()
    await trio.sleep(61)
    client = h.session()
    await client.send(one_way_init("zh", "en", pairing_code=ack["pairing_code"]))
    assert (await client.recv())["code"] == "INVALID_PAIRING_CODE"


async def test_pairing_code_rotates_on_registration(nursery):
    h = await MemoryHarness.start(nursery)
    node = h.node()
    await node.send(register_frame())
    first = await node.recv()
    await node.send(register_frame(node_id=first["node_id"]))
    second = await node.recv()
    assert second["pairing_code"] != first["pairing_code"]
    client = h.session()
    await client.send(one_way_init("zh", "en", pairing_code=first["pairing_code"]))
    assert (await client.recv())["code"] == "INVALID_PAIRING_CODE"
    await client.send(one_way_init("zh", "en", pairing_code=second["pairing_code"]))
    assert (await client.recv())["assigned_node_id"] == first["node_id"]


def test_pairing_codes_unique_among_live_nodes():
    # 2000 registrations through the owner's code generator never collide while live.
    from trio_scheduler.management.owner import NodeManager
    from trio_scheduler.management.publisher import SnapshotPublisher
    from trio_scheduler.management.node_state import HealthRules

    manager = NodeManager(SnapshotPublisher(), default_max_concurrent_jobs=1,
                          heartbeat_interval_s=15, heartbeat_timeout_s=45,
                          health=HealthRules())
    codes = set()
    for _ in range(2000):
        code = manager._new_pairing_code()
        manager._pairings[code] = object()
        codes.add(code)
    assert len(codes) == 2000


# -- capabilities, overload, snapshots ---------------------------------------------------


async def test_capability_change_moves_the_node_between_pools(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(["zh", "en"])
    publisher = h.scheduler.publisher
    assert node_id in publisher.current.pools["zh:en"]
    version = publisher.current.version
    await node.send(heartbeat_frame(node_id, ["zh", "en"]))  # unchanged: nothing published
    await node.send(heartbeat_frame(node_id, ["ja", "en"]))
    snapshot = await snapshot_where(publisher, lambda s: "ja:en" in s.pools)
    assert "zh:en" not in snapshot.pools
    assert snapshot.version == version + 1


async def test_service_not_ready_degrades(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    frame = heartbeat_frame(node_id)
    frame["capability_by_type"] = [{"type": "tts", "ready": False, "reason": "model loading"}]
    await node.send(frame)
    degraded = await h.wait_node_status(node_id, "degraded")
    assert degraded.pools == {}  # takes no job while its TTS loads
    frame["capability_by_type"] = [{"type": "tts", "ready": True}]
    await node.send(frame)
    ready = await h.wait_node_status(node_id, "ready")
    assert node_id in ready.pools["zh:en"]


async def test_gpu_queue_above_limit_counts_as_overloaded(nursery):
    h = await MemoryHarness.start(nursery, nodes={"max_gpu_queue": 4})
    node, node_id = await h.ready_node()
    await node.send(heartbeat_frame(node_id, gpu_queue_length=5))
    degraded = await h.wait_node_status(node_id, "degraded")
    assert degraded.pools == {}
    await node.send(heartbeat_frame(node_id, gpu_queue_length=4))  # at the limit: not over
    ready = await h.wait_node_status(node_id, "ready")
    assert node_id in ready.pools["zh:en"]


async def test_reported_running_jobs_never_trusted(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    await node.send(heartbeat_frame(node_id, running_jobs=50))  # says it is swamped
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")  # our own reservations say it is free
    assert job["utterance_index"] == 0
    rows = await node_rows(h.scheduler.manager, h.scheduler.dispatcher)
    assert rows[0]["reported_running_jobs"] == 50 and rows[0]["reserved_jobs"] == 1


async def test_old_snapshot_stays_consistent_across_awaits(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    held = h.scheduler.publisher.current
    nodes_before, pools_before = dict(held.nodes), dict(held.pools)
    await node.send(heartbeat_frame(node_id, ["ja", "en"]))
    await snapshot_where(h.scheduler.publisher, lambda s: "ja:en" in s.pools)
    await node.ws.aclose()
    await h.wait_node_status(node_id, None)
    assert dict(held.nodes) == nodes_before and dict(held.pools) == pools_before
    assert held.candidates(Needs(frozenset({"zh:en"}), frozenset({"asr"}))) == {node_id}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        held.version = 99
    with pytest.raises(TypeError):
        held.pools["x:y"] = frozenset()


async def test_500_nodes_heartbeating(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    publisher = h.scheduler.publisher
    peers = []
    for index in range(500):
        peer = h.node()
        languages = ["zh", "en"] if index % 2 else ["ja", "en"]
        await peer.send(register_frame(languages))
        node_id = (await peer.recv())["node_id"]
        peers.append((peer, node_id, languages))
    for peer, node_id, languages in peers:
        await peer.send(heartbeat_frame(node_id, languages))
    # 4 pairs and 2 source pools per node
    await snapshot_where(publisher, lambda s: sum(len(p) for p in s.pools.values()) == 500 * 6)
    for round_ in range(3):
        for index, (peer, node_id, languages) in enumerate(peers):
            if round_ == 2 and index % 10 == 0:
                languages = ["ko", "en"]
            await peer.send(heartbeat_frame(node_id, languages))
    await trio.testing.wait_all_tasks_blocked()
    snapshot = publisher.current
    assert h.scheduler.manager.heartbeats_applied == 500 * 4
    ko = {node_id for i, (_, node_id, _) in enumerate(peers) if i % 10 == 0}
    zh = {node_id for i, (_, node_id, _) in enumerate(peers) if i % 2 and i % 10}
    ja = {node_id for i, (_, node_id, _) in enumerate(peers) if not i % 2 and i % 10}
    assert snapshot.pools["ko:en"] == ko
    assert snapshot.pools["zh:en"] == zh
    assert snapshot.pools["ja:en"] == ja
    assert snapshot.pools["en:en"] == ko | zh | ja
    assert all(str(v.status) == "ready" for v in snapshot.nodes.values())


async def test_agent_reconnect_sequence_keeps_node_schedulable(nursery):
    h = await MemoryHarness.start(nursery)
    old, node_id = await h.ready_node()
    await old.ws.aclose()  # the agent's socket drops
    await h.wait_node_status(node_id, None)
    new = h.node()
    await new.send(heartbeat_frame(node_id))  # ignored: not registered on this socket
    await new.send(register_frame(node_id=node_id))
    await new.recv_type("node_register_ack")
    # Ready again at registration: no heartbeat interval without the node.
    assert str(h.scheduler.publisher.current.nodes[node_id].status) == "ready"
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await new.recv_type("job_assign")
    await new.send(heartbeat_frame(node_id))
    await new.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 0


# -- drain and the admin API (real sockets) -----------------------------------------------


async def test_drain_over_the_admin_api(start_server):
    server = await start_server(admin={"token": "s3cret"})
    port = server.port
    async with connect(server.node_url) as node, connect(server.session_url) as client:
        await node.send(register_frame())
        node_id = (await node.recv())["node_id"]
        await node.send(heartbeat_frame(node_id))
        heartbeat_sent_at = trio.current_time()
        await snapshot_where(server.scheduler.publisher, lambda s: "zh:en" in s.pools)
        await client.send(one_way_init("zh", "en"))
        session_id = (await client.recv())["session_id"]
        await client.send(audio_chunk_frame(session_id, 0, is_final=True))
        running = await node.recv_type("job_assign")

        assert (await http_request(port, "GET", "/admin/nodes"))[0] == 401
        assert (await http_request(port, "GET", "/admin/nodes", "wrong"))[0] == 401
        status, body = await http_request(port, "POST", f"/admin/nodes/{node_id}/drain", "s3cret")
        assert (status, body) == (200, {"node_id": node_id, "status": "draining"})
        control = await node.recv_type("node_control")
        assert control["command"] == "drain"
        assert (await http_request(port, "POST", "/admin/nodes/node-NOPE0000/drain", "s3cret"))[0] == 404

        status, body = await http_request(port, "GET", "/admin/nodes", "s3cret")
        assert status == 200
        [row] = body["nodes"]
        assert row["node_id"] == node_id and row["status"] == "draining"
        assert row["pools"] == [] and "zh:en" in row["pairs"]
        assert row["services"] == ["asr", "nmt", "tts"]
        assert row["reserved_jobs"] == 1 and row["load"] == 0.25
        # Its only heartbeat was applied after it was sent (the age is rounded to 1 ms).
        assert row["last_heartbeat_age_s"] <= trio.current_time() - heartbeat_sent_at + 0.001

        # No new job for a draining node; the running one still finishes.
        await client.send(audio_chunk_frame(session_id, 1, is_final=True))
        error = await client.recv_type("error")
        assert error["code"] == "NO_AVAILABLE_NODE"
        await node.send(result_frame(running, node_id))
        assert (await client.recv_type("translation_result"))["utterance_index"] == 0


async def test_admin_api_is_off_without_a_token(start_server):
    server = await start_server()
    status, body = await http_request(server.port, "GET", "/admin/nodes", "anything")
    assert status == 403 and "admin" in body["error"]


# -- node authentication (real sockets) --------------------------------------------------


async def test_node_tokens_are_required_when_configured(start_server):
    server = await start_server(nodes={"auth_tokens": ["tok-1", "tok-2"]})
    with pytest.raises(CannotConnect) as refused:
        async with connect(server.node_url):
            pass
    assert refused.value.status_code == 401
    with pytest.raises(CannotConnect):
        async with connect(server.node_url + "?token=nope"):
            pass
    async with connect(server.node_url + "?token=tok-2") as node:
        await node.send(register_frame())
        assert (await node.recv())["type"] == "node_register_ack"
    async with trio_websocket.open_websocket_url(
        server.node_url, extra_headers=[(b"Authorization", b"Bearer tok-1")]
    ) as ws:
        await ws.send_message(orjson.dumps(register_frame()).decode())
        assert orjson.loads(await ws.get_message())["type"] == "node_register_ack"
    async with connect(server.session_url) as client:  # sessions are not affected
        await client.send(one_way_init("zh", "en"))
        assert (await client.recv())["type"] == "session_init_ack"
