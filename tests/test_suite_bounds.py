"""The suite fails fast instead of hanging: waits on the wire are bounded in seconds, and
every test is bounded in real time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
import trio

from trio_scheduler.simulate.memory_socket import memory_websocket_pair
from trio_scheduler.simulate.peer import RECV_BOUND_S, Peer

ROOT = Path(__file__).resolve().parent.parent


async def test_recv_fails_after_its_bound(autojump_clock):
    _, client_ws = memory_websocket_pair()
    peer = Peer(client_ws)
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await peer.recv()
    assert trio.current_time() - started == pytest.approx(RECV_BOUND_S)
    with pytest.raises(trio.TooSlowError):
        await peer.recv_type("job_assign", within=2.5)
    assert trio.current_time() - started == pytest.approx(RECV_BOUND_S + 2.5)


async def test_recv_type_bounds_the_whole_search(autojump_clock):
    """Frames of other types keep arriving: the bound still ends the wait."""
    server_ws, client_ws = memory_websocket_pair()
    peer = Peer(client_ws, recv_bound_s=3)

    async def chatter():
        while True:
            await server_ws.send_message('{"type": "server_heartbeat"}')
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter)
        with pytest.raises(trio.TooSlowError):
            await peer.recv_type("translation_result")
        nursery.cancel_scope.cancel()
    assert trio.current_time() == pytest.approx(3)


async def test_frames_waits_as_long_as_it_takes(autojump_clock):
    """A peer whose job is to wait (a node waiting for work) is not bounded."""
    server_ws, client_ws = memory_websocket_pair()
    peer = Peer(client_ws)

    async def later():
        await trio.sleep(10 * RECV_BOUND_S)
        await server_ws.send_message('{"type": "ping"}')
        await server_ws.send_message('{"type": "job_assign", "n": 1}')

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        async for frame in peer.frames("job_assign"):
            break
    assert frame == {"type": "job_assign", "n": 1}
    assert trio.current_time() == pytest.approx(10 * RECV_BOUND_S)


def test_every_test_has_a_real_time_bound():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < options["timeout"] <= 120
    assert options["timeout_method"] == "thread"


def test_a_stuck_test_ends_the_run(tmp_path):
    """A test that never blocks (MockClock cannot jump, no deadline fires) is stopped by
    the real-time bound, with the stack of where it was stuck."""
    stuck = tmp_path / "test_stuck.py"
    stuck.write_text(textwrap.dedent("""
        import trio

        async def test_spins_forever():
            while True:
                await trio.lowlevel.checkpoint()
    """))
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "timeout_names", "-o", "timeout=1", str(stuck)],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )
    assert time.monotonic() - started < 20
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "Timeout" in output
    assert "Stack of test_stuck.py::test_spins_forever" in output
