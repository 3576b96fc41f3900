"""Logs an operator can use: one line per session end, failed or timed-out job, refused
peer and node status change; per-job detail only at debug; nothing per audio chunk."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import orjson
import pytest
import structlog
import trio
from structlog.testing import capture_logs

from conftest import make_config
from harness import MemoryHarness
from http_client import http_request
from trio_scheduler.logs import configure_logging
from trio_scheduler.server import serve
from trio_scheduler.simulate.client import FakeClient
from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.node import FakeNode
from trio_scheduler.simulate.peer import CannotConnect, connect
from trio_scheduler.sessions.session import SessionTask

INFO_AND_UP = {"info", "warning", "error", "critical"}


def named(logs: list[dict], event: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == event]


async def speak(client, session_id: str, first_seq: int, chunks: int) -> int:
    """``chunks`` audio chunks and a final one; the next free seq."""
    for seq in range(first_seq, first_seq + chunks):
        await client.send(audio_chunk_frame(session_id, seq))
    await client.send(audio_chunk_frame(session_id, first_seq + chunks, is_final=True,
                                        payload=""))
    return first_seq + chunks + 1


async def test_a_session_ends_in_one_line_with_its_outcomes(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    node, node_id = await h.ready_node()
    with capture_logs() as logs:
        client = h.session()
        session_id = await h.session_id_for(client, one_way_init("zh", "en"))
        seq = await speak(client, session_id, 0, 30)  # 30 chunks: not 30 lines
        job = await node.recv_type("job_assign")
        await node.send(result_frame(job, node_id))
        await client.recv_type("translation_result")
        await speak(client, session_id, seq, 2)
        late = await node.recv_type("job_assign")
        await client.recv_type("missing_result", within=30 + 1)  # jobs.timeout_ms
        await client.ws.aclose()
        await h.wait_node_status(node_id, "ready")  # (unchanged)
        await trio.testing.wait_all_tasks_blocked()

    [ended] = named(logs, "session ended")
    assert ended["log_level"] == "info" and ended["session_id"] == session_id
    assert ended["outcomes"] == {"result": 1, "timeout": 1}
    assert (ended["utterances"], ended["unfinished"], ended["close_code"]) == (2, 0, 1000)
    assert type(ended["close_code"]) is int  # not the close reason's enum
    assert 30 <= ended["duration_s"] < 31
    [timed_out] = named(logs, "job timed out")
    assert timed_out["log_level"] == "warning"
    assert (timed_out["job_id"], timed_out["node_id"], timed_out["utterance_index"]) == (
        late["job_id"], node_id, 1)
    # At info, the whole session is three lines, however much audio it streamed.
    assert [e["event"] for e in logs if e["log_level"] in INFO_AND_UP] == [
        "session started", "job timed out", "session ended"]
    # At debug, each job's steps.
    steps = [(e["event"], e["job_id"]) for e in logs if e["event"].startswith("job ")]
    assert steps == [("job dispatched", job["job_id"]), ("job ended", job["job_id"]),
                     ("job dispatched", late["job_id"]), ("job timed out", late["job_id"])]
    assert named(logs, "job ended")[0]["outcome"] == "result"


async def test_a_failed_job_says_why(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))
    with capture_logs() as logs:
        await speak(client, session_id, 0, 1)
        await client.recv_type("missing_result")  # no node came within no_node_wait_ms
    [failed] = named(logs, "job failed")
    assert failed["log_level"] == "warning" and failed["session_id"] == session_id
    assert failed["needs"] == "zh:en with asr, nmt, tts" and failed["node_id"] is None
    [waiting] = named(logs, "job waiting")
    assert (waiting["log_level"], waiting["for_what"]) == ("debug", "a node")


async def test_node_status_changes_are_one_line_each_with_the_reason(nursery, autojump_clock):
    h = await MemoryHarness.start(nursery)
    with capture_logs() as logs:
        node, node_id = await h.ready_node()
        await node.send(heartbeat_frame(node_id, cpu_percent=99.0))
        await h.wait_node_status(node_id, "degraded")
        await node.send(heartbeat_frame(node_id))
        await h.wait_node_status(node_id, "ready")
        for _ in range(3):
            await node.send(heartbeat_frame(node_id))  # unchanged: no line
        await h.scheduler.manager.drain(node_id, "operator request")
        await node.ws.aclose()
        await h.wait_node_status(node_id, None)
        other, other_id = await h.ready_node()
        await h.wait_node_status(other_id, None, within=60 + 1)  # it never heartbeats again
    changes = [(e["old"], e["new"], e["reason"], e["log_level"])
               for e in named(logs, "node status") if e["node_id"] == node_id]
    assert changes == [
        (None, "registering", "registered", "info"),
        ("registering", "ready", "healthy heartbeat", "info"),
        ("ready", "degraded", "cpu_percent 99 > 95", "info"),
        ("degraded", "ready", "healthy heartbeat", "info"),
        ("ready", "draining", "operator request", "info"),
        ("draining", "offline", "socket closed", "info"),
    ]
    silent = named(logs, "node status")[-1]
    assert (silent["node_id"], silent["new"], silent["log_level"]) == (
        other_id, "offline", "warning")
    assert re.fullmatch(r"no heartbeat for (4[6-9]|5\d|60) s", silent["reason"])


async def test_refused_peers_are_logged_with_the_reason(nursery):
    config = make_config(nodes={"auth_tokens": ["tok"], "require_gpu": True},
                         sessions={"allowed_origins": ["https://app.example"]})
    scheduler = await nursery.start(serve, config)
    base = f"ws://127.0.0.1:{scheduler.port}"
    with capture_logs() as logs:
        for path in ("/ws/other", "/ws/node", "/ws/session"):
            with pytest.raises(CannotConnect):
                async with connect(base + path):
                    pass
        status, _ = await http_request(scheduler.port, "GET", "/", headers="Bad Header\r\n")
        async with connect(base + "/ws/node?token=tok") as node:
            await node.send(register_frame(hardware={"cpu_cores": 2, "memory_gb": 8}))
            assert (await node.recv())["code"] == "NO_GPU_AVAILABLE"
    refused = [(e["status"], e["path"], e["why"]) for e in named(logs, "peer refused")]
    assert refused == [
        (404, "/ws/other", "no such socket"),
        (401, "/ws/node", "a valid node token is required"),
        (403, "/ws/session", "origin not allowed"),
        (400, None, refused[3][2]),
    ] and status == 400
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", e["peer"]) for e in named(logs, "peer refused"))
    [node_refused] = named(logs, "node refused")
    assert node_refused["code"] == "NO_GPU_AVAILABLE" and node_refused["why"]


async def test_a_refused_session_init_is_logged(nursery):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    with capture_logs() as logs:
        await client.send(one_way_init("zh", "en", pairing_code="000000"))
        await client.recv()
        await client.send(one_way_init("zh", "zh-" + "x" * 20))
        await client.recv()
    assert [(e["code"], e["log_level"]) for e in named(logs, "session refused")] == [
        ("INVALID_PAIRING_CODE", "info"), ("INVALID_MESSAGE", "info")]


async def test_a_failing_session_event_is_logged_and_the_session_goes_on(nursery, monkeypatch):
    h = await MemoryHarness.start(nursery)
    client = h.session()
    session_id = await h.session_id_for(client, one_way_init("zh", "en"))

    async def broken(self, *args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(SessionTask, "_on_audio_chunk", broken)
    with capture_logs() as logs:
        await client.send(audio_chunk_frame(session_id, 0))
        await client.send({"type": "client_heartbeat", "session_id": session_id, "timestamp": 1})
        assert (await client.recv())["code"] == "INTERNAL_ERROR"
        assert (await client.recv())["type"] == "server_heartbeat"
    [failure] = named(logs, "session event failed")
    assert failure["event_type"] == "ClientFrame" and failure["log_level"] == "error"


# -- the real program ------------------------------------------------------------------


async def run_server_with_traffic(tmp_path, nursery, *options: str) -> list[dict]:
    """``trio-scheduler serve … --log-format json``, one node and one browser session of
    two utterances, SIGINT; the JSON log lines."""
    command = [sys.executable, "-m", "trio_scheduler", "serve", "--host", "127.0.0.1",
               "--port", "0", "--log-format", "json", *options]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    output = bytearray()
    try:
        with trio.fail_after(15):
            while (found := re.search(rb'"port": (\d+)', output)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, output.decode(errors="replace")
                output += chunk
        port = int(found.group(1))

        async def drain():
            async for chunk in process.stderr:
                output.extend(chunk)

        nursery.start_soon(drain)
        node = FakeNode(f"ws://127.0.0.1:{port}/ws/node", languages=["zh", "en"],
                        service_time_s=0.01)
        async with trio.open_nursery() as peers:
            await peers.start(node.run)
            client = FakeClient(f"ws://127.0.0.1:{port}/ws/session", src="zh", tgt="en",
                                utterances=2, utterance_chunks=10, chunk_interval_s=0.005,
                                result_timeout_s=10)
            with trio.fail_after(20):
                summary = await client.run()
            peers.cancel_scope.cancel()
        assert len(summary.results) == 2
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await process.wait()
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
    return [orjson.loads(line) for line in bytes(output).splitlines() if line.startswith(b"{")]


async def test_log_level_debug_shows_each_job(tmp_path, nursery):
    lines = await run_server_with_traffic(tmp_path, nursery, "--log-level", "debug")
    dispatched = named(lines, "job dispatched")
    assert len(dispatched) == 2 and all(e["level"] == "debug" for e in dispatched)
    assert [e["outcome"] for e in named(lines, "job ended")] == ["result", "result"]
    [ended] = named(lines, "session ended")
    assert ended["outcomes"] == {"result": 2}


async def test_log_level_info_is_quiet_per_chunk_and_job(tmp_path, nursery):
    lines = await run_server_with_traffic(tmp_path, nursery)  # [logging] level = info
    assert {e["level"] for e in lines} <= INFO_AND_UP
    per_peer = [e["event"] for e in lines if e.get("session_id") or e.get("node_id")]
    # 20 chunks, 2 jobs, heartbeats: none of them is a line of its own.
    assert sorted(per_peer) == sorted(
        ["node status", "node status", "node status", "session started", "session ended"])


class RecordingStream:
    """A stderr that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_each_line_is_one_write_with_the_fields_given(monkeypatch, log_format):
    """Workers of serve --workers share one stderr: a line written in two parts could be
    cut by another worker's; each line also says which worker wrote it."""
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        configure_logging(log_format, "info", fields={"worker": 2})
        structlog.get_logger("test").info("scheduler listening", port=5010)
    finally:
        structlog.reset_defaults()
    [line] = stream.writes
    assert line.endswith("\n") and line.count("\n") == 1
    assert "scheduler listening" in line
    assert ('"worker": 2' if log_format == "json" else "worker=2") in line
