"""The simulated peers (``FakeNode``, ``FakeClient``) against a real scheduler on real sockets.

Real time, with tiny chunk intervals and service times: ``MockClock(autojump_threshold=0)``
would jump the clock while frames are still in the kernel between two sockets of this
process (the loop looks idle while the data is in flight), firing timeouts that no real
run would see. Nothing here sleeps to wait for a condition: readiness comes from the
scheduler's snapshot, progress from the peers' own events.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import trio

from harness import snapshot_where
from trio_scheduler.simulate.client import FakeClient
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init
from trio_scheduler.simulate.node import FakeNode
from trio_scheduler.simulate.peer import connect

CHUNK_S = 0.01
SERVICE_S = 0.02


async def wait_until_ready(server, node_id: str) -> None:
    def ready(snapshot) -> bool:
        view = snapshot.nodes.get(node_id)
        return view is not None and view.schedulable

    await snapshot_where(server.scheduler.publisher, ready)


async def start_node(nursery, server, **kwargs) -> FakeNode:
    """A ready FakeNode in ``nursery`` (the test's own)."""
    kwargs.setdefault("languages", ["zh", "en"])
    kwargs.setdefault("service_time_s", SERVICE_S)
    node = FakeNode(server.node_url, **kwargs)
    node_id = await nursery.start(node.run)
    await wait_until_ready(server, node_id)
    return node


def fast_client(server, **kwargs) -> FakeClient:
    kwargs.setdefault("utterance_chunks", 2)
    kwargs.setdefault("chunk_interval_s", CHUNK_S)
    kwargs.setdefault("result_timeout_s", 15)
    return FakeClient(server.session_url, **kwargs)


async def test_three_utterances_round_trip_in_order(start_server, nursery):
    server = await start_server()
    node = await start_node(nursery, server, max_concurrent_jobs=2)

    with trio.fail_after(20):
        summary = await fast_client(server, src="zh", tgt="en", utterances=3).run()

    assert summary.result_indices == [0, 1, 2]
    assert summary.missing == [] and summary.errors == []
    assert summary.complete and summary.closed_reason is None
    for index, result in enumerate(summary.results):
        assert result["session_id"] == summary.session_id
        assert result["text_asr"] == f"[zh] utterance {index} (520 ms audio)"
        assert result["text_translated"] == f"[en] utterance {index} (520 ms audio)"
        assert result["service_timings"]["total_ms"] >= SERVICE_S * 1000 * 0.5
        assert set(result["network_timings"]) == {
            "web_to_scheduler_ms", "scheduler_to_node_ms", "node_to_scheduler_ms",
            "scheduler_to_web_ms",
        }
        assert summary.ui_event_names(index) == [
            "DISPATCHED", "NODE_ACCEPTED", "ASR_FINAL", "NMT_DONE",
        ]
    assert sorted(summary.latencies_ms) == [0, 1, 2]
    assert all(ms >= SERVICE_S * 1000 for ms in summary.latencies_ms.values())

    assert [job["utterance_index"] for job in node.jobs] == [0, 1, 2]
    assert {job["session_id"] for job in node.jobs} == {summary.session_id}
    assert all(job["is_manual_cut"] is True for job in node.jobs)
    assert len(node.results) == 3 and node.in_flight == 0 and node.cancelled == []


async def test_two_way_auto_session_on_fake_node(start_server, nursery):
    server = await start_server()
    node = await start_node(nursery, server, languages=["zh", "en", "ja"])

    with trio.fail_after(20):
        summary = await fast_client(server, two_way=("zh", "en"), utterances=2).run()

    assert summary.result_indices == [0, 1]
    assert node.jobs[0]["mode"] == "two_way_auto"
    assert (node.jobs[0]["lang_a"], node.jobs[0]["lang_b"]) == ("zh", "en")
    assert summary.results[0]["text_translated"].startswith("[en] utterance 0")


async def test_two_clients_share_one_single_slot_node(start_server, nursery):
    server = await start_server()
    # Service time well above the skew between the two clients: their jobs must contend.
    node = await start_node(nursery, server, max_concurrent_jobs=1, service_time_s=0.1)
    summaries = {}

    async def run_client(name: str) -> None:
        summaries[name] = await fast_client(server, src="zh", tgt="en", utterances=3).run()

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            clients.start_soon(run_client, "a")
            clients.start_soon(run_client, "b")

    assert node.max_in_flight == 1
    assert len(node.jobs) == 6 and len(node.results) == 6
    assert summaries["a"].session_id != summaries["b"].session_id
    for summary in summaries.values():
        assert summary.result_indices == [0, 1, 2]
        assert summary.missing == [] and summary.errors == []
        # Waiting for the busy node is reported as backpressure, never as an error.
        assert all(frame["action"] == "PAUSE" for frame in summary.backpressure)
    assert any(summary.backpressure for summary in summaries.values())  # they did contend


async def test_client_disconnect_cancels_job_on_node(start_server, nursery):
    server = await start_server()
    got_job, got_cancel = trio.Event(), trio.Event()

    def on_event(kind: str, frame: dict) -> None:
        if kind == "job_assign":
            got_job.set()
        elif kind == "job_cancel":
            got_cancel.set()

    # The node would take an hour: only the cancel can end this job.
    node = await start_node(nursery, server, service_time_s=3600, on_event=on_event)
    client = fast_client(server, utterances=1, send_session_close=False)

    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(client.run)
            await got_job.wait()
            inner.cancel_scope.cancel()  # the browser tab goes away: a plain disconnect
        await got_cancel.wait()

    assert node.cancelled == [node.jobs[0]["job_id"]]
    assert node.in_flight == 0 and node.results == []


async def test_session_close_is_acked_and_server_keeps_serving(start_server, nursery):
    server = await start_server()
    await start_node(nursery, server)

    with trio.fail_after(20):
        first = await fast_client(server, utterances=1, send_session_close=True).run()
        assert first.result_indices == [0] and first.close_acked
        # The server is still there for the next browser.
        second = await fast_client(server, utterances=1).run()
    assert second.result_indices == [0]


async def test_disconnect_with_job_in_flight_does_not_stop_server(start_server, nursery):
    server = await start_server(segmentation={"hangover_manual_ms": 0})
    # Service time 0: the node's ack and result race the browser's close frame.
    await start_node(nursery, server, service_time_s=0)

    # A race, not a certainty, per try (about one in two here): many tries make it sure.
    with trio.fail_after(30):
        for _ in range(100):
            async with connect(server.session_url) as browser:
                await browser.send(one_way_init("zh", "en"))
                session_id = (await browser.recv_type("session_init_ack"))["session_id"]
                await browser.send(audio_chunk_frame(session_id, 0, is_final=True))
                await browser.recv_type("ui_event")  # DISPATCHED; then the tab closes
        summary = await fast_client(server, utterances=1).run()
    assert summary.result_indices == [0]


async def test_cli_stops_on_sigint_with_a_node_connected(nursery, tmp_path):
    config = tmp_path / "scheduler.toml"
    config.write_text("[server]\nshutdown_grace_s = 1.0\n")
    command = [sys.executable, "-m", "trio_scheduler", "serve", "--host", "127.0.0.1",
               "--port", "0", "--config", str(config)]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    try:
        log = b""
        with trio.fail_after(15):
            while (found := re.search(rb"port=(\d+)", log)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, f"server exited early: {log.decode(errors='replace')}"
                log += chunk

        async def drain() -> None:
            async for _ in process.stderr:
                pass

        nursery.start_soon(drain)
        node = FakeNode(f"ws://127.0.0.1:{int(found.group(1))}/ws/node")
        await nursery.start(node.run)

        process.send_signal(signal.SIGINT)
        with trio.move_on_after(6):  # grace 1 s for closing sockets, plenty of margin
            await process.wait()
        assert process.returncode == 0, "the server did not stop within 6 s of SIGINT"
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
