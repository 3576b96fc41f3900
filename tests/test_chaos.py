"""Chaos: many sessions, few small nodes that misbehave in every way the field shows.

20 sessions stream 5 utterances each (``audio_chunk`` + ``is_final``) to 5 nodes of
capacity 1–2 that randomly disconnect and reconnect (a new socket, ``node_register`` with
the same ``node_id``; sometimes a takeover while the old socket is still open), answer
slowly, twice, never, with a failure or silence, and forge results (for a job sent to
another node, or naming another session); some sessions vanish mid-stream. Peers:
``chaos_peers.py``.

At the end, for every session still connected: exactly one outcome per utterance
(``translation_result`` or ``missing_result``), in ``utterance_index`` order; no result
delivered twice, none forged; no ``error`` frame but ``NO_AVAILABLE_NODE``. Once every
session task has cleaned up: no reservation left in the store, no route or waiting job
left in the dispatcher. Reservations live ``timeout_ms + reservation_margin_ms``; the
margin is raised so a leak made early in the run is still visible at the end.

Two variants: real sockets in real time (short timeouts, on the embedded store and on a
real redis-server), and the in-memory harness under ``MockClock`` with the default long
timeouts and a bigger load (20 sessions x 10 utterances). Each uses three seeds; the peers
draw every decision from per-peer ``random.Random`` streams derived from the seed.

The nodes also watch their own capacity (PROTOCOL §3.3): a ``job_assign`` while a node
still runs ``max_concurrent_jobs`` jobs that the scheduler never cancelled is an
over-commit, and fails the test. The deterministic test below pins down the case the
chaos found first: an earlier attempt's node answering after a failover.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from chaos_peers import Timing, run_chaos
from harness import MemoryHarness
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import connect

SEEDS = [11, 22, 33]


@pytest.mark.parametrize("seed", SEEDS)
async def test_chaos_on_real_sockets(start_server, seed):
    server = await start_server(
        jobs={"timeout_ms": 1500, "pending_timeout_ms": 1000, "reservation_margin_ms": 600_000},
        results={"gap_timeout_ms": 500},
        sessions={"close_drain_ms": 3000},
    )
    with trio.fail_after(45):  # real seconds, under the per-test bound
        report = await run_chaos(
            server.scheduler,
            open_node=lambda: connect(server.node_url),
            open_session=lambda: connect(server.session_url),
            seed=seed,
            timing=Timing.real(),
            sessions=20,
            nodes=5,
            utterances=5,
        )
    print(report.summary())
    problems = report.violations()
    assert not problems, "\n".join([report.summary(), *problems])


def _memory_socket(make_peer):
    @asynccontextmanager
    async def open_socket():
        peer = make_peer()
        try:
            yield peer
        finally:
            await peer.ws.aclose()

    return open_socket


@pytest.mark.parametrize("seed", SEEDS)
async def test_chaos_in_memory_under_mock_clock(nursery, autojump_clock, seed):
    h = await MemoryHarness.start(nursery)  # default timeouts: job 30 s, pending 10 s, gap 5 s
    with trio.fail_after(3600):  # virtual seconds
        report = await run_chaos(
            h.scheduler,
            open_node=_memory_socket(h.node),
            open_session=_memory_socket(h.session),
            seed=seed,
            timing=Timing.virtual(),
            sessions=20,
            nodes=5,
            utterances=10,
        )
    print(report.summary())
    problems = report.violations()
    assert not problems, "\n".join([report.summary(), *problems])
    # No node is given a job while it runs ``capacity`` others (as far as the scheduler
    # was told).
    overcommits = report.capacity_violations(include_known=True)
    assert not overcommits, "\n".join([report.summary(), *overcommits])


async def test_answer_from_an_earlier_attempt_cancels_the_current_one(nursery, autojump_clock):
    """An earlier attempt's node answers after a failover: the current attempt's node is
    told to drop the job before it gets another one (PROTOCOL §3.3)."""
    h = await MemoryHarness.start(nursery)
    node_a, a_id = await h.ready_node(max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0))
    await client.send(audio_chunk_frame(session_id, 1, is_final=True, payload=""))
    first = await node_a.recv_type("job_assign")
    node_b, b_id = await h.ready_node(max_concurrent_jobs=1)
    await node_a.ws.aclose()  # A drops off: attempt 2 goes to B, which starts on it
    second = await node_b.recv_type("job_assign")
    assert (second["job_id"], second["attempt_id"]) == (first["job_id"], 2)
    # A comes back on a new socket and answers attempt 1 there: accepted (PROTOCOL §3.5,
    # an earlier attempt's node), the first result wins.
    node_a2 = h.node()
    await node_a2.send(register_frame(["zh", "en"], node_id=a_id, max_concurrent_jobs=1))
    assert (await node_a2.recv())["type"] == "node_register_ack"
    await node_a2.send(heartbeat_frame(a_id, ["zh", "en"]))
    await node_a2.send(result_frame(first, a_id))
    result = await client.recv_type("translation_result")
    assert result["job_id"] == first["job_id"]
    # The next utterance sticks to B. B (capacity 1) is still running attempt 2: it must
    # be told to drop it (job_cancel) before it is given anything else (PROTOCOL §3.3).
    await client.send(audio_chunk_frame(session_id, 2))
    await client.send(audio_chunk_frame(session_id, 3, is_final=True, payload=""))
    frame = await node_b.recv_type("job_cancel", "job_assign", within=60)
    assert frame["type"] == "job_cancel" and frame["job_id"] == first["job_id"], (
        f"node B (capacity 1, still running {first['job_id']} attempt 2) got "
        f"{frame['type']} {frame['job_id']} (utterance {frame.get('utterance_index')})"
    )
