"""GET /metrics and GET /stats as a scenario runs, and their pure parts."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from http_client import http_exchange, http_request
from trio_scheduler.http.stats import language_pair, percentiles_ms, sessions_by_pair
from trio_scheduler.loop_lag import LoopLagProbe
from trio_scheduler.simulate.frames import audio_chunk_frame, one_way_init, result_frame
from trio_scheduler.simulate.peer import CannotConnect, connect

BOUND_S = 10

Samples = dict[tuple[str, frozenset], float]


async def scrape(port: int, token: str | None = None, *, keep_instance: bool = False) -> Samples:
    """Every sample by (name, labels); the instance label is left out unless kept."""
    reply = await http_exchange(port, "GET", "/metrics", token)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(
            (k, v) for k, v in sample.labels.items()
            if keep_instance or k != "scheduler_instance"
        )): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(("trio_scheduler_" + name, frozenset(labels.items())), 0.0)


async def test_metrics_and_stats_move_as_a_session_runs(start_server):
    server = await start_server()
    port = server.port
    with trio.fail_after(BOUND_S):
        before = await scrape(port)
        assert value(before, "sessions_open") == 0
        assert value(before, "nodes", status="ready") == 0
        async with connect(server.node_url) as node, connect(server.session_url) as client:
            node_id = await server.ready_node(node)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            m = await scrape(port)
            assert value(m, "nodes", status="ready") == 1
            assert value(m, "pool_nodes", pool="zh:en") == 1
            assert value(m, "pool_capacity_slots", pool="zh:en") == 4
            assert value(m, "sessions_open") == 1
            assert value(m, "sockets_open", socket="session") == 1
            assert value(m, "sockets_open", socket="node") == 1
            assert value(m, "connections_open") >= 2
            assert value(m, "node_heartbeats_total") == 1
            assert ("trio_scheduler_event_loop_lag_seconds", frozenset()) in m

            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            job = await node.recv_type("job_assign")
            m = await scrape(port)
            assert value(m, "jobs_started_total") == 1
            assert value(m, "jobs_on_nodes") == 1
            assert value(m, "reservations_held") == 1
            assert value(m, "pool_slots_in_use", pool="zh:en") == 1
            assert value(m, "dispatch_latency_seconds_count") == 1
            assert value(m, "dispatcher_events_total", event="jobs_dispatched") == 1
            assert value(m, "store_call_duration_seconds_count", operation="reserve") >= 1
            for name, kind in [("frames_received_total", "audio_chunk"),
                               ("frames_received_total", "node_register"),
                               ("frames_sent_total", "job_assign"),
                               ("frames_sent_total", "session_init_ack")]:
                assert value(m, name, type=kind) > value(before, name, type=kind)

            stats = (await http_request(port, "GET", "/stats"))[1]
            assert stats["sessions"] == {"open": 1, "by_language_pair": {"zh:en": 1}}
            [row] = stats["nodes"]
            assert row["node_id"] == node_id and row["reserved_jobs"] == 1
            zh_en = next(p for p in stats["pools"] if p["pool"] == "zh:en")
            assert zh_en == {"pool": "zh:en", "nodes": [node_id], "capacity": 4, "in_use": 1,
                             "load": 0.25}
            assert stats["jobs"]["started"] == 1 and stats["jobs"]["on_nodes"] == 1
            assert stats["latency"]["dispatch_ms"]["count"] == 1
            assert stats["latency"]["end_to_end_ms"] == {"count": 0, "p50": None, "p90": None,
                                                         "p99": None}

            await node.send(result_frame(job, node_id))
            await client.recv_type("translation_result")
            m = await scrape(port)
            assert value(m, "jobs_finished_total", outcome="result") == 1
            assert value(m, "end_to_end_latency_seconds_count") == 1
            assert value(m, "reservations_held") == 0 and value(m, "jobs_on_nodes") == 0
            stats = (await http_request(port, "GET", "/stats"))[1]
            assert stats["jobs"]["finished"] == {"result": 1}
            assert stats["latency"]["end_to_end_ms"]["count"] == 1
            assert stats["latency"]["end_to_end_ms"]["p50"] >= 0

            # A second utterance that the session leaves before its result: cancelled.
            await client.send(audio_chunk_frame(session_id, 1, is_final=True))
            await node.recv_type("job_assign")
        sessions = server.scheduler.sessions
        await sessions.metrics.wait_until(lambda: not sessions.sessions)
        m = await scrape(port)
        assert value(m, "jobs_finished_total", outcome="cancelled") == 1
        assert value(m, "sessions_open") == 0
        assert value(m, "store_call_duration_seconds_count", operation="reserve") >= 2
        assert value(m, "store_releases_queued_total") >= 2  # sessions never wait on them


async def test_refusals_by_reason(start_server):
    server = await start_server(
        sessions={"auth_tokens": ["s-tok"], "max_messages_per_s": 5.0},
        server={"max_connections": 3},
        nodes={"default_max_concurrent_jobs": 1},
        jobs={"max_waiting_per_pool": 1},
        results={"gap_timeout_ms": 1500},
    )
    port = server.port
    session_url = server.session_url + "?token=s-tok"
    with trio.fail_after(BOUND_S):
        before = await scrape(port)
        with pytest.raises(CannotConnect):  # no token
            async with connect(server.session_url):
                pass
        async with connect(server.node_url) as node, connect(session_url) as client:
            await server.ready_node(node)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            # One job runs, one waits, the third finds the queue full: overload.
            for index in range(3):
                await client.send(audio_chunk_frame(session_id, index, is_final=True))
            await node.recv_type("job_assign")
            while (event := await client.recv_type("ui_event"))["event"] != "ERROR":
                pass
            assert (event["utterance_index"], event["error_code"]) == (2, "NODE_OVERLOADED")
            # Beyond five messages a second (bursts as large): rate limited.
            for _ in range(8):
                await client.send({"type": "client_heartbeat", "session_id": session_id,
                                   "timestamp": 0})
            assert (await client.recv_type("error"))["code"] == "RATE_LIMITED"
            # Third connection is this request; a fourth is over the limit.
            async with connect(session_url):
                assert (await http_request(port, "GET", "/health"))[0] == 503
        server.scheduler.accepting = False
        with pytest.raises(CannotConnect) as refused:
            async with connect(session_url):
                pass
        assert refused.value.status_code == 503
        m = await scrape(port)
        for reason in ("auth", "rate_limit", "overload", "connection_limit", "draining"):
            refused = value(m, "refusals_total", reason=reason)
            assert refused - value(before, "refusals_total", reason=reason) == 1, reason
        assert value(m, "job_failures_total", code="NODE_OVERLOADED") == 1
        assert value(m, "errors_sent_total", code="RATE_LIMITED") >= 1
        assert value(m, "draining") == 1


async def test_metrics_token_and_instance_label(start_server, store_kind):
    server = await start_server(metrics={"token": "m-tok"})
    with trio.fail_after(BOUND_S):
        for path in ("/metrics", "/stats"):
            assert (await http_exchange(server.port, "GET", path)).status == 401
            assert (await http_exchange(server.port, "GET", path, "wrong")).status == 401
        samples = await scrape(server.port, "m-tok", keep_instance=True)
    instance = server.scheduler.instance_id
    labelled = {dict(labels).get("scheduler_instance") for _, labels in samples}
    # Several instances may share a Redis store: then every series names its instance.
    assert labelled == ({instance} if store_kind == "redis" else {None})
    store = "redis" if store_kind == "redis" else "memory"
    info = {k: v for k, v in samples.items() if k[0] == "trio_scheduler_info"}
    [(_, labels)] = info
    assert dict(labels)["instance_id"] == instance and dict(labels)["store"] == store


async def test_loop_lag_probe_reports_how_late_it_woke(nursery, mock_clock):
    probe = LoopLagProbe(interval_s=0.5)
    await nursery.start(probe.run)
    mock_clock.jump(0.8)  # the loop was busy 0.3 s past the probe's wake-up time
    await trio.testing.wait_all_tasks_blocked()
    assert probe.lag_s == pytest.approx(0.3)
    mock_clock.jump(0.5)  # on time
    await trio.testing.wait_all_tasks_blocked()
    assert probe.lag_s == pytest.approx(0.0)


async def test_loop_lag_probe_reports_the_share_of_a_core_used(nursery, mock_clock):
    used = [0.0]  # CPU seconds the process has used, as the probe reads them
    probe = LoopLagProbe(interval_s=0.25, wall=trio.current_time, cpu=lambda: used[0])
    await nursery.start(probe.run)
    for _ in range(4):  # one second, of which the process used 0.7 s of CPU
        used[0] += 0.175
        mock_clock.jump(0.25)
        await trio.testing.wait_all_tasks_blocked()
    assert probe.cpu_busy == pytest.approx(0.7)


def test_percentiles_are_nearest_rank_in_ms():
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles_ms(samples) == {"count": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentiles_ms([0.25]) == {"count": 1, "p50": 250.0, "p90": 250.0, "p99": 250.0}
    assert percentiles_ms([])["p50"] is None


class Spec:
    def __init__(self, src, tgt, mode=None, lang_a=None, lang_b=None):
        self.src_lang, self.tgt_lang, self.mode = src, tgt, mode
        self.lang_a, self.lang_b = lang_a, lang_b


def test_sessions_are_grouped_by_language_pair():
    specs = [Spec("zh", "en"), Spec("zh", "en"), Spec("auto", "en", "two_way_auto", "zh", "en")]
    assert language_pair(specs[2]) == "zh<>en"
    assert sessions_by_pair(specs) == {"zh:en": 2, "zh<>en": 1}


async def test_what_the_server_retains_is_exposed_and_comes_back_down(start_server):
    """A soak watches these: every long-lived map returns to its size once sessions and
    nodes are gone (the dedup window aside, which forgets by time)."""
    server = await start_server()
    port = server.port
    with trio.fail_after(BOUND_S):
        before = await scrape(port)
        assert value(before, "trio_tasks") > 0
        assert before[("process_resident_memory_bytes", frozenset())] > 0
        assert before[("process_open_fds", frozenset())] > 0
        async with connect(server.node_url) as node, connect(server.session_url) as client:
            node_id = await server.ready_node(node)
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv())["session_id"]
            await client.send(audio_chunk_frame(session_id, 0, is_final=True))
            await node.recv_type("job_assign")
            during = await scrape(port)
            assert value(during, "retained_entries", map="dispatcher_routes") == 1
            assert value(during, "retained_entries", map="sessions") == 1
            assert value(during, "retained_entries", map="nodes_registered") == 1
        sessions = server.scheduler.sessions
        await sessions.metrics.wait_until(lambda: not sessions.sessions)
        await server.scheduler.publisher.wait_until(lambda s: node_id not in s.nodes)
        after = await scrape(port)
    for name in ("dispatcher_routes", "dispatcher_waiting_jobs", "dispatcher_node_loads",
                 "sessions", "unsent_outcomes", "nodes_registered"):
        assert value(after, "retained_entries", map=name) == 0, name
    assert value(after, "retained_entries", map="nodes_departed") == 1  # for a reconnect
    assert value(after, "retained_entries", map="dispatcher_ended_jobs") == 1  # dedup window
