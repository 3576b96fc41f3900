"""A node's credential bounds the node ids it may claim: with ``[nodes] auth_tokens`` as a
table, one node's token cannot take another live node over (and receive its users'
audio); as a plain list, any holder is any node."""

from __future__ import annotations

import trio

from real_peers import WIRE_BOUND_S, close_code, make_ready
from trio_scheduler.nodes.identity import NodeIdentity
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    register_frame,
)
from trio_scheduler.simulate.peer import connect

TOKENS = {"token-a": ["node-a"], "token-farm": ["farm-*"]}


def test_an_identity_allows_its_ids_and_names_new_ones():
    assert NodeIdentity().allows("anything") and NodeIdentity().new_id() is None
    one = NodeIdentity(("node-a",))
    assert one.allows("node-a") and not one.allows("node-ab") and one.new_id() == "node-a"
    farm = NodeIdentity(("farm-*", "node-x"))
    assert farm.allows("farm-7") and farm.allows("node-x") and not farm.allows("node-y")
    assert farm.new_id().startswith("farm-")
    assert NodeIdentity(("a", "b")).new_id() is None
    assert not NodeIdentity(()).allows("a")


async def test_one_nodes_token_cannot_take_another_live_node_over(start_server):
    server = await start_server(nodes={"auth_tokens": TOKENS})
    async with connect(f"{server.node_url}?token=token-a") as node_a:
        node_id = await make_ready(node_a, server.scheduler)  # no node_id: its only id
        assert node_id == "node-a"
        async with connect(f"{server.node_url}?token=token-farm") as intruder:
            await intruder.send(register_frame(node_id="node-a"))
            with trio.fail_after(WIRE_BOUND_S):
                error = await intruder.recv_type("error")
            assert (error["code"], error["details"]) == ("UNAUTHORIZED", {"field": "node_id"})
            await intruder.send(register_frame())  # its own kind of id is fine
            with trio.fail_after(WIRE_BOUND_S):
                ack = await intruder.recv_type("node_register_ack")
            assert ack["node_id"].startswith("farm-")
        # Node A was never replaced: it still gets its users' jobs.
        async with connect(server.session_url) as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            with trio.fail_after(WIRE_BOUND_S):
                job = await node_a.recv_type("job_assign")
            assert job["session_id"] == session_id


async def test_the_owner_of_an_id_may_take_it_over(start_server):
    server = await start_server(nodes={"auth_tokens": TOKENS})
    async with connect(f"{server.node_url}?token=token-a") as old:
        await make_ready(old, server.scheduler)
        async with connect(f"{server.node_url}?token=token-a") as new:
            await new.send(register_frame(node_id="node-a"))
            with trio.fail_after(WIRE_BOUND_S):
                await new.recv_type("node_register_ack")
            assert await close_code(old) == 4001


async def test_a_plain_token_list_lets_any_holder_be_any_node(start_server):
    server = await start_server(nodes={"auth_tokens": ["shared"]})
    async with connect(f"{server.node_url}?token=shared") as old:
        node_id = await make_ready(old, server.scheduler, node_id="gpu-1")
        async with connect(f"{server.node_url}?token=shared") as new:
            await new.send(register_frame(node_id=node_id))
            with trio.fail_after(WIRE_BOUND_S):
                await new.recv_type("node_register_ack")
            assert await close_code(old) == 4001
