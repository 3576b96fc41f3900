"""The session pipeline: hangovers, short-utterance filter, groups, rate limit, the
``utterance`` path, partials, and a minute of streaming at the web client's pace."""

from __future__ import annotations

import base64
import itertools
import math

import pytest
import trio
import trio.testing
import trio_websocket

from harness import MemoryHarness
from trio_scheduler.dispatch.session_jobs import AttemptDone
from trio_scheduler.sessions.groups import GroupPart, GroupTracker
from trio_scheduler.sessions.inbox import SessionInbox
from trio_scheduler.sessions.limits import RateLimiter, Verdict
from trio_scheduler.sessions.segmenter import FinalizeReason, HangoverQueue, Segment
from trio_scheduler.store.memory import MemoryStore
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    opus_chunk_payload,
    register_frame,
    result_frame,
    silent_chunk_payload,
)

# -- pure parts ---------------------------------------------------------------------------


def segment(index: int, reason: FinalizeReason, at: float) -> Segment:
    return Segment(index, b"x", 20, reason, 0, "t", None, None, at, at)


def test_hangover_queue_holds_by_reason_and_keeps_order():
    queue = HangoverQueue(auto_ms=150, manual_ms=200)
    assert queue.hold(segment(0, FinalizeReason.IS_FINAL, 1.0)) == []
    assert queue.next_deadline() == pytest.approx(1.2)
    assert queue.release_due(1.19) == []
    assert [s.utterance_index for s in queue.release_due(1.2)] == [0]
    assert queue.hold(segment(1, FinalizeReason.TIMEOUT, 5.0)) == []
    assert queue.next_deadline() == pytest.approx(5.15)
    # MaxLength has no hangover and releases what is held before it, in order.
    released = queue.hold(segment(2, FinalizeReason.MAX_LENGTH, 5.05))
    assert [s.utterance_index for s in released] == [1, 2]
    assert queue.next_deadline() == math.inf
    assert queue.hold(segment(3, FinalizeReason.MAX_DURATION, 9.0)) == []
    assert queue.next_deadline() == pytest.approx(9.15)  # MaxDuration: the auto hangover
    assert [s.utterance_index for s in queue.release_all()] == [3]


def test_group_tracker_rules():
    ids = iter(["g1", "g2", "g3", "g4"])
    groups = GroupTracker(window_s=2.0, max_parts=3, new_group_id=lambda: next(ids))
    assert groups.assign(0.0, has_speech=False) is None
    assert groups.assign(0.0, True) == GroupPart("g1", 0)
    groups.playback_started("g1", 1.0)
    assert groups.assign(5.0, True) == GroupPart("g1", 1)  # playing: same group
    groups.playback_ended("g1", 6.0)
    assert groups.assign(7.9, True) == GroupPart("g1", 2)  # within 2 s of playback end
    assert groups.assign(7.95, True) == GroupPart("g2", 0)  # g1 has its 3 parts
    groups.playback_started("g2", 8.0)
    groups.playback_ended("g2", 8.0)
    assert groups.assign(10.5, True) == GroupPart("g3", 0)  # 2.5 s after playback ended


def test_playbacks_are_matched_by_group():
    groups = GroupTracker(max_playback_s=30.0)
    groups.playback_started("g1", 0.0)
    groups.playback_started("g2", 1.0)
    groups.playback_ended("g1", 2.0)
    assert groups.playing(2.0)  # g2 still plays
    groups.playback_ended("g2", 3.0)
    assert not groups.playing(3.0)
    groups.playback_ended("never-started", 4.0)  # harmless
    assert not groups.playing(4.0)
    groups.playback_started("g3", 5.0)
    groups.playback_started("g3", 5.5)  # two parts of one group overlap
    groups.playback_ended("g3", 6.0)
    assert groups.playing(6.0)
    groups.playback_ended("g3", 7.0)
    assert not groups.playing(7.0)


def test_a_lost_playback_end_is_forgotten_after_max_playback():
    ids = iter(["g1", "g2"])
    groups = GroupTracker(window_s=2.0, new_group_id=lambda: next(ids), max_playback_s=30.0)
    assert groups.assign(0.0, True).group_id == "g1"
    groups.playback_started("lost", 0.0)  # its end never comes
    assert groups.playing(30.0) and not groups.playing(30.1)
    groups.playback_started("g1", 40.0)
    groups.playback_ended("g1", 41.0)
    assert groups.assign(44.0, True).group_id == "g2"  # the window expired after g1's end


def test_tracked_playbacks_are_bounded():
    groups = GroupTracker(max_playbacks=2)
    for i in range(5):
        groups.playback_started(f"g{i}", 0.0)
    groups.playback_ended("g3", 1.0)
    groups.playback_ended("g4", 1.0)
    assert not groups.playing(1.0)  # g0..g2 were dropped as the oldest


def test_rate_limiter_refuses_tells_once_per_second_then_closes():
    limiter = RateLimiter(rate=5)
    assert [limiter.check(0.0) for _ in range(5)] == [Verdict.ALLOW] * 5
    assert limiter.check(0.0) is Verdict.REFUSE
    assert limiter.check(0.0) is Verdict.REFUSE_QUIETLY
    assert limiter.check(0.2) is Verdict.ALLOW  # one token refilled
    verdicts = [limiter.check(0.2) for _ in range(5)]
    assert verdicts == [Verdict.REFUSE_QUIETLY] * 4 + [Verdict.CLOSE]
    calm = RateLimiter(rate=5)
    assert all(calm.check(t / 5) is Verdict.ALLOW for t in range(100))


# -- the web client's habits ---------------------------------------------------------------


async def test_silence_burst_makes_no_job_and_no_error(nursery, autojump_clock):
    """The web client's bursts after a pause: one 130-byte chunk of 13 silent 8-byte Opus
    packets (260 ms, above min_utterance_ms) plus is_final, every 256 ms."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    tiny = silent_chunk_payload()
    assert len(base64.b64decode(tiny)) == 130
    for seq in range(6):
        await client.send(audio_chunk_frame(session_id, 2 * seq, payload=tiny))
        await client.send(audio_chunk_frame(session_id, 2 * seq + 1, is_final=True, payload=""))
        await trio.sleep(0.256)
    await trio.sleep(10)
    await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
    assert (await client.recv())["type"] == "server_heartbeat"  # nothing came before it
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 0
    session = h.scheduler.sessions.sessions[session_id]
    assert session._segmenter.discarded_silent == 6
    # A real utterance afterwards still gets index 0.
    await client.send(audio_chunk_frame(session_id, 100, is_final=True))
    assert (await node.recv_type("job_assign"))["utterance_index"] == 0


async def test_chunks_during_hangover_belong_to_the_next_utterance(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    first, second = opus_chunk_payload(fill=1), opus_chunk_payload(fill=2)
    await client.send(audio_chunk_frame(session_id, 0, payload=first))
    await client.send(audio_chunk_frame(session_id, 1, is_final=True, payload=""))
    cut_at = trio.current_time()
    await trio.sleep(0.1)  # inside the 200 ms hangover
    await client.send(audio_chunk_frame(session_id, 2, payload=second))
    job0 = await node.recv_type("job_assign")
    assert trio.current_time() - cut_at == pytest.approx(0.2)
    assert job0["audio"] == first
    await client.send(audio_chunk_frame(session_id, 3, is_final=True, payload=""))
    job1 = await node.recv_type("job_assign")
    assert (job1["utterance_index"], job1["audio"]) == (1, second)


async def test_playback_suspends_the_pause_cut(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    playback = {"session_id": session_id, "trace_id": "t", "group_id": "g"}
    await client.send({"type": "tts_started", "ts_start_ms": 1, **playback})
    await client.send(audio_chunk_frame(session_id, 0))  # the mic hears the TTS
    await trio.sleep(10)  # no pause cut while playing
    await client.send({"type": "tts_play_ended", "ts_end_ms": 2, **playback})
    ended_at = trio.current_time()
    job = await node.recv_type("job_assign")
    assert job["is_timeout_triggered"] is True
    assert trio.current_time() - ended_at == pytest.approx(3.15)  # pause restarted at end


async def test_results_carry_groups(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    parts = []
    for index in range(3):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
        result = await client.recv_type("translation_result")
        parts.append((result["group_id"], result["part_index"]))
        playback = {"session_id": session_id, "trace_id": "t", "group_id": result["group_id"]}
        await client.send({"type": "tts_started", "ts_start_ms": 1, **playback})
        await client.send({"type": "tts_play_ended", "ts_end_ms": 2, **playback})
        await trio.sleep(1.0 if index == 0 else 3.0)
    (g0, p0), (g1, p1), (g2, p2) = parts
    assert g0 == g1 and (p0, p1) == (0, 1)  # within 2 s of playback end
    assert g2 != g1 and p2 == 0  # 3 s later: a new group


async def test_rate_limit_error_then_close_1008(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, sessions={"max_messages_per_s": 10})
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    beat = {"type": "client_heartbeat", "session_id": session_id, "timestamp": 1}
    for _ in range(9):
        await client.send(beat)
    for _ in range(9):
        assert (await client.recv())["type"] == "server_heartbeat"
    with pytest.raises(trio_websocket.ConnectionClosed):
        for _ in range(100):  # it keeps going until the server hangs up
            await client.send(beat)
    received = []
    with pytest.raises(trio_websocket.ConnectionClosed):
        while True:
            received.append(await client.recv())
    errors = [f for f in received if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["RATE_LIMITED"]  # told once, not per message
    assert client.ws.closed.code == 1008


async def test_frames_that_find_the_session_idle_are_handled_where_they_are_read(
        nursery, autojump_clock, monkeypatch):
    """A browser's frames at its pace never queue in the inbox (the reader handles each
    itself: one wake-up per frame instead of two), and a close decided there (after
    ``session_close``) is still made, by the session task."""
    queued = []
    put_client_nowait = SessionInbox.put_client_nowait

    def counting(self, event, size=0):
        queued.append(event)
        return put_client_nowait(self, event, size)

    monkeypatch.setattr(SessionInbox, "put_client_nowait", counting)
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    for seq in range(8):
        await client.send(audio_chunk_frame(session_id, seq, is_final=seq == 7))
        await trio.sleep(0.256)
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    assert (await client.recv_type("translation_result"))["utterance_index"] == 0
    await client.send({"type": "session_close", "session_id": session_id, "reason": "done"})
    assert (await client.recv_type("session_close_ack"))["session_id"] == session_id
    with pytest.raises(trio_websocket.ConnectionClosed):
        while True:
            await client.recv()
    assert client.ws.closed.code == 1000
    assert queued == []


async def test_asr_partial_forwarded_at_once(nursery):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    job = await node.recv_type("job_assign")
    await client.recv_type("ui_event")  # DISPATCHED
    await node.send({"type": "asr_partial", "job_id": job["job_id"], "node_id": node_id,
                     "session_id": session_id, "utterance_index": 0, "text": "你",
                     "is_final": False, "trace_id": job["trace_id"]})
    event = await client.recv()
    partial = await client.recv()
    assert event["type"] == "ui_event" and event["event"] == "ASR_PARTIAL"
    assert partial == {"type": "asr_partial", "session_id": session_id, "utterance_index": 0,
                       "job_id": job["job_id"], "text": "你", "is_final": False,
                       "trace_id": job["trace_id"]}


# -- the ``utterance`` path ------------------------------------------------------------------


def utterance(session_id: str, index: int, **extra) -> dict:
    pcm = b"\x00\x01" * 16000  # 1 s of PCM16 at 16 kHz
    return {"type": "utterance", "session_id": session_id, "utterance_index": index,
            "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
            "audio": base64.b64encode(pcm).decode(), "audio_format": "pcm16",
            "sample_rate": 16000, **extra}


async def test_utterances_dispatch_in_index_order(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1))
    await client.send(utterance(session_id, 2))
    await trio.sleep(1)
    await client.send(utterance(session_id, 0))
    indexes = [(await node.recv_type("job_assign"))["utterance_index"] for _ in range(3)]
    assert indexes == [0, 1, 2]


async def test_utterance_gap_times_out_and_duplicates_are_idempotent(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1, pipeline={"use_asr": True, "use_nmt": False,
                                                          "use_tts": False}))
    sent_at = trio.current_time()
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 1
    assert trio.current_time() - sent_at == pytest.approx(5.0)  # waited for index 0
    assert job["pipeline"] == {"use_asr": True, "use_nmt": False, "use_tts": False,
                               "use_semantic": False, "use_tone": False}
    assert job["audio_format"] == "pcm16" and job["is_manual_cut"] is True
    await client.send(utterance(session_id, 1))  # duplicate: same job, not re-sent
    await client.send(utterance(session_id, 0))  # late: its slot was skipped
    await client.send(utterance(session_id, 2))
    assert (await node.recv_type("job_assign"))["utterance_index"] == 2
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 2


async def test_silent_opus_utterance_is_reported_as_silence(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    opus = {"audio_format": "opus", "sample_rate": 16000}
    await client.send({**utterance(session_id, 0), **opus, "audio": silent_chunk_payload(50)})
    await client.send({**utterance(session_id, 1), **opus, "audio": opus_chunk_payload()})
    missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "silence_detected")
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 1
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 1


async def test_too_short_utterance_is_reported_as_silence(nursery, autojump_clock):
    """As on the audio_chunk path, an utterance below min_utterance_ms makes no job; the
    client numbered it, so its index is reported as silence and delivery moves on."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({**utterance(session_id, 0), "audio": ""})
    await client.send({**utterance(session_id, 1),
                       "audio": base64.b64encode(b"\x00" * 320).decode()})  # 10 ms
    await client.send(utterance(session_id, 2))
    missing = [await client.recv_type("missing_result") for _ in range(2)]
    assert [(m["utterance_index"], m["reason"]) for m in missing] == [
        (0, "silence_detected"), (1, "silence_detected")]
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 2
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 1


async def test_audio_waiting_for_a_lower_index_is_bounded(nursery, autojump_clock):
    one_second = len(base64.b64decode(utterance("s", 0)["audio"]))  # 32000 bytes
    h = await MemoryHarness.start(nursery, sessions={"max_waiting_utterance_bytes": 2 * one_second})
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1))
    await client.send(utterance(session_id, 2))
    await client.send(utterance(session_id, 3))  # a third second would wait: refused
    error = await client.recv_type("error")
    assert (error["code"], error["details"]) == ("RATE_LIMITED", {"field": "utterance_index"})
    await client.send(utterance(session_id, 0))  # in order: never counted
    indexes = [(await node.recv_type("job_assign"))["utterance_index"] for _ in range(3)]
    assert indexes == [0, 1, 2]
    await client.send(utterance(session_id, 3))  # nothing waits now: accepted
    assert (await node.recv_type("job_assign"))["utterance_index"] == 3


@pytest.mark.parametrize("first", ["audio_chunk", "utterance"])
async def test_a_session_uses_one_audio_path(nursery, autojump_clock, first):
    """Both paths number utterances from 0: mixing them would give one index two jobs."""
    h = await MemoryHarness.start(nursery)
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    chunk = audio_chunk_frame(session_id, 0, is_final=True)
    whole = utterance(session_id, 0)
    await client.send(chunk if first == "audio_chunk" else whole)
    await client.send(whole if first == "audio_chunk" else chunk)
    error = await client.recv_type("error")
    assert (error["code"], error["details"]) == ("INVALID_MESSAGE", {"field": "type"})
    assert first in error["message"]
    assert (await node.recv_type("job_assign"))["utterance_index"] == 0
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 1


# -- playback and capacity waits ------------------------------------------------------------


def playback(session_id: str, kind: str, group_id: str) -> dict:
    field = "ts_start_ms" if kind == "tts_started" else "ts_end_ms"
    return {"type": kind, "session_id": session_id, "trace_id": "t", "group_id": group_id,
            field: 1}


async def test_a_lost_playback_end_does_not_wedge_later_pause_cuts(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(playback(session_id, "tts_started", "g1"))  # its end never comes
    await trio.sleep(35)  # past [segmentation] max_playback_suspend_ms
    await node.send(heartbeat_frame(node_id))
    await client.send(playback(session_id, "tts_started", "g2"))
    await client.send(audio_chunk_frame(session_id, 0))
    await client.send(playback(session_id, "tts_play_ended", "g2"))
    ended = trio.current_time()
    job = await node.recv_type("job_assign")
    assert job["is_timeout_triggered"] is True
    assert trio.current_time() - ended == pytest.approx(3.15)  # pause counted from g2's end


class SlowReserveStore(MemoryStore):
    """A store round trip that takes a while, as over a network."""

    answers_at_once = False

    async def reserve(self, *args):
        await trio.sleep(0.3)
        return await super().reserve(*args)


@pytest.mark.parametrize("store, reports_through_inbox", [
    (MemoryStore, 0), (SlowReserveStore, 2)])
async def test_only_an_attempt_in_a_child_task_reports_through_the_inbox(
        nursery, autojump_clock, monkeypatch, store, reports_through_inbox):
    """With a store that answers at once the session applies the report itself: a turn
    of its inbox per job was a good part of its cost."""
    reports = []
    put_node = SessionInbox.put_node

    def counting_put_node(self, event, **kwargs):
        reports.extend([event] if isinstance(event, AttemptDone) else [])
        return put_node(self, event, **kwargs)

    monkeypatch.setattr(SessionInbox, "put_node", counting_put_node)
    h = await MemoryHarness.start(nursery, store=store())
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    for index in range(2):
        await client.send(audio_chunk_frame(session_id, index, is_final=True))
        job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
        assert (await client.recv_type("translation_result"))["utterance_index"] == index
    assert len(reports) == reports_through_inbox


async def test_a_waiting_utterance_is_not_overtaken_by_a_later_one(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, store=SlowReserveStore())
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    first = await node.recv_type("job_assign")
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))  # waits: node full
    await client.recv_type("backpressure")
    await client.send(audio_chunk_frame(session_id, 2, is_final=True))  # in its hangover
    await trio.sleep(0.1)
    await node.send(result_frame(first, node_id))  # the slot frees during index 2's hangover
    second = await node.recv_type("job_assign")
    assert second["utterance_index"] == 1
    await node.send(result_frame(second, node_id))
    third = await node.recv_type("job_assign")
    assert third["utterance_index"] == 2


async def test_jobs_queued_behind_a_waiting_one_use_every_free_slot(nursery, autojump_clock):
    """Jobs that queued behind an earlier waiting one still get the free slots, in order,
    as soon as they free."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=2)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    for index in range(4):
        await client.send(utterance(session_id, index))
    running = [await node.recv_type("job_assign") for _ in range(2)]
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.dispatcher.waiting == 2
    for job in running:
        await node.send(result_frame(job, node_id))
    started = trio.current_time()
    rest = [await node.recv_type("job_assign") for _ in range(2)]
    assert [job["utterance_index"] for job in rest] == [2, 3]
    assert trio.current_time() - started < 1  # not after the 10 s pending timeout


# -- a minute of streaming ------------------------------------------------------------------


async def test_a_minute_of_streaming_at_the_web_clients_pace(nursery, autojump_clock):
    """60 s of 256 ms chunks with pauses, manual cuts and one long utterance; every cut has
    the right flags, padding, turn and index, and the client gets every result in order."""
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=8)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    jobs: list[dict] = []
    answered: list[int] = []

    async def answer_jobs():
        async for job in node.frames("job_assign"):
            jobs.append(job)
            # The long utterance's first part is slow: its successor's result comes first.
            delay = 3.0 if job["utterance_index"] == 2 else 0.3
            nursery.start_soon(answer_later, job, delay)

    async def answer_later(job, delay):
        await trio.sleep(delay)
        answered.append(job["utterance_index"])
        await node.send(result_frame(job, node_id))

    async def heartbeat():
        while True:
            await trio.sleep(15)
            await node.send(heartbeat_frame(node_id))

    nursery.start_soon(answer_jobs)
    nursery.start_soon(heartbeat)
    seq = 0

    async def speak(chunks: int, *, final: bool) -> None:
        nonlocal seq
        for _ in range(chunks):
            await client.send(audio_chunk_frame(session_id, seq,
                                                client_timestamp_ms=1_700_000_000_000 + seq))
            seq += 1
            await trio.sleep(0.256)
        if final:
            await client.send(audio_chunk_frame(session_id, seq, is_final=True, payload=""))
            seq += 1

    # (what the speaker does, expected cuts as (flag, padding))
    await speak(8, final=True)          # 0: manual
    await speak(10, final=False)        # 1: pause -> timeout cut
    await trio.sleep(4.0)
    await speak(45, final=True)         # 2,3: 10 s max duration (39 × 260 ms), then manual
    await speak(6, final=True)          # 4: manual
    await trio.sleep(1.0)
    await speak(12, final=False)        # 5: timeout
    await trio.sleep(5.0)
    await speak(20, final=True)         # 6: manual
    assert trio.current_time() >= 30
    results = []
    while len(results) < 7:
        results.append(await client.recv_type("translation_result"))
    assert answered.index(3) < answered.index(2)  # the node answered out of order
    assert [r["utterance_index"] for r in results] == list(range(7))  # delivered in order
    assert [job["utterance_index"] for job in jobs] == list(range(7))  # dispatched in order
    flags = []
    for job in jobs:
        flag = next((f for f in ("is_manual_cut", "is_timeout_triggered",
                                 "is_max_duration_triggered") if job.get(f)), None)
        flags.append((flag, job["padding_ms"]))
    assert flags == [
        ("is_manual_cut", 280), ("is_timeout_triggered", 220),
        ("is_max_duration_triggered", 220), ("is_manual_cut", 280), ("is_manual_cut", 280),
        ("is_timeout_triggered", 220), ("is_manual_cut", 280),
    ]
    turns = [job["turn_id"] for job in jobs]
    assert turns[2] == turns[3]  # the long utterance and the cut that ends it
    assert len(set(turns)) == 6
    assert all(r["network_timings"]["web_to_scheduler_ms"] is not None for r in results)
    await trio.sleep(30)  # a further half minute of silence changes nothing
    assert len(jobs) == 7


async def test_disconnect_leaves_no_task_or_record_behind(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    await trio.testing.wait_all_tasks_blocked()
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    await node.recv_type("job_assign")
    await client.send(audio_chunk_frame(session_id, 1))  # buffered audio, pause timer on
    other = h.session()
    other_id = await h.session_id_for(other, one_way_init("zh", "en"))
    await other.send(audio_chunk_frame(other_id, 0, is_final=True))
    await other.recv_type("backpressure")  # a waiting job
    await other.ws.aclose()
    await client.ws.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before
    assert h.scheduler.sessions.sessions == {}
    assert h.scheduler.dispatcher.routed_jobs == 0
    assert h.scheduler.dispatcher.waiting == 0
    assert await h.scheduler.store.in_use(node_id, 0) == 0


async def test_pending_results_are_bounded_in_the_session(nursery, autojump_clock):
    """[results] max_pending reaches the session: past it, the oldest gap is skipped at once
    instead of after the gap timeout."""
    h = await MemoryHarness.start(nursery, results={"max_pending": 2})
    node, node_id = await h.ready_node(max_concurrent_jobs=8)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    for index in range(4):
        await client.send(utterance(session_id, index))
    jobs = [await node.recv_type("job_assign") for _ in range(4)]
    answered_at = trio.current_time()
    for job in jobs[1:]:  # index 0 never answers
        await node.send(result_frame(job, node_id))
    missing = await client.recv_type("missing_result")
    assert (missing["utterance_index"], missing["reason"]) == (0, "gap_timeout")
    assert trio.current_time() - answered_at < 1  # not the 5 s gap timeout
    results = [await client.recv_type("translation_result") for _ in range(3)]
    assert [r["utterance_index"] for r in results] == [1, 2, 3]


async def test_close_drain_delivers_what_waits_behind_a_gap(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, sessions={"close_drain_ms": 1000})
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 0))
    await client.send(utterance(session_id, 1))
    jobs = [await node.recv_type("job_assign") for _ in range(2)]
    await node.send(result_frame(jobs[1], node_id))  # index 0 never answers
    await trio.testing.wait_all_tasks_blocked()
    await client.send({"type": "session_close", "session_id": session_id, "reason": "done"})
    frames = []
    while (frame := await client.recv())["type"] != "session_close_ack":
        frames.append(frame)
    reported = [(f["type"], f["utterance_index"]) for f in frames
                if f["type"] in ("missing_result", "translation_result")]
    assert reported == [("missing_result", 0), ("translation_result", 1)]
    cancel = await node.recv_type("job_cancel")
    assert cancel["job_id"] == jobs[0]["job_id"]


async def test_web_to_scheduler_is_measured_from_the_utterances_first_chunk(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery)
    base_ms = 1_800_000_000_000

    def wall_ms() -> int:  # the scheduler's wall clock, driven by the mock clock
        return base_ms + round(trio.current_time() * 1000)

    h.scheduler.sessions.clock_ms = h.scheduler.dispatcher.clock_ms = wall_ms
    node, node_id = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    # The browser's clock is 40 ms behind on arrival of the first chunk.
    await client.send(audio_chunk_frame(session_id, 0, client_timestamp_ms=wall_ms() - 40))
    await trio.sleep(1)
    await client.send(audio_chunk_frame(session_id, 1, client_timestamp_ms=wall_ms() - 5,
                                        is_final=True))
    job = await node.recv_type("job_assign")
    await node.send(result_frame(job, node_id))
    result = await client.recv_type("translation_result")
    assert result["network_timings"]["web_to_scheduler_ms"] == 40


async def test_a_new_job_is_not_held_behind_a_redispatch_that_excludes_an_idle_node(
    nursery, autojump_clock
):
    """Index 0 is re-dispatched after its node dropped and waits (it may not go back to
    that node); index 1 may, so it is not held behind index 0."""
    h = await MemoryHarness.start(nursery)
    busy, _ = await h.ready_node(["zh", "en"], max_concurrent_jobs=1)
    other = h.session()
    other_id = await h.session_id_for(other, one_way_init("zh", "en"))
    await other.send(audio_chunk_frame(other_id, 0, is_final=True))
    await busy.recv_type("job_assign")  # that node is now full
    lost, lost_id = await h.ready_node(["zh", "en"], max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    await lost.recv_type("job_assign")
    await lost.ws.aclose()  # index 0 is re-dispatched without that node: it waits
    await client.recv_type("backpressure")
    back = h.node()
    await back.send(register_frame(["zh", "en"], node_id=lost_id, max_concurrent_jobs=1))
    await back.recv_type("node_register_ack")
    await h.wait_node_status(lost_id, "ready")
    await client.send(audio_chunk_frame(session_id, 1, is_final=True))
    job = await back.recv_type("job_assign", within=1)
    assert job["utterance_index"] == 1


async def test_a_long_48khz_utterance_is_accepted(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    pcm = b"\x00\x01" * 48000 * 6  # 6 s at 48 kHz: larger than the chunk path's MaxLength
    await client.send({**utterance(session_id, 0), "audio": base64.b64encode(pcm).decode(),
                       "sample_rate": 48000})
    job = await node.recv_type("job_assign")
    assert (job["utterance_index"], job["sample_rate"]) == (0, 48000)


async def test_held_back_jobs_ask_again_when_the_one_ahead_times_out(nursery, autojump_clock):
    """The node is full in the store for 20 s (a reservation a crashed instance left): no
    release of ours will ever wake the waiting jobs. When the job ahead times out, the
    next one asks the store itself, so the session gets going once the slot is back."""
    h = await MemoryHarness.start(nursery)
    base_ms = 1_800_000_000_000

    def wall_ms() -> int:
        return base_ms + round(trio.current_time() * 1000)

    h.scheduler.sessions.clock_ms = h.scheduler.dispatcher.clock_ms = wall_ms
    node, node_id = await h.ready_node(max_concurrent_jobs=1)
    await h.scheduler.store.reserve(node_id, "stale", 1, wall_ms(), wall_ms() + 20_000)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    async def speak_every_3_s():  # 0 waits, the next ones are held behind it
        for index in itertools.count():
            await client.send(utterance(session_id, index))
            await node.send(heartbeat_frame(node_id))
            await trio.sleep(3)

    nursery.start_soon(speak_every_3_s)
    job = await node.recv_type("job_assign", within=30)
    assert trio.current_time() >= 20  # not before the stale reservation expired
    assert job["utterance_index"] >= 1  # the first ones timed out meanwhile


async def test_a_repeat_of_a_waiting_utterance_is_a_no_op_even_near_the_limit(
    nursery, autojump_clock
):
    one_second = len(base64.b64decode(utterance("s", 0)["audio"]))
    h = await MemoryHarness.start(nursery, sessions={"max_waiting_utterance_bytes": one_second})
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 1))  # waits, filling the budget
    await client.send(utterance(session_id, 1))  # a repeat: no error, no second job
    await client.send(utterance(session_id, 0))
    indexes = [(await node.recv_type("job_assign"))["utterance_index"] for _ in range(2)]
    assert indexes == [0, 1]
    await trio.testing.wait_all_tasks_blocked()
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 2
    seen = []
    while not (seen and seen[-1] == ("ui_event", 1)):
        frame = await client.recv()
        seen.append((frame["type"], frame.get("utterance_index")))
    assert "error" not in {kind for kind, _ in seen}, seen
