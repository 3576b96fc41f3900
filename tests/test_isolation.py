"""A failure while handling one event (a client frame, a node answer, a timer, a node
frame) is logged and answered, and the socket and everything else go on.

Each test injects a bug into one kind of handler (it raises) and checks what the peer
sees: an ``error INTERNAL_ERROR`` (once per session: the web client shows each ``error``
as an alert) or, for a job, its utterance's ``missing_result``, and then that the socket
still works.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from harness import MemoryHarness
from trio_scheduler.dispatch.session_jobs import SessionJobs
from trio_scheduler.store.memory import MemoryStore
from trio_scheduler.nodes.connection import NodeConnection
from trio_scheduler.sessions.segmenter import Segmenter
from trio_scheduler.sessions.session import SessionTask
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    result_frame,
)


def heartbeat(session_id: str) -> dict:
    return {"type": "client_heartbeat", "session_id": session_id, "timestamp": 1}


def failing_once(original):
    """``original`` with a bug on its first call."""
    calls = []

    async def method(self, *args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return await original(self, *args)

    return method


async def test_a_failing_client_frame_is_answered_once_and_the_session_goes_on(
    nursery, monkeypatch
):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    async def broken(self, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(SessionTask, "_on_audio_chunk", broken)
    for seq in range(3):
        await client.send(audio_chunk_frame(session_id, seq))
    await client.send(heartbeat(session_id))
    error = await client.recv()
    assert (error["type"], error["code"]) == ("error", "INTERNAL_ERROR")
    assert (await client.recv())["type"] == "server_heartbeat"  # one alert, not three
    monkeypatch.undo()
    await client.send(audio_chunk_frame(session_id, 3, is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 0


async def test_a_failing_node_answer_ends_its_utterance_and_the_session_goes_on(
    nursery, monkeypatch
):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    monkeypatch.setattr(SessionJobs, "_on_job_result",
                        failing_once(SessionJobs._on_job_result))
    for index in range(2):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
    missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "job_failed")
    assert (await client.recv_type("translation_result"))["utterance_index"] == 1
    await trio.testing.wait_all_tasks_blocked()
    assert await h.scheduler.store.in_use(node_id, 0) == 0  # the failed job's slot is back


@pytest.mark.parametrize("store", ["embedded", "over a network"])
async def test_a_failing_dispatch_report_ends_its_utterance_and_gives_the_slot_back(
    nursery, autojump_clock, monkeypatch, store
):
    """With the embedded store the session applies an attempt's report at once, else it
    comes through the inbox: a bug applying it costs that utterance only, either way."""
    h = await MemoryHarness.start(
        nursery, store=MemoryStore() if store == "embedded" else NetworkLikeStore())
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    monkeypatch.setattr(SessionJobs, "_apply_attempt", failing_once(SessionJobs._apply_attempt))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "job_failed")
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    before = []  # the only slot is free again: utterance 1 gets it
    while (job := await node.recv())["type"] != "job_assign" or job["utterance_index"] != 1:
        before.append((job["type"], job.get("utterance_index") or job.get("job_id")))
    # Utterance 0's job was dropped from the node's queue, or reached it and was cancelled.
    assert [kind for kind, _ in before if kind.startswith("job_")] in (
        [], ["job_assign", "job_cancel"])
    await node.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 1


class NetworkLikeStore(MemoryStore):
    """The embedded store, but declaring that it may wait (as Redis does)."""

    answers_at_once = False


async def test_a_failing_timer_rests_and_the_session_goes_on(nursery, autojump_clock,
                                                            monkeypatch):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    original = Segmenter.on_timer
    failures = []

    def broken_once(self, now):
        if not failures:
            failures.append(now)
            raise RuntimeError("a bug")
        return original(self, now)

    monkeypatch.setattr(Segmenter, "on_timer", broken_once)
    await client.send(audio_chunk_frame(session_id, 0))  # its pause cut is the timer
    error = await client.recv()
    assert (error["type"], error["code"]) == ("error", "INTERNAL_ERROR")
    await client.send(heartbeat(session_id))
    assert (await client.recv())["type"] == "server_heartbeat"
    # After the rest, the pause cut happens: the utterance was not lost.
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 0 and job["is_timeout_triggered"] is True
    assert failures


async def test_a_failing_node_frame_is_answered_and_the_connection_goes_on(
    nursery, monkeypatch
):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    monkeypatch.setattr(NodeConnection, "_partial_allowed",
                        failing_once(NodeConnection._partial_allowed))
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    common = {"job_id": job["job_id"], "node_id": node_id, "session_id": session_id,
              "trace_id": job["trace_id"], "utterance_index": 0}
    await node.send({"type": "asr_partial", **common, "text": "x", "is_final": False})
    error = await node.recv_type("error")
    assert error["code"] == "INTERNAL_ERROR"
    await node.send(heartbeat_frame(node_id))  # still registered, still heard
    await node.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 0


async def test_an_unreadable_result_fails_its_job_at_once(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    # Out of bounds (stdlib json writes what orjson will not):
    await node.send(json.dumps(result_frame(job, node_id, rerun_count=2**64)))
    assert (await node.recv_type("error"))["code"] == "INVALID_MESSAGE"
    with trio.fail_after(5):  # not after the 30 s job timeout
        missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "job_failed")
    await trio.testing.wait_all_tasks_blocked()
    assert await h.scheduler.store.in_use(node_id, 0) == 0
