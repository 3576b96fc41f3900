"""Several instances on one real redis-server: any session reaches any node.

Each instance is a whole ``serve`` in the test's nursery, with its own port.
"""

from __future__ import annotations

import trio
import trio.testing

from conftest import RunningServer, make_config
from http_client import http_request
from redis_server import free_port
from real_peers import WIRE_BOUND_S, close_code, make_ready, outcome_frames, wait_for_node_status
from trio_scheduler.drain import drain
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    register_frame,
    result_frame,
    session_init_frame,
)
from trio_scheduler.simulate.peer import connect
from trio_scheduler.server import serve


async def start_instances(nursery, redis_url: str, count: int, **sections) -> list[RunningServer]:
    store = {"redis_url": redis_url, **sections.pop("store", {})}
    cluster = {"instance_heartbeat_s": 0.2, "instance_timeout_s": 1.0,
               **sections.pop("cluster", {})}
    server = {"host": "127.0.0.1", "port": 0, **sections.pop("server", {})}
    config = make_config(store=store, cluster=cluster, server=server, **sections)
    return [RunningServer(await nursery.start(serve, config)) for _ in range(count)]


async def wait_for_remote_node(server: RunningServer, node_id: str, status: str = "ready"):
    """Until another instance's node is in ``server``'s snapshot with ``status``."""

    def reached(snapshot) -> bool:
        view = snapshot.nodes.get(node_id)
        return view is not None and not view.local and str(view.status) == status

    with trio.fail_after(WIRE_BOUND_S):
        await server.scheduler.publisher.wait_until(reached)


async def open_session(client, src: str = "zh", tgt: str = "en") -> str:
    await client.send(one_way_init(src, tgt))
    with trio.fail_after(WIRE_BOUND_S):
        return (await client.recv_type("session_init_ack"))["session_id"]


async def utterance(client, session_id: str, seq: int) -> int:
    await client.send(audio_chunk_frame(session_id, seq))
    await client.send(audio_chunk_frame(session_id, seq + 1, is_final=True, payload=""))
    return seq + 2


async def job_on_remote_node(a: RunningServer, b: RunningServer, node, client
                             ) -> tuple[str, str, dict]:
    """``node`` ready on A and seen by B, ``client`` a session on B that says one
    utterance: the node's id, the session's, and the job the node receives."""
    node_id = await make_ready(node, a.scheduler)
    await wait_for_remote_node(b, node_id)
    session_id = await open_session(client)
    await utterance(client, session_id, 0)
    with trio.fail_after(WIRE_BOUND_S):
        job = await node.recv_type("job_assign")
    return node_id, session_id, job


async def test_node_on_one_instance_serves_a_session_on_another(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(a.node_url) as node, connect(b.session_url) as client:
        node_id, session_id, job = await job_on_remote_node(a, b, node, client)
        assert job["session_id"] == session_id and job["utterance_index"] == 0
        assert (job["src_lang"], job["tgt_lang"], job["attempt_id"]) == ("zh", "en", 1)
        assert job["audio_format"] == "opus" and job["sample_rate"] == 16000
        assert job["is_manual_cut"] is True and job["padding_ms"] == 280
        common = {"job_id": job["job_id"], "attempt_id": 1, "node_id": node_id,
                  "session_id": session_id, "trace_id": job["trace_id"]}
        await node.send({"type": "job_ack", **common})
        await node.send({"type": "asr_partial", **common, "utterance_index": 0,
                         "text": "你", "is_final": False})
        await node.send(result_frame(job, node_id))
        frames = await outcome_frames(client)
        events = [f["event"] for f in frames if f["type"] == "ui_event"]
        assert events[:3] == ["DISPATCHED", "NODE_ACCEPTED", "ASR_PARTIAL"]
        partial = next(f for f in frames if f["type"] == "asr_partial")
        assert (partial["text"], partial["job_id"], partial["utterance_index"]) == (
            "你", job["job_id"], 0)
        result = frames[-1]
        assert result["type"] == "translation_result"
        assert (result["job_id"], result["utterance_index"]) == (job["job_id"], 0)
        assert result["text_asr"] and result["text_translated"] and result["tts_audio"]
        assert result["network_timings"]["scheduler_to_node_ms"] is not None
    # Nothing is left behind on either instance, nor in the store.
    await wait_for_node_status(a.scheduler, node_id, None)
    assert a.scheduler.dispatcher.routed_jobs == b.scheduler.dispatcher.routed_jobs == 0
    assert await b.scheduler.store.in_use(node_id, 0) == 0


async def test_a_session_leaving_cancels_its_job_on_another_instances_node(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(a.node_url) as node:
        node_id = await make_ready(node, a.scheduler)
        await wait_for_remote_node(b, node_id)
        async with connect(b.session_url) as client:
            session_id = await open_session(client)
            await utterance(client, session_id, 0)
            with trio.fail_after(WIRE_BOUND_S):
                job = await node.recv_type("job_assign")
        with trio.fail_after(WIRE_BOUND_S):
            cancel = await node.recv_type("job_cancel")
        assert cancel["job_id"] == job["job_id"]
        # The release was queued before the cancel left B: it has run.
        assert await b.scheduler.store.in_use(node_id, 0) == 0


async def test_failover_from_a_node_on_another_instance(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(b.session_url) as client, connect(b.node_url) as spare:
        async with connect(a.node_url) as first:
            first_id = await make_ready(first, a.scheduler, max_concurrent_jobs=1)
            await wait_for_remote_node(b, first_id)
            session_id = await open_session(client)
            await utterance(client, session_id, 0)
            with trio.fail_after(WIRE_BOUND_S):
                job = await first.recv_type("job_assign")
            spare_id = await make_ready(spare, b.scheduler)
        # The first node's socket closed on A: the job goes to the spare (same id, attempt 2).
        with trio.fail_after(WIRE_BOUND_S):
            again = await spare.recv_type("job_assign")
        assert (again["job_id"], again["attempt_id"]) == (job["job_id"], 2)
        await spare.send(result_frame(again, spare_id))
        frames = await outcome_frames(client)
        assert frames[-1]["type"] == "translation_result"
        assert frames[-1]["job_id"] == job["job_id"]


async def serve_jobs(node, node_id: str, *, service_s: float, capacity: int,
                     overcommits: list[str]) -> None:
    """A node that answers every job after ``service_s`` and records any job it is given
    while it already runs ``capacity`` (an over-commit)."""
    running: set[str] = set()

    async def answer(job):
        await trio.sleep(service_s)  # the node's processing time
        running.discard(job["job_id"])
        await node.send(result_frame(job, node_id))

    async with trio.open_nursery() as jobs:
        while True:
            frame = await node.recv()
            if frame["type"] == "job_cancel":
                running.discard(frame["job_id"])
            if frame["type"] != "job_assign":
                continue
            if len(running) >= capacity:
                overcommits.append(frame["job_id"])
            running.add(frame["job_id"])
            jobs.start_soon(answer, frame)


async def test_capacity_of_a_node_holds_across_instances(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    overcommits: list[str] = []
    async with connect(a.node_url) as node:
        node_id = await make_ready(node, a.scheduler, max_concurrent_jobs=1)
        await wait_for_remote_node(b, node_id)
        async def stream(server: RunningServer, outcomes: list[dict]) -> None:
            async with connect(server.session_url) as client:
                session_id = await open_session(client)
                seq = 0
                for _ in range(4):
                    seq = await utterance(client, session_id, seq)
                for _ in range(4):
                    outcomes.append((await outcome_frames(client, timeout_s=20))[-1])

        results: dict[str, list[dict]] = {"a": [], "b": []}
        async with trio.open_nursery() as serving:
            serving.start_soon(lambda: serve_jobs(node, node_id, service_s=0.05, capacity=1,
                                                  overcommits=overcommits))
            async with trio.open_nursery() as sessions:
                sessions.start_soon(stream, a, results["a"])
                sessions.start_soon(stream, b, results["b"])
            serving.cancel_scope.cancel()
    assert overcommits == []
    for outcomes in results.values():
        assert [o["type"] for o in outcomes] == ["translation_result"] * 4
        assert [o["utterance_index"] for o in outcomes] == [0, 1, 2, 3]


async def test_a_node_moving_between_instances_keeps_serving_the_stream(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(b.session_url) as client:
        session_id = await open_session(client)
        seq = 0
        async with connect(a.node_url) as node:
            node_id = await make_ready(node, a.scheduler)
            await wait_for_remote_node(b, node_id)
            seq = await utterance(client, session_id, seq)
            with trio.fail_after(WIRE_BOUND_S):
                job = await node.recv_type("job_assign")
            await node.send(result_frame(job, node_id))
            assert (await outcome_frames(client))[-1]["type"] == "translation_result"
        # The node drops off A and reconnects to B with the same id.
        async with connect(b.node_url) as node:
            with trio.fail_after(WIRE_BOUND_S):
                await node.send(register_frame(node_id=node_id))
                await node.recv_type("node_register_ack")
            # It keeps its standing: ready at once, before its next heartbeat.
            await wait_for_node_status(b.scheduler, node_id, "ready")
            seq = await utterance(client, session_id, seq)
            with trio.fail_after(WIRE_BOUND_S):
                job = await node.recv_type("job_assign")
            assert job["utterance_index"] == 1
            await node.send(result_frame(job, node_id))
            frames = await outcome_frames(client)
            assert frames[-1]["type"] == "translation_result"
            assert [f for f in frames if f["type"] == "error"] == []
            # A sees it too, now as B's node.
            await wait_for_remote_node(a, node_id)


async def test_a_takeover_on_another_instance_closes_the_older_socket(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(a.node_url) as old, connect(b.node_url) as new:
        node_id = await make_ready(old, a.scheduler)
        await wait_for_remote_node(b, node_id)
        await new.send(register_frame(node_id=node_id))
        with trio.fail_after(WIRE_BOUND_S):
            await new.recv_type("node_register_ack")
        assert await close_code(old) == 4001
        await wait_for_remote_node(a, node_id)


async def test_nodes_appear_and_leave_on_every_instance(nursery, redis_url):
    a, b, c = await start_instances(nursery, redis_url, 3)
    async with connect(b.node_url) as node:
        node_id = await make_ready(node, b.scheduler)
        for other in (a, c):
            await wait_for_remote_node(other, node_id)
    for server in (a, b, c):
        await wait_for_node_status(server.scheduler, node_id, None)


async def test_admin_lists_instances_and_drains_a_node_on_another(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2, admin={"token": "adm"})
    async with connect(b.node_url) as node, connect(a.session_url) as client:
        node_id = await make_ready(node, b.scheduler)
        await wait_for_remote_node(a, node_id)
        await open_session(client)
        with trio.fail_after(WIRE_BOUND_S):
            while True:  # A's view of B is as fresh as B's last heartbeat
                status, body = await http_request(a.port, "GET", "/admin/instances", "adm")
                rows = {r["instance_id"]: r for r in body["instances"]}
                if rows.get(b.scheduler.instance_id, {}).get("nodes") == 1:
                    break
                await a.scheduler.cluster.beaten()
        assert status == 200
        assert rows[a.scheduler.instance_id] | {"this": True, "sessions": 1, "nodes": 0} == (
            rows[a.scheduler.instance_id])
        assert rows[b.scheduler.instance_id]["port"] == b.port
        status, body = await http_request(a.port, "GET", "/admin/nodes", "adm")
        [row] = [r for r in body["nodes"] if r["node_id"] == node_id]
        assert (row["instance"], row["status"]) == (b.scheduler.instance_id, "ready")

        status, body = await http_request(a.port, "POST", f"/admin/nodes/{node_id}/drain",
                                          "adm")
        assert status == 202 and body["instance"] == b.scheduler.instance_id
        with trio.fail_after(WIRE_BOUND_S):
            control = await node.recv_type("node_control")
        assert control["command"] == "drain"
        await wait_for_remote_node(a, node_id, "draining")
        status, _ = await http_request(a.port, "POST", f"/admin/nodes/{node_id}/undrain",
                                       "adm")
        assert status == 202
        await wait_for_remote_node(a, node_id, "ready")


async def test_a_draining_instance_waits_for_the_job_it_runs_for_another(nursery, redis_url):
    """A's node runs B's job: A's drain has no job of its own, yet ends only once that
    job's result has gone back to B (stopping earlier would close the node under it)."""
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(a.node_url) as node, connect(b.session_url) as client:
        node_id, _, job = await job_on_remote_node(a, b, node, client)
        drained = trio.Event()

        async def drain_a():
            assert await drain(a.scheduler) is True
            drained.set()

        nursery.start_soon(drain_a)
        await a.scheduler.draining.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not drained.is_set()
        await node.send(result_frame(job, node_id))
        assert (await outcome_frames(client))[-1]["type"] == "translation_result"
        with trio.fail_after(WIRE_BOUND_S):
            await drained.wait()


async def test_instances_can_share_one_port(nursery, redis_url):
    port = free_port()
    a, b = await start_instances(nursery, redis_url, 2, server={"port": port, "reuse_port": True})
    assert a.port == b.port == port
    seen = set()
    for _ in range(40):  # the kernel spreads connections by their source port
        status, stats = await http_request(port, "GET", "/stats")
        assert status == 200
        seen.add(stats["instance_id"])
    assert seen == {a.scheduler.instance_id, b.scheduler.instance_id}


async def test_instances_share_nodes_on_a_redis_cluster(nursery, redis_cluster):
    """The same round trip, node on A and session on B, over a 3-primary Redis Cluster:
    the instance registry, the inboxes and the node mirror live on different primaries."""
    a, b = await start_instances(nursery, redis_cluster.url, 2)
    async with connect(a.node_url) as node, connect(b.session_url) as client:
        node_id, session_id, job = await job_on_remote_node(a, b, node, client)
        await node.send(result_frame(job, node_id))
        assert (await outcome_frames(client))[-1]["type"] == "translation_result"
        assert await b.scheduler.store.in_use(node_id, 0) == 0


def comparable(frame: dict, session_id: str, job_id: str) -> dict:
    """A frame with what differs between two runs of one scenario taken out (its ids,
    the times it carries)."""
    varying = {"job_id": job_id, "session_id": session_id}
    out = {}
    for key, value in frame.items():
        if key in ("turn_id", "scheduler_sent_at_ms", "created_at_ms", "group_id"):
            continue
        if key == "network_timings":
            value = sorted(value)  # which timings are there, not their values
        out[key] = "<id>" if varying.get(key) == value and value else value
    return out


async def scenario(node_server: RunningServer, session_server: RunningServer, node, node_id):
    """The web client's two-way session, one utterance with a partial and an ack; every
    frame both peers see, comparable across runs."""
    seen = []
    async with connect(session_server.session_url) as client:
        await client.send(session_init_frame())
        session_id = (await client.recv_type("session_init_ack"))["session_id"]
        await utterance(client, session_id, 0)
        with trio.fail_after(WIRE_BOUND_S):
            job = await node.recv_type("job_assign")
        seen.append(job)
        common = {"job_id": job["job_id"], "attempt_id": 1, "node_id": node_id,
                  "session_id": session_id, "trace_id": job["trace_id"]}
        await node.send({"type": "job_ack", **common})
        await node.send({"type": "asr_partial", **common, "utterance_index": 0,
                         "text": "你", "is_final": False})
        await node.send(result_frame(job, node_id))
        seen += await outcome_frames(client)
    return [comparable(f, session_id, job["job_id"]) for f in seen]


async def test_a_remote_round_trip_shows_every_field_a_local_one_does(nursery, redis_url):
    a, b = await start_instances(nursery, redis_url, 2)
    async with connect(a.node_url) as node:
        node_id = await make_ready(node, a.scheduler)
        await wait_for_remote_node(b, node_id)
        local = await scenario(a, a, node, node_id)
        remote = await scenario(a, b, node, node_id)
    kinds = [(f["type"], f.get("event")) for f in local]
    assert kinds == [("job_assign", None), ("ui_event", "DISPATCHED"),
                     ("ui_event", "NODE_ACCEPTED"), ("ui_event", "ASR_PARTIAL"),
                     ("asr_partial", None), ("ui_event", "ASR_FINAL"), ("ui_event", "NMT_DONE"),
                     ("translation_result", None)]
    assert remote == local
