"""``trio-scheduler serve --workers N``: the real program as a process, its workers on one
port and one real redis-server.

Which worker a connection landed on is read from the log: every worker's line carries
``worker``, and a session's ``session started`` and a node's ``node status … registered``
name their id. The kernel spreads connections over the workers, so a test that needs a
peer on a given worker connects again until it lands there.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio
import trio_websocket

from console import one_line, run
from instances import ServerProcess, write_config
from real_peers import outcome_frames
from redis_server import free_port
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import CannotConnect, Peer, connect
from trio_scheduler.startup import ExitCode

BOUND_S = 30  # one test's exchanges on the wire, worker starts and restarts included
LANDING_ATTEMPTS = 40  # connections until one lands on the wanted worker (2 workers: 2^-40)


@pytest.fixture
def workers_config(tmp_path, redis_url):
    return write_config(tmp_path / "scheduler.toml", {
        "server": {"host": "127.0.0.1", "port": 0, "drain_grace_s": 30.0},
        "store": {"redis_url": redis_url},
        "cluster": {"instance_heartbeat_s": 0.2, "instance_timeout_s": 1.0},
        "workers": {"restart_delay_s": 0.1, "max_early_exits": 2, "stable_after_s": 60.0},
    })


@pytest.fixture
def servers():
    """Start the program with ``servers.append(start_workers(…))``; stopped at the end."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ServerProcess], config, workers: str = "2") -> ServerProcess:
    """``serve --workers``, started from this thread (it may have been given its cores)."""
    server = ServerProcess(["serve", "--config", str(config), "--workers", workers])
    servers.append(server)
    return server


async def started(servers: list[ServerProcess], config, workers: str = "2") -> ServerProcess:
    """``serve --workers``, once all its workers listen; its port is the one the parent
    picked (the config says 0)."""
    return await listening(start(servers, config, workers))


async def listening(server: ServerProcess) -> ServerProcess:
    server.port = (await logged(server, "workers listening"))["port"]
    return server


async def exit_code(server: ServerProcess) -> int:
    return await trio.to_thread.run_sync(lambda: server.process.wait(timeout=BOUND_S))


async def logged(server: ServerProcess, event: str, **fields) -> dict:
    return await trio.to_thread.run_sync(lambda: server.wait_for(event, **fields))


def url(server: ServerProcess, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def introduce_session(client: Peer) -> tuple[str, dict]:
    """A zh→en session: its id, and the log line of the worker it landed on."""
    await client.send(one_way_init("zh", "en"))
    session_id = (await client.recv_type("session_init_ack"))["session_id"]
    return session_id, {"event": "session started", "session_id": session_id}


async def introduce_node(node: Peer) -> tuple[str, dict]:
    """A zh/en node, registered and heartbeating: its id, and the log line of its worker."""
    await node.send(register_frame())
    node_id = (await node.recv_type("node_register_ack"))["node_id"]
    await node.send(heartbeat_frame(node_id))
    return node_id, {"event": "node status", "node_id": node_id, "reason": "registered"}


@asynccontextmanager
async def peer_on(
    server: ServerProcess, path: str, introduce: Callable[[Peer], Awaitable[tuple[str, dict]]],
    wanted: Callable[[int], bool],
) -> AsyncIterator[tuple[Peer, str, int]]:
    """A peer on ``path`` that landed on a worker ``wanted`` accepts: (peer, its id,
    the worker); the ones that landed elsewhere are closed."""
    for _ in range(LANDING_ATTEMPTS):
        async with connect(url(server, path)) as peer:
            peer_id, line = await introduce(peer)
            worker = (await logged(server, **line))["worker"]
            if wanted(worker):
                yield peer, peer_id, worker
                return
    pytest.fail(f"no peer on {path} landed on the wanted worker in {LANDING_ATTEMPTS} tries")


def session_on(server: ServerProcess, wanted: Callable[[int], bool]):
    return peer_on(server, "/ws/session", introduce_session, wanted)


def node_on(server: ServerProcess, wanted: Callable[[int], bool]):
    return peer_on(server, "/ws/node", introduce_node, wanted)


async def job_on(node: Peer, client: Peer, session_id: str, index: int = 0) -> dict:
    """The browser says one utterance; the job for it, as the node receives it."""
    await client.send(audio_chunk_frame(session_id, index, is_final=True))
    return await node.recv_type("job_assign")


async def result_reaches(client: Peer, job: dict) -> None:
    outcome = (await outcome_frames(client))[-1]
    assert outcome["type"] == "translation_result", outcome
    assert (outcome["job_id"], outcome["utterance_index"]) == (
        job["job_id"], job["utterance_index"])


async def round_trip(node: Peer, node_id: str, client: Peer, session_id: str) -> None:
    job = await job_on(node, client, session_id)
    await node.send(result_frame(job, node_id))
    await result_reaches(client, job)


# -- serving -------------------------------------------------------------------------------


async def test_a_session_is_served_by_a_node_on_another_worker(servers, workers_config):
    server = await started(servers, workers_config)
    with trio.fail_after(BOUND_S):
        async with node_on(server, lambda worker: True) as (node, node_id, node_worker):
            async with session_on(server, lambda worker: worker != node_worker) as (
                client, session_id, _,
            ):
                await round_trip(node, node_id, client, session_id)


async def test_a_killed_worker_is_restarted_and_serves(servers, workers_config):
    server = await started(servers, workers_config)
    first = await logged(server, "scheduler listening", worker=2)
    pid = (await logged(server, "worker started", worker=2))["pid"]
    mark = server.mark()
    os.kill(pid, signal.SIGKILL)
    with trio.fail_after(BOUND_S):
        exited = await logged(server, "worker exited", worker=2, since=mark)
        assert exited["signal"] == "SIGKILL"
        again = await logged(server, "worker started", worker=2, since=mark)
        assert again["pid"] != pid
        back = await logged(server, "scheduler listening", worker=2, since=mark)
        assert back["port"] == first["port"] == server.port
        assert back["instance"] != first["instance"]  # a new instance, not the dead one
        # The new worker 2 serves: its session reaches the node on worker 1.
        async with node_on(server, lambda worker: worker == 1) as (node, node_id, _):
            async with session_on(server, lambda worker: worker == 2) as (client, session_id, _):
                await round_trip(node, node_id, client, session_id)


async def test_a_worker_that_keeps_exiting_stops_the_server(servers, workers_config):
    """``max_early_exits`` 2: worker 2 killed twice soon after its start, the parent stops
    worker 1 (it drains) and exits 1: a kill is no reason of not starting (2, 3, 4)."""
    server = await started(servers, workers_config)
    mark = 0
    with trio.fail_after(BOUND_S):
        for _ in range(2):
            pid = (await logged(server, "worker started", worker=2, since=mark))["pid"]
            await logged(server, "scheduler listening", worker=2, since=mark)
            mark = server.mark()
            os.kill(pid, signal.SIGKILL)
        restarted = await logged(server, "restarting worker", worker=2)
        assert restarted["delay_s"] == 0.1
        gave_up = await logged(server, "a worker keeps exiting; stopping", worker=2)
        assert gave_up["early_exits"] == 2
        await logged(server, "drained: every job in flight has ended", worker=1)
        assert await exit_code(server) == ExitCode.FAILED
        assert (await logged(server, "workers stopped"))["exit_code"] == 1


# -- stopping ------------------------------------------------------------------------------


async def test_sigterm_drains_every_worker_then_the_parent_exits_0(servers, workers_config):
    """The job of a session on one worker runs on a node on the other: both drain, the
    result still reaches the browser, then both peers see 1001 and the parent exits 0."""
    server = await started(servers, workers_config)
    with trio.fail_after(BOUND_S):
        async with node_on(server, lambda worker: True) as (node, node_id, node_worker):
            async with session_on(server, lambda worker: worker != node_worker) as (
                client, session_id, _,
            ):
                job = await job_on(node, client, session_id)
                mark = server.mark()
                server.process.send_signal(signal.SIGTERM)
                for worker in (1, 2):
                    await logged(server, "draining", worker=worker, since=mark)
                with pytest.raises(CannotConnect) as refused:
                    async with connect(url(server, "/ws/session")):
                        pass
                assert refused.value.status_code == 503
                await node.send(result_frame(job, node_id))
                await result_reaches(client, job)
                for peer in (client, node):
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        while True:
                            await peer.recv()
                    assert closed.value.reason.code == 1001
        assert await exit_code(server) == ExitCode.OK
        for worker in (1, 2):
            stopped = await logged(server, "worker stopped", worker=worker)
            assert stopped["exit_code"] == 0


async def test_workers_stop_when_the_parent_is_gone(servers, workers_config):
    server = await started(servers, workers_config)
    server.kill()  # SIGKILL: the parent passes nothing on
    with trio.fail_after(BOUND_S):
        for worker in (1, 2):
            gone = await logged(server, "draining before stopping", worker=worker)
            assert gone["cause"] == "the parent process is gone"
        await trio.to_thread.run_sync(server.wait_closed)  # every worker has exited


# -- starting ------------------------------------------------------------------------------


@contextmanager
def cores(count: int) -> Iterator[int]:
    """Processes started inside run on ``count`` of this process's cores (fewer if it
    has fewer); how many."""
    mine = os.sched_getaffinity(0)
    chosen = sorted(mine)[:count]
    os.sched_setaffinity(0, chosen)  # inherited by the children started meanwhile
    try:
        yield len(chosen)
    finally:
        os.sched_setaffinity(0, mine)


async def test_workers_auto_starts_one_per_core_and_sigint_stops_them(servers,
                                                                       workers_config):
    with cores(2) as count:
        server = start(servers, workers_config, "auto")
    ready = await logged(server, "workers listening")
    assert ready["workers"] == count
    for worker in range(1, count + 1):
        await logged(server, "scheduler listening", worker=worker, port=ready["port"])
    server.process.send_signal(signal.SIGINT)
    assert await exit_code(server) == ExitCode.OK
    for worker in range(1, count + 1):
        assert (await logged(server, "stopping", worker=worker))["signal"] == "SIGINT"


def test_more_than_one_worker_without_redis_exits_2_with_one_line():
    done = run("serve", "--workers", "2", "--port", "0")
    assert done.returncode == ExitCode.BAD_CONFIG
    line = one_line(done.stderr)
    assert "2 workers need a shared Redis (--redis-url or [store] redis_url)" in line


def test_a_busy_port_exits_3_before_any_worker_starts(busy_port):
    done = run("serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(busy_port),
               "--redis-url", "redis://127.0.0.1:1/0")
    assert done.returncode == ExitCode.CANNOT_LISTEN
    assert f"port {busy_port} is already in use" in one_line(done.stderr)


def test_a_first_worker_that_cannot_start_ends_the_start_with_its_code(tmp_path):
    """Redis does not answer: worker 1 exits 4, no other worker is started, and the
    parent exits 4, as a single process would."""
    config = write_config(tmp_path / "scheduler.toml", {"store": {"startup_wait_s": 0.5}})
    done = run("serve", "--config", str(config), "--workers", "2", "--port", "0",
               "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == ExitCode.STORE_UNREACHABLE
    assert "Traceback" not in done.stderr
    assert "worker=2" not in done.stderr
    assert "cannot start: Redis at redis://127.0.0.1:" in done.stderr
    assert "a worker could not start; stopping" in done.stderr
