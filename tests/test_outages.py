"""Outages (no node, a slow or frozen store) cost the browser one alert, never a stall.

Driven by Trio's MockClock over in-memory sockets.
"""

from __future__ import annotations

import trio
import trio.testing

from harness import MemoryHarness
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    one_way_init,
    result_frame,
)
from trio_scheduler.store.base import StoreUnavailable
from trio_scheduler.store.memory import MemoryStore


async def frames_until_outcomes(client, count: int) -> list[dict]:
    """Every frame the client gets until ``count`` utterances have an outcome."""
    frames, outcomes = [], 0
    while outcomes < count:
        frame = await client.recv()
        frames.append(frame)
        outcomes += frame["type"] in ("translation_result", "missing_result")
    return frames


def of_type(frames: list[dict], kind: str) -> list[dict]:
    return [f for f in frames if f["type"] == kind]


async def test_a_job_waits_for_a_node_to_connect_instead_of_failing(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    await trio.sleep(5)  # the node agent reconnects 5 s after a scheduler restart
    node, node_id = await h.ready_node()
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 0
    await node.send(result_frame(job, node_id))
    frames = await frames_until_outcomes(client, 1)
    assert of_type(frames, "error") == []
    assert of_type(frames, "translation_result")[0]["utterance_index"] == 0


async def test_an_outage_is_one_alert_and_the_next_outage_alerts_again(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    started = trio.current_time()
    for seq in range(3):  # three utterances during the outage
        await client.send(audio_chunk_frame(session_id, seq, is_final=True))
        await trio.sleep(1)
    frames = await frames_until_outcomes(client, 3)
    assert [f["code"] for f in of_type(frames, "error")] == ["NO_AVAILABLE_NODE"]
    missing = of_type(frames, "missing_result")
    assert [(m["utterance_index"], m["reason"]) for m in missing] == [
        (0, "job_failed"), (1, "job_failed"), (2, "job_failed")
    ]
    # Each waited [jobs] no_node_wait_ms (8 s) after its hangover (200 ms).
    assert trio.current_time() - started >= 2 + 8.2

    node, node_id = await h.ready_node()  # the outage ends
    await client.send(audio_chunk_frame(session_id, 3, is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    frames = await frames_until_outcomes(client, 1)
    assert of_type(frames, "error") == []

    await node.ws.aclose()  # a second outage
    await h.wait_node_status(node_id, None)
    await client.send(audio_chunk_frame(session_id, 4, is_final=True))
    frames = await frames_until_outcomes(client, 1)
    assert [f["code"] for f in of_type(frames, "error")] == ["NO_AVAILABLE_NODE"]


async def test_waiting_for_a_slot_pauses_the_browser_with_an_explicit_resume_time(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery, jobs={"backpressure_pause_ms": 1500})
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    first = await node.recv_type("job_assign")
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    pause = await client.recv_type("backpressure")
    assert pause == {"type": "backpressure", "action": "PAUSE", "resume_after_ms": 1500}
    await node.send(result_frame(first, node_id))
    second = await node.recv_type("job_assign")
    assert second["utterance_index"] == 1


class StallingStore(MemoryStore):
    """A store whose reservations hang until the test lets them through (or fail them)."""

    answers_at_once = False  # as a store over the network

    def __init__(self) -> None:
        super().__init__()
        self.stalled = True
        self.fail = False
        self.waiting = 0
        self._resume = trio.Event()
        self._stalled_one = trio.Event()

    async def next_stall(self) -> None:
        """Wait until a reservation hangs in the store."""
        with trio.fail_after(60):
            await self._stalled_one.wait()
        self._stalled_one = trio.Event()

    def resume(self, *, fail: bool = False) -> None:
        self.fail = fail
        self._resume.set()
        self._resume = trio.Event()

    async def reserve(self, *args):
        if self.stalled:
            self.waiting += 1
            self._stalled_one.set()
            try:
                await self._resume.wait()
            finally:
                self.waiting -= 1
            if self.fail:
                raise StoreUnavailable("store did not answer in time")
        return await super().reserve(*args)


async def stalled_first_utterance(nursery):
    """A node, a session, and the session's first reservation hanging in the store."""
    store = StallingStore()
    h = await MemoryHarness.start(nursery, store=store)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    await store.next_stall()
    return h, store, node, node_id, client, session_id


async def test_a_session_keeps_answering_while_its_reservation_hangs(nursery, autojump_clock):
    h, store, node, node_id, client, session_id = await stalled_first_utterance(nursery)
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    with trio.move_on_after(0.01):  # virtual time: no store call is answered meanwhile
        beat = await client.recv_type("server_heartbeat")
    assert beat["session_id"] == session_id
    assert store.waiting == 1
    store.stalled = False
    store.resume()
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 0


async def test_a_store_outage_is_one_alert_and_each_utterance_gets_an_outcome(
    nursery, autojump_clock
):
    store = StallingStore()
    h = await MemoryHarness.start(nursery, store=store)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    for seq in range(3):
        await client.send(audio_chunk_frame(session_id, seq, is_final=True))
        await store.next_stall()
        store.resume(fail=True)
    frames = await frames_until_outcomes(client, 3)
    assert [f["code"] for f in of_type(frames, "error")] == ["SCHEDULER_DEPENDENCY_DOWN"]
    assert [m["reason"] for m in of_type(frames, "missing_result")] == ["job_failed"] * 3
    errors = [e["error_code"] for e in of_type(frames, "ui_event") if e["event"] == "ERROR"]
    assert errors == ["SCHEDULER_DEPENDENCY_DOWN"] * 3
    store.stalled = False
    await client.send(audio_chunk_frame(session_id, 3, is_final=True))
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 3


async def test_a_client_gone_while_its_attempt_lands_leaves_no_slot(nursery, autojump_clock):
    h, store, node, node_id, client, session_id = await stalled_first_utterance(nursery)
    store.stalled = False
    store.resume()  # the reservation lands as the browser leaves
    await client.ws.aclose()
    job = await node.recv_type("job_assign")
    cancel = await node.recv_type("job_cancel")
    assert cancel["job_id"] == job["job_id"]
    await trio.testing.wait_all_tasks_blocked()
    assert await store.in_use(node_id, 0) == 0
    assert h.scheduler.dispatcher.routed_jobs == 0
    assert h.scheduler.dispatcher.in_flight(node_id) == 0
