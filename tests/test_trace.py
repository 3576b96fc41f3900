"""Trace recording and replay."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
import trio.testing

from harness import MemoryHarness
from trio_scheduler.sessions.audio import plan_a_packet_count
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame
from trio_scheduler.simulate.replay import load_trace, outcomes, replay
from trio_scheduler.trace import redact_audio

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["two_way_basic", "busy_and_failures"])
async def test_shipped_traces_replay_with_the_recorded_outcomes(nursery, autojump_clock, name):
    trace = load_trace(DATA / f"{name}.jsonl")
    h = await MemoryHarness.start(nursery)
    reports = await replay(trace, h.connector(), speed=1.0, settle_s=60)
    assert reports and all(r.expected for r in reports)
    for report in reports:
        assert report.got == report.expected


async def test_replay_notices_a_different_outcome(nursery, autojump_clock):
    trace = load_trace(DATA / "two_way_basic.jsonl")
    # A scheduler that cannot serve the session's languages gives other outcomes.
    h = await MemoryHarness.start(nursery, nodes={"required_services": ["asr", "tone"]})
    reports = await replay(trace, h.connector(), speed=1.0, settle_s=60)
    assert not all(r.matches for r in reports)


async def test_recording_writes_every_frame_with_redacted_audio(nursery, autojump_clock,
                                                                 tmp_path):
    path = tmp_path / "trace.jsonl"
    h = await MemoryHarness.start(nursery, trace={"path": str(path)})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    chunk = audio_chunk_frame(session_id, 0)
    await client.send(chunk)
    await client.send(audio_chunk_frame(session_id, 1, is_final=True, payload=""))
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    await client.recv_type("translation_result")
    # A frame out is recorded once its send has returned, which the server's task may not
    # have seen yet when the client has the frame.
    await trio.testing.wait_all_tasks_blocked()
    await h.scheduler.recorder.wait_written()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    kinds = {(e["kind"], e["dir"], e["frame"]["type"]) for e in lines}
    assert {("session", "in", "session_init"), ("session", "out", "session_init_ack"),
            ("session", "in", "audio_chunk"), ("node", "out", "job_assign"),
            ("node", "in", "job_result"), ("session", "out", "translation_result"),
            ("node", "in", "node_register"), ("node", "in", "node_heartbeat")} <= kinds
    recorded_chunk = next(e["frame"] for e in lines if e["frame"]["type"] == "audio_chunk")
    original, redacted = (base64.b64decode(x) for x in (chunk["payload"],
                                                          recorded_chunk["payload"]))
    assert len(redacted) == len(original) and redacted != original
    assert plan_a_packet_count(redacted) == plan_a_packet_count(original) == 13
    times = [e["t"] for e in lines]
    assert times == sorted(times)  # written in the order recorded
    assert all(isinstance(e["conn"], int) for e in lines)
    session = load_trace(path)
    assert any(outcomes(c.received()) == [("result", 0)] for c in session.values())


def test_redaction_keeps_length_of_unframed_audio():
    pcm = base64.b64encode(b"\x07" * 33).decode()
    assert base64.b64decode(redact_audio(pcm)) == bytes(33)
    assert redact_audio("not base64!") == "not base64!"
