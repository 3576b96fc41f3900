"""Jobs go to nodes that can run their ``pipeline``: an ASR-only ``utterance`` may go to an
ASR-only node, a full one never does; a node whose TTS stopped keeps taking ASR-only work
when only ASR is required of every node, and is degraded when TTS is required."""

from __future__ import annotations

import base64

import attrs
import pytest
import trio

from harness import MemoryHarness, snapshot_where
from trio_scheduler.dispatch.dispatcher import AllFull, Dispatcher
from trio_scheduler.management.needs import Needs
from trio_scheduler.management.publisher import SnapshotPublisher
from trio_scheduler.management.snapshot import NodeStatus, NodeView, Snapshot
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
    session_init_frame,
)
from trio_scheduler.store.memory import MemoryStore

ASR_ONLY = {"use_asr": True, "use_nmt": False, "use_tts": False}
FULL = {"use_asr": True, "use_nmt": True, "use_tts": True}
ASR_LANGUAGES = {"asr_languages": ["zh"], "tts_languages": [], "semantic_languages": []}
ONLY_ASR_REQUIRED = {"required_services": ["asr"]}


def utterance(session_id: str, index: int, pipeline: dict) -> dict:
    pcm = b"\x00\x01" * 8000  # 0.5 s of PCM16 at 16 kHz
    return {"type": "utterance", "session_id": session_id, "utterance_index": index,
            "manual_cut": True, "src_lang": "zh", "tgt_lang": "en",
            "audio": base64.b64encode(pcm).decode(), "audio_format": "pcm16",
            "sample_rate": 16000, "pipeline": pipeline}


async def asr_only_node(h: MemoryHarness, languages=None, **register):
    """A node with ASR alone: it recognises Chinese (by default) and translates into
    nothing."""
    languages = {**ASR_LANGUAGES, **(languages or {})}
    node = h.node()
    await node.send(register_frame(
        installed_services=[{"service_id": "whisper", "type": "asr", "device": "gpu",
                             "status": "running", "version": "1"}],
        capability_by_type=[{"type": "asr", "ready": True}],
        language_capabilities=languages,
        **register,
    ))
    node_id = (await node.recv_type("node_register_ack"))["node_id"]
    heartbeat = heartbeat_frame(node_id)
    heartbeat["language_capabilities"] = languages
    await node.send(heartbeat)
    await h.wait_node_status(node_id, "ready")
    return node, node_id


async def tts_down_node(h: MemoryHarness, **register):
    """A node serving zh:en whose TTS stopped: still ready when only ASR is required."""
    node, node_id = await h.ready_node(["zh", "en"], **register)
    heartbeat = heartbeat_frame(node_id, ["zh", "en"])
    heartbeat["capability_by_type"] = [{"type": "tts", "ready": False}]
    await node.send(heartbeat)
    await snapshot_where(h.scheduler.publisher, lambda s: "tts" not in s.nodes[node_id].services)
    return node, node_id


async def stays_silent(peer, seconds: float = 1.0) -> bool:
    """True when ``peer`` gets no frame for ``seconds`` of (mock) time."""
    try:
        await peer.recv(within=seconds)
    except trio.TooSlowError:
        return True
    return False


async def test_asr_only_utterance_goes_to_an_asr_only_node(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    asr, asr_id = await asr_only_node(h)
    assert h.scheduler.publisher.current.pools == {"zh:*": {asr_id}}
    assert h.scheduler.publisher.current.ready_services == {"asr"}  # what every node has
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    await client.send(utterance(session_id, 0, ASR_ONLY))
    job = await asr.recv_type("job_assign")
    assert job["utterance_index"] == 0
    assert job["pipeline"] == {**ASR_ONLY, "use_semantic": False, "use_tone": False}
    await asr.send(result_frame(job, asr_id, text_translated="", tts_audio=""))
    result = await client.recv_type("translation_result")
    assert (result["utterance_index"], result["text_asr"]) == (0, "utterance 0 heard")

    # The full pipeline needs a node serving zh:en with NMT and TTS: there is none.
    await client.send(utterance(session_id, 1, FULL))
    error = await client.recv_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE"
    assert "zh:en" in error["message"]
    assert await stays_silent(asr)

    full, full_id = await h.ready_node(["zh", "en"])
    await client.send(utterance(session_id, 2, FULL))
    job = await full.recv_type("job_assign")
    assert (job["utterance_index"], job["pipeline"]["use_tts"]) == (2, True)


async def test_default_pipeline_never_goes_to_an_asr_only_node(nursery, autojump_clock):
    """Audio chunks run the full pipeline: an ASR-only node in the source pool is skipped."""
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    asr, _ = await asr_only_node(h)
    client = h.session()
    await client.send(one_way_init("zh", "en"))
    session_id = (await client.recv_type("session_init_ack"))["session_id"]
    await client.send(audio_chunk_frame(session_id, 0, is_final=True))
    assert (await client.recv_type("error"))["code"] == "NO_AVAILABLE_NODE"
    assert await stays_silent(asr)
    assert h.scheduler.dispatcher.counters["jobs_dispatched"] == 0


async def test_node_whose_tts_stopped_keeps_asr_only_work(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    node, node_id = await tts_down_node(h)
    assert str(h.scheduler.publisher.current.nodes[node_id].status) == "ready"
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    await client.send(utterance(session_id, 0, FULL))
    error = await client.recv_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE" and "tts" in error["message"]
    await client.send(utterance(session_id, 1, ASR_ONLY))
    job = await node.recv_type("job_assign")
    assert job["utterance_index"] == 1


async def test_node_whose_tts_stopped_is_degraded_when_tts_is_required(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)  # default: asr, nmt and tts required
    node, node_id = await h.ready_node(["zh", "en"])
    tts_down = heartbeat_frame(node_id, ["zh", "en"])
    tts_down["capability_by_type"] = [{"type": "tts", "ready": False}]
    await node.send(tts_down)
    await h.wait_node_status(node_id, "degraded")
    assert h.scheduler.publisher.current.pools == {}
    assert h.scheduler.publisher.current.ready_services == {"asr", "nmt", "tts"}


@pytest.mark.parametrize("partial_node", [asr_only_node, tts_down_node])
async def test_waiting_job_is_woken_only_by_a_node_that_can_run_it(
    nursery, autojump_clock, partial_node
):
    """A full-pipeline job waiting for capacity is not handed the slot a node without TTS
    frees; it takes the slot of the full node when that one frees."""
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    full, full_id = await h.ready_node(["zh", "en"], max_concurrent_jobs=1)
    partial, partial_id = await partial_node(h, max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    await client.send(utterance(session_id, 0, FULL))
    first = await full.recv_type("job_assign")
    await client.send(utterance(session_id, 1, ASR_ONLY))  # the full node is busy
    second = await partial.recv_type("job_assign")
    await client.send(utterance(session_id, 2, FULL))
    assert (await client.recv_type("backpressure"))["action"] == "PAUSE"
    assert h.scheduler.dispatcher.waiting == 1

    await partial.send(result_frame(second, partial_id))  # a slot the waiting job cannot use
    assert await stays_silent(partial)
    assert h.scheduler.dispatcher.waiting == 1
    assert h.scheduler.dispatcher.counters["waiter_wakeups"] == 0  # not even woken

    await full.send(result_frame(first, full_id))
    third = await full.recv_type("job_assign")
    assert third["utterance_index"] == 2
    assert h.scheduler.dispatcher.waiting == 0


async def test_a_job_for_other_nodes_is_not_held_behind_a_waiting_one(nursery, autojump_clock):
    """Index order is kept among jobs that compete for the same nodes; an ASR-only job
    does not wait behind a full-pipeline job that waits for a full node."""
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    full, _ = await h.ready_node(["zh", "en"], max_concurrent_jobs=1)
    asr, _ = await asr_only_node(h, max_concurrent_jobs=1)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 0, FULL))
    await full.recv_type("job_assign")
    await client.send(utterance(session_id, 1, FULL))
    assert (await client.recv_type("backpressure"))["action"] == "PAUSE"
    await client.send(utterance(session_id, 2, ASR_ONLY))
    job = await asr.recv_type("job_assign")
    assert job["utterance_index"] == 2
    assert h.scheduler.dispatcher.waiting == 1


async def test_waiting_job_is_woken_when_a_node_gets_the_missing_service(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    full, full_id = await h.ready_node(["zh", "en"], max_concurrent_jobs=1)
    partial, partial_id = await tts_down_node(h)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 0, FULL))
    await full.recv_type("job_assign")
    await client.send(utterance(session_id, 1, FULL))
    assert (await client.recv_type("backpressure"))["action"] == "PAUSE"

    tts_back = heartbeat_frame(partial_id, ["zh", "en"])
    tts_back["capability_by_type"] = [{"type": "tts", "ready": True}]
    await partial.send(tts_back)
    job = await partial.recv_type("job_assign", within=1)  # far below the 10 s pending timeout
    assert job["utterance_index"] == 1


async def test_failover_keeps_the_jobs_needs(nursery, autojump_clock):
    """An ASR-only job whose node is lost goes to another ASR-only node."""
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    first, _ = await asr_only_node(h)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 0, ASR_ONLY))
    job = await first.recv_type("job_assign")
    second, second_id = await asr_only_node(h)
    await first.ws.aclose()
    retry = await second.recv_type("job_assign")
    assert (retry["job_id"], retry["attempt_id"]) == (job["job_id"], 2)
    assert retry["pipeline"]["use_tts"] is False


async def test_two_way_asr_only_needs_a_node_recognising_both_languages(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    zh_only, _ = await asr_only_node(h)
    client = h.session()
    session_id = await h.session_id_for(client, session_init_frame())  # two_way_auto zh/en
    await client.send(utterance(session_id, 0, ASR_ONLY))
    error = await client.recv_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE" and "en:*" in error["message"]

    both, _ = await asr_only_node(h, languages={"asr_languages": ["zh", "en"]})
    await client.send(utterance(session_id, 1, ASR_ONLY))
    assert (await both.recv_type("job_assign"))["utterance_index"] == 1
    assert await stays_silent(zh_only)


async def test_pinned_session_fails_when_its_node_cannot_run_the_pipeline(
    nursery, autojump_clock
):
    h = await MemoryHarness.start(nursery, nodes=ONLY_ASR_REQUIRED)
    node = h.node()
    await node.send(register_frame(["zh", "en"]))
    ack = await node.recv_type("node_register_ack")
    node_id = ack["node_id"]
    heartbeat = heartbeat_frame(node_id, ["zh", "en"])
    heartbeat["capability_by_type"] = [{"type": "tts", "ready": False}]
    await node.send(heartbeat)
    await h.wait_node_status(node_id, "ready")
    client = h.session()
    session_id = await h.session_id_for(
        client, one_way_init("zh", "en", pairing_code=ack["pairing_code"])
    )
    await client.send(utterance(session_id, 0, FULL))
    event = await client.recv_type("ui_event")
    assert (event["event"], event["error_code"]) == ("ERROR", "NODE_UNAVAILABLE")
    assert "paired node" in event["hint"]
    assert (await client.recv_type("missing_result"))["reason"] == "job_failed"
    await client.send(utterance(session_id, 1, ASR_ONLY))
    assert (await node.recv_type("job_assign"))["utterance_index"] == 1


async def test_pipeline_without_a_stage_is_refused(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send(utterance(session_id, 0, {"use_asr": False, "use_nmt": False,
                                                "use_tts": False}))
    error = await client.recv_type("error")
    assert error["code"] == "INVALID_MESSAGE"
    assert error["details"] == {"field": "pipeline"}
    await client.send(utterance(session_id, 0, FULL))  # the index is still free
    assert (await node.recv_type("job_assign"))["utterance_index"] == 0


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, frame: str) -> bool:
        self.sent.append(frame)
        return True

    def assign(self, job_id: str, session_id: str, frame: str) -> bool:
        return self.send(frame)

    def cancel(self, job_id: str, frame: str) -> bool:
        return self.send(frame)


class NullInbox:
    def put_node(self, event, *, force: bool = False) -> bool:
        return True


async def test_service_lost_during_the_reservation_is_rechecked():
    """Dispatch re-reads the node after the reservation's await: a node that lost TTS
    meanwhile gets no full-pipeline job, and the slot goes back."""
    publisher = SnapshotPublisher()
    link = RecordingLink()
    node = NodeView("n1", 1, NodeStatus.READY, 4, frozenset({"zh:en", "zh:*"}),
                    frozenset({"asr", "nmt", "tts"}), True, link)
    pools = {"zh:en": frozenset({"n1"}), "zh:*": frozenset({"n1"})}
    publisher.publish(Snapshot(1, {"n1": node}, pools))
    store = MemoryStore()
    reserve = store.reserve

    async def reserve_while_tts_stops(*args, **kwargs):
        reservation = await reserve(*args, **kwargs)
        without_tts = attrs.evolve(node, services=frozenset({"asr", "nmt"}))
        publisher.publish(Snapshot(2, {"n1": without_tts}, pools))
        return reservation

    store.reserve = reserve_while_tts_stops
    dispatcher = Dispatcher(publisher, store, job_timeout_ms=1000, reservation_margin_ms=10,
                            max_waiting_per_pool=4)
    outcome = await dispatcher.dispatch(
        job_id="job-1", attempt_id=1, frame="{}", session_id="s-1", inbox=NullInbox(),
        needs=Needs(frozenset({"zh:en"}), frozenset({"asr", "nmt", "tts"})),
        sticky_node_id=None,
    )
    assert isinstance(outcome, AllFull)
    assert link.sent == []
    assert await store.in_use("n1", 0) == 0


# -- an utterance's own languages ------------------------------------------------------------


async def test_utterance_runs_in_its_own_languages(nursery, autojump_clock):
    """A gateway's utterance says its languages; the node is chosen and told by them."""
    h = await MemoryHarness.start(nursery)
    zh_node, _ = await h.ready_node(["zh", "en"])
    ja_node, _ = await h.ready_node(["ja", "en"])
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({**utterance(session_id, 0, FULL), "src_lang": "JA", "dialect": "kansai"})
    job = await ja_node.recv_type("job_assign")
    assert (job["src_lang"], job["tgt_lang"], job["dialect"]) == ("ja", "en", "kansai")
    assert await stays_silent(zh_node)
    await client.send(utterance(session_id, 1, FULL))  # zh -> en, the session's own
    job = await zh_node.recv_type("job_assign")
    assert (job["utterance_index"], job["src_lang"]) == (1, "zh")


async def test_utterance_leaves_out_what_the_session_says(nursery, autojump_clock):
    """Without ``mode``, ``lang_a`` and ``lang_b`` a two-way session's utterance is two-way:
    it needs a node serving both directions."""
    h = await MemoryHarness.start(nursery)
    one_direction, node_id = await h.ready_node()
    heartbeat = heartbeat_frame(node_id)
    heartbeat["language_capabilities"] = {"asr_languages": ["zh"], "tts_languages": ["en"]}
    await one_direction.send(heartbeat)
    await snapshot_where(h.scheduler.publisher, lambda s: set(s.pools) == {"zh:en", "zh:*"})
    client = h.session()
    session_id = await h.session_id_for(client, session_init_frame())  # two_way_auto zh/en
    await client.send({**utterance(session_id, 0, FULL), "src_lang": "auto"})
    error = await client.recv_type("error")
    assert error["code"] == "NO_AVAILABLE_NODE" and "en:zh" in error["message"]
    both, _ = await h.ready_node(["zh", "en"])
    await client.send({**utterance(session_id, 1, FULL), "src_lang": "auto"})
    job = await both.recv_type("job_assign")
    assert (job["mode"], job["lang_a"], job["lang_b"]) == ("two_way_auto", "zh", "en")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tgt_lang": "auto"}, "tgt_lang"),
        ({"src_lang": "not a tag"}, "src_lang"),
        ({"mode": "sideways"}, "mode"),
        ({"mode": "one_way", "src_lang": "auto", "auto_langs": None}, "auto_langs"),
    ],
)
async def test_utterance_with_bad_languages_is_refused(nursery, autojump_clock, change, field):
    h = await MemoryHarness.start(nursery)
    node, _ = await h.ready_node()
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    await client.send({**utterance(session_id, 0, FULL), **change})
    error = await client.recv_type("error")
    assert (error["code"], error["details"]) == ("INVALID_MESSAGE", {"field": field})
    await client.send(utterance(session_id, 0, FULL))  # the index is still free
    assert (await node.recv_type("job_assign"))["utterance_index"] == 0
