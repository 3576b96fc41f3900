"""Frames handled in place by the socket's reader: the reader task outlives the session
(it lives in the server's protocol nursery), so the session must stop what the reader
runs for it, and a bug there must stay inside the session."""

from __future__ import annotations

import base64
import json

import pytest
import trio
import trio.testing
import trio_websocket

from conftest import make_config
from harness import MemoryHarness
from trio_scheduler.server import serve
from trio_scheduler.sessions import session as session_module
from trio_scheduler.sessions.session import ClientFrame, SessionTask, run_session_socket
from trio_scheduler.simulate.frames import one_way_init
from trio_scheduler.simulate.memory_socket import MemoryWebSocket, memory_websocket_pair
from trio_scheduler.simulate.peer import connect

BOUND_S = 10


def utterance(session_id: str, index: int) -> dict:
    return {"type": "utterance", "session_id": session_id, "utterance_index": index,
            "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
            "audio": base64.b64encode(b"\x00\x01" * 16000).decode(),
            "audio_format": "pcm16", "sample_rate": 16000}


class StallingWebSocket(MemoryWebSocket):
    """A browser that stops reading once ``stall`` is set: a send never completes."""

    stall = False

    async def send_message(self, message):
        if self.stall:
            await trio.sleep_forever()
        await super().send_message(message)


async def test_a_frame_handled_in_place_stops_when_the_session_is_stopped(
        nursery, autojump_clock, monkeypatch):
    """On shutdown the session's handler is cancelled but the reader is not: the frame it
    handles (blocked sending to a browser that stopped reading) must stop too, before
    cleanup, or it would go on to dispatch a job nobody releases."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    found = {}

    async def reader_stand_in(ws, inbox, clock_ms, session):
        found["session"], found["inbox"] = session, inbox
        await trio.sleep_forever()

    monkeypatch.setattr(session_module, "_read_client", reader_stand_in)
    server_ws, client_ws = memory_websocket_pair()
    server_ws.__class__ = StallingWebSocket
    handler_scope = trio.CancelScope()
    handler_ended = trio.Event()

    async def handler():
        with handler_scope:
            await run_session_socket(server_ws, h.scheduler.sessions)
        handler_ended.set()

    nursery.start_soon(handler)
    await trio.testing.wait_all_tasks_blocked()
    session, inbox = found["session"], found["inbox"]

    async def deliver(message: dict) -> None:  # what the socket's reader does
        raw = json.dumps(message)
        frame = ClientFrame(raw, 0, trio.current_time())
        if not await session.handle_in_place(frame):
            await inbox.put_client(frame, len(raw))

    with trio.fail_after(BOUND_S):
        await deliver(one_way_init("zh", "en"))
        assert json.loads(await client_ws.get_message())["type"] == "session_init_ack"
        await deliver(utterance(session.session_id, 1))  # waits for index 0
        await trio.testing.wait_all_tasks_blocked()
        server_ws.stall = True
        reader_done = trio.Event()

        async def reader():
            # Index 0 releases 0 and 1: job 0 is dispatched, and its DISPATCHED blocks in
            # the send before job 1 is started.
            await deliver(utterance(session.session_id, 0))
            reader_done.set()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert session._in_place
        handler_scope.cancel()  # the server stops
        await handler_ended.wait()
    assert reader_done.is_set()  # stopped before cleanup, not after
    assert list(session._jobs) == []
    assert h.scheduler.dispatcher._in_flight[node_id] == 0  # no slot left behind


async def test_a_bug_in_a_frame_handled_in_place_ends_that_session_only(monkeypatch):
    """An exception escaping session code run by the reader would end the reader task,
    which lives in the server-wide nursery: the whole server would stop."""
    armed = []
    next_deadline = SessionTask._next_deadline

    def buggy(self):
        if armed:
            armed.clear()
            raise RuntimeError("a bug")
        return next_deadline(self)

    monkeypatch.setattr(SessionTask, "_next_deadline", buggy)
    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            scheduler = await nursery.start(serve, make_config())
            url = f"ws://127.0.0.1:{scheduler.port}/ws/session"
            async with connect(url) as client:
                await client.send(one_way_init("zh", "en"))
                session_id = (await client.recv())["session_id"]
                armed.append(True)
                await client.send({"type": "client_heartbeat", "session_id": session_id,
                                   "timestamp": 1})
                with pytest.raises(trio_websocket.ConnectionClosed):
                    while True:
                        await client.recv()
            async with connect(url) as client:  # everyone else is still served
                await client.send(one_way_init("zh", "en"))
                assert (await client.recv())["type"] == "session_init_ack"
            nursery.cancel_scope.cancel()
