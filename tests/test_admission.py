"""Admission control: a loop that runs behind turns new browsers away, never nodes."""

from __future__ import annotations

import time

import pytest

import trio
import trio.testing

from conftest import make_config
from http_client import http_exchange, http_request
from test_metrics import scrape, value
from trio_scheduler.admission import Admission, LoopOverload, SessionBudget, StartRate
from trio_scheduler.http.front_door import Request
from trio_scheduler.http.table import route_table
from trio_scheduler.server import Scheduler
from trio_scheduler.simulate.frames import register_frame
from trio_scheduler.simulate.peer import connect
from trio_scheduler.store.memory import MemoryStore

BOUND_S = 10
UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" \
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


# -- the pure rules ---------------------------------------------------------------------

def test_one_late_wake_up_is_not_an_overload_two_in_a_row_are():
    loop = LoopOverload(trip_lag_s=0.2, recover_after_s=2.0)
    assert not loop.observe(0.5, now=1.0)  # a garbage-collector pause, say
    assert not loop.observe(0.0, now=1.1)
    assert not loop.observe(0.3, now=1.2)
    assert loop.observe(0.2, now=1.3) and loop.overloaded and loop.trips == 1


def test_recovery_needs_the_lag_below_half_for_the_whole_hold():
    loop = LoopOverload(trip_lag_s=0.2, recover_after_s=2.0, trip_samples=1)
    loop.observe(0.4, now=0.0)
    assert loop.overloaded
    # between half and the trip level: still overloaded (hysteresis), however long
    for at in range(1, 10):
        assert not loop.observe(0.15, now=float(at))
    assert loop.overloaded
    assert not loop.observe(0.05, now=10.0)  # calm from here
    assert not loop.observe(0.05, now=11.9)
    assert not loop.observe(0.12, now=11.95)  # late again: the calm starts over
    assert not loop.observe(0.0, now=12.0)
    assert not loop.observe(0.0, now=13.9)
    assert loop.observe(0.0, now=14.0) and not loop.overloaded
    assert not loop.observe(0.0, now=14.1) and loop.trips == 1


def test_a_full_core_is_an_overload_even_while_the_loop_is_on_time():
    loop = LoopOverload(trip_lag_s=0.2, recover_after_s=2.0, trip_cpu=0.9)
    assert not loop.observe(0.01, now=1.0, cpu_busy=0.85)
    assert loop.observe(0.01, now=1.1, cpu_busy=0.92) and loop.overloaded
    # recovery needs the CPU share below 80 % of the trip level too, for the whole hold
    assert not loop.observe(0.0, now=2.0, cpu_busy=0.75)
    assert not loop.observe(0.0, now=5.0, cpu_busy=0.75)
    assert not loop.observe(0.0, now=5.1, cpu_busy=0.7)
    assert loop.observe(0.0, now=7.1, cpu_busy=0.7) and not loop.overloaded


def test_the_open_sessions_cost_sets_how_many_more_fit():
    budget = SessionBudget(trip_cpu=0.9)
    budget.estimate(cpu_busy=0.3, mean_sessions=100)  # too light to tell
    assert not budget.full(10_000)
    budget.estimate(cpu_busy=0.6, mean_sessions=200)  # 0.3 % of a core each
    assert budget.cap == pytest.approx(300)
    assert not budget.full(299) and budget.full(300)


def test_sessions_arriving_within_a_cpu_window_stop_at_the_estimate():
    open_sessions = [0]
    admission = Admission(LoopOverload(0.2, 1.0, trip_cpu=0.9), SessionBudget(0.9),
                          StartRate(per_s=1000), 5, sessions_open=lambda: open_sessions[0])
    for sample, sessions in enumerate((180, 200, 220)):  # one window, 0.66 of a core
        open_sessions[0] = sessions
        admission.observe(0.0, now=sample / 10, cpu_busy=0.66, cpu_window_ended=sample == 2)
    assert admission.budget.cap == pytest.approx(200 * 0.9 / 0.66)  # 272.7
    assert not admission.loop.overloaded
    open_sessions[0] = 272
    assert admission.refuse_session(now=1.0) is None
    open_sessions[0] = 273
    assert admission.overloaded and admission.refuse_session(now=1.0) == "overloaded"


def test_session_starts_are_a_bucket_of_one_seconds_worth():
    rate = StartRate(per_s=3)
    assert [rate.take(now=5.0) for _ in range(4)] == [True, True, True, False]
    assert rate.take(now=5.34) and not rate.take(now=5.34)  # one more token per 1/3 s
    assert [rate.take(now=100.0) for _ in range(4)] == [True, True, True, False]  # no hoard


def test_a_refused_start_takes_no_token():
    admission = Admission(LoopOverload(0.2, 1.0, trip_samples=1), SessionBudget(0.9),
                          StartRate(per_s=1), 5)
    admission.loop.observe(1.0, now=0.0)
    assert admission.refuse_session(now=0.0) == "overloaded"
    admission.loop.observe(0.0, now=0.0)
    admission.loop.observe(0.0, now=1.0)
    assert admission.refuse_session(now=1.0) is None
    assert admission.refuse_session(now=1.0) == "session_start_rate"


# -- the probe trips it: a MockClock-driven stall ---------------------------------------

def _request(path: str, *, upgrade: bool = False) -> Request:
    headers = {"upgrade": "websocket"} if upgrade else {}
    return Request("GET", path, "", headers)


async def test_a_stalled_loop_trips_admission_then_it_recovers(nursery, mock_clock):
    """The lag probe, as the scheduler wires it: a stall of the loop (the clock jumps past
    the probe's wake-up) turns new sessions away with 503 + Retry-After and makes /ready
    say ``overloaded``; nodes are still let in; calm for ``overload_recover_s`` ends it."""
    config = make_config(server={"overload_lag_ms": 200, "overload_recover_s": 2.0,
                                 "overload_retry_after_s": 7},
                         metrics={"loop_lag_interval_s": 0.1})
    scheduler = Scheduler.build(config, MemoryStore())
    router = route_table(scheduler)
    gate = scheduler.upgrade_gate
    await nursery.start(scheduler.loop_lag.run)

    async def stall(seconds: float) -> None:
        mock_clock.jump(seconds)  # the loop was busy this long past the probe's wake-up
        await trio.testing.wait_all_tasks_blocked()

    async def on_time(seconds: float) -> None:
        for _ in range(round(seconds / 0.1)):
            mock_clock.jump(0.1)
            await trio.testing.wait_all_tasks_blocked()

    assert gate.admit(_request("/ws/session", upgrade=True)) is None
    assert (await router.handle(_request("/ready"))).status == 200

    await stall(0.5)
    assert not scheduler.admission.overloaded  # one late wake-up is not enough
    await stall(0.5)
    assert scheduler.admission.overloaded

    refusal = gate.admit(_request("/ws/session", upgrade=True))
    assert refusal is not None and refusal.status == 503
    assert ("retry-after", "7") in refusal.headers
    assert gate.admit(_request("/ws/node", upgrade=True)) is None  # nodes add capacity
    ready = await router.handle(_request("/ready"))
    assert (ready.status, ready.body) == (503, b'{"status":"not ready","reason":"overloaded"}')
    assert (await router.handle(_request("/health"))).status == 200
    assert gate.refusals["overloaded"] == 1

    await on_time(1.5)
    assert scheduler.admission.overloaded  # not calm long enough yet
    await on_time(0.6)
    assert not scheduler.admission.overloaded
    assert gate.admit(_request("/ws/session", upgrade=True)) is None
    assert (await router.handle(_request("/ready"))).status == 200


async def test_a_process_using_its_whole_core_trips_admission(nursery, mock_clock):
    """The probe's CPU share, as the scheduler wires it (the process's CPU time is faked:
    0.95 s per second, then 0.5 s per second)."""
    config = make_config(server={"overload_cpu_percent": 90.0, "overload_recover_s": 2.0},
                         metrics={"loop_lag_interval_s": 0.25})
    scheduler = Scheduler.build(config, MemoryStore())
    used = [0.0]
    probe = scheduler.loop_lag
    probe._wall, probe._cpu, probe._machine = trio.current_time, lambda: used[0], lambda: (0, 0)
    await nursery.start(scheduler.loop_lag.run)

    async def run_for(seconds: float, cpu_share: float) -> None:
        for _ in range(round(seconds / 0.25)):
            used[0] += 0.25 * cpu_share
            mock_clock.jump(0.25)
            await trio.testing.wait_all_tasks_blocked()

    await run_for(1.0, 0.95)
    assert scheduler.admission.overloaded and scheduler.loop_lag.lag_s == 0.0
    refusal = scheduler.upgrade_gate.admit(_request("/ws/session", upgrade=True))
    assert refusal is not None and refusal.status == 503
    await run_for(1.0, 0.5)
    assert scheduler.admission.overloaded  # calm, but not for overload_recover_s yet
    await run_for(2.0, 0.5)
    assert not scheduler.admission.overloaded


async def test_a_full_machine_trips_admission_too(nursery, mock_clock):
    """Workers sharing a machine: each uses less than its core while all cores are busy."""
    config = make_config(server={"overload_cpu_percent": 90.0},
                         metrics={"loop_lag_interval_s": 0.25})
    scheduler = Scheduler.build(config, MemoryStore())
    busy = [0.0, 0.0]  # (busy, total) CPU seconds of the machine's two cores
    used = [0.0]  # this process's CPU seconds
    probe = scheduler.loop_lag
    probe._wall, probe._cpu = trio.current_time, lambda: used[0]
    probe._machine = lambda: tuple(busy)
    await nursery.start(probe.run)

    async def one_second(own_share: float) -> None:  # 1.9 of the 2 cores busy
        for _ in range(4):
            busy[0] += 0.25 * 1.9
            busy[1] += 0.25 * 2
            used[0] += 0.25 * own_share
            mock_clock.jump(0.25)
            await trio.testing.wait_all_tasks_blocked()

    await one_second(own_share=0.05)  # an idle server on a machine busy with other work
    assert probe.machine_busy == pytest.approx(0.95)
    assert not scheduler.admission.overloaded
    await one_second(own_share=0.6)  # a worker among others filling the machine
    assert scheduler.admission.overloaded


async def test_session_starts_beyond_the_rate_wait_a_second(nursery, mock_clock):
    config = make_config(server={"max_session_starts_per_s": 2.0})
    gate = Scheduler.build(config, MemoryStore()).upgrade_gate
    session = _request("/ws/session", upgrade=True)
    assert gate.admit(session) is None and gate.admit(session) is None
    refusal = gate.admit(session)
    assert refusal is not None and refusal.status == 503
    assert ("retry-after", "1") in refusal.headers
    assert gate.admit(_request("/ws/node", upgrade=True)) is None
    mock_clock.jump(0.5)
    assert gate.admit(session) is None
    assert gate.refusals["session_start_rate"] == 1


# -- on the wire ------------------------------------------------------------------------

async def test_an_overloaded_server_answers_503_before_the_handshake(start_server):
    """A real stall of the real server's loop: what a browser, a node, a load balancer
    and a metrics scraper then see on the port."""
    server = await start_server(
        server={"overload_lag_ms": 100, "overload_recover_s": 60.0, "overload_retry_after_s": 5},
        metrics={"loop_lag_interval_s": 0.05},
    )
    with trio.fail_after(BOUND_S):
        for _ in range(2):
            time.sleep(0.25)  # the stimulus: the whole loop blocked, as a CPU-bound burst would
            await trio.testing.wait_all_tasks_blocked()
        assert server.scheduler.admission.overloaded

        refused = await http_exchange(server.port, "GET", "/ws/session", headers=UPGRADE)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["reason"] == "overloaded"
        assert await http_request(server.port, "GET", "/ready") == (
            503, {"status": "not ready", "reason": "overloaded"})
        assert (await http_request(server.port, "GET", "/health"))[0] == 200

        async with connect(server.node_url) as node:  # a node still gets in and registers
            await node.send(register_frame())
            assert (await node.recv())["type"] == "node_register_ack"

        m = await scrape(server.port)
        assert value(m, "overloaded") == 1
        assert value(m, "overload_trips_total") == 1
        assert value(m, "refusals_total", reason="overloaded") == 1
