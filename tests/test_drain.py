"""Graceful drain on SIGTERM, and a node's drain and undrain by an operator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import trio
import trio_websocket

from conftest import RunningServer, make_config
from harness import MemoryHarness
from http_client import http_request
from trio_scheduler.cli import run_until_signalled
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    result_frame,
)
from trio_scheduler.simulate.peer import CannotConnect, connect

BOUND_S = 10


async def test_sigterm_drains_then_closes_with_1001(nursery, store_kind, request):
    """New sessions refused and /ready 503 at once; the result in flight still reaches
    its browser; then every socket is closed with 1001 and the server stops."""
    sections = {"server": {"drain_grace_s": 30.0}}
    if store_kind == "redis":
        sections["store"] = {"redis_url": request.getfixturevalue("redis_url")}
    stopped = trio.Event()

    async def run(*, task_status):
        await run_until_signalled(make_config(**sections), task_status=task_status)
        stopped.set()

    server = RunningServer(await nursery.start(run))
    scheduler = server.scheduler
    with trio.fail_after(BOUND_S):
        async with connect(server.node_url) as node, connect(server.session_url) as client:
            node_id = await server.ready_node(node)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            job = await node.recv_type("job_assign")

            os.kill(os.getpid(), signal.SIGTERM)
            await scheduler.draining.wait()
            assert await http_request(server.port, "GET", "/ready") == (
                503, {"status": "not ready", "reason": "shutting down"})
            assert (await http_request(server.port, "GET", "/health"))[0] == 200
            with pytest.raises(CannotConnect) as refused:
                async with connect(server.session_url):
                    pass
            assert refused.value.status_code == 503

            await node.send(result_frame(job, node_id))
            result = await client.recv_type("translation_result")
            assert result["utterance_index"] == 0
            for peer in (client, node):
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await peer.recv()
                assert closed.value.reason.code == 1001
        await stopped.wait()


async def test_drain_with_nothing_in_flight_stops_at_once(nursery):
    stopped = trio.Event()

    async def run(*, task_status):
        await run_until_signalled(make_config(), task_status=task_status)
        stopped.set()

    scheduler = await nursery.start(run)
    with trio.fail_after(BOUND_S):
        os.kill(os.getpid(), signal.SIGTERM)
        await stopped.wait()
    assert scheduler.draining.is_set() and not scheduler.accepting


def test_sigterm_exits_0():
    """The real process: serve, SIGTERM, exit code 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_scheduler", "serve", "--host", "127.0.0.1", "--port", "0",
         "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = threading.Timer(BOUND_S, process.kill)  # a hung server fails the test
    deadline.start()
    try:
        for line in process.stderr:
            if "scheduler listening" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=BOUND_S) == 0
        assert "drained" in process.stderr.read()
    finally:
        deadline.cancel()
        process.kill()
        process.wait()


async def test_undrain_puts_a_node_back_by_its_health(nursery):
    h = await MemoryHarness.start(nursery)
    manager = h.scheduler.manager
    node, node_id = await h.ready_node()
    assert await manager.drain(node_id)
    await h.wait_node_status(node_id, "draining")
    assert str(await manager.undrain(node_id)) == "ready"
    await h.wait_node_status(node_id, "ready")
    # A node whose last heartbeat was unhealthy comes back degraded.
    await node.send(heartbeat_frame(node_id, cpu_percent=99.0))
    await h.wait_node_status(node_id, "degraded")
    assert await manager.drain(node_id)
    assert str(await manager.undrain(node_id)) == "degraded"
    assert str(await manager.undrain(node_id)) == "degraded"  # not draining: unchanged
    assert await manager.undrain("node-NOPE0000") is None


async def test_undrain_over_the_admin_api(start_server):
    server = await start_server(admin={"token": "s3cret"})
    port = server.port
    with trio.fail_after(BOUND_S):
        async with connect(server.node_url) as node, connect(server.session_url) as client:
            node_id = await server.ready_node(node)
            drain = f"/admin/nodes/{node_id}/drain"
            undrain = f"/admin/nodes/{node_id}/undrain"
            assert (await http_request(port, "POST", undrain))[0] == 401
            assert (await http_request(port, "POST", drain, "s3cret"))[0] == 200
            assert await http_request(port, "POST", undrain, "s3cret") == (
                200, {"node_id": node_id, "status": "ready"})
            assert (await http_request(port, "POST", "/admin/nodes/node-X/undrain",
                                       "s3cret"))[0] == 404
            assert (await http_request(port, "GET", undrain, "s3cret"))[0] == 405
            # Back in its pools: it takes the next job.
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            assert (await node.recv_type("job_assign"))["utterance_index"] == 0
