"""Load-generator worker for ``scripts/bench.py``; one process per role, driven by bench.py.

    python scripts/bench_load.py nodes    --url ws://H:P/ws/node    --nodes 50 --out F …
    python scripts/bench_load.py sessions --url ws://H:P/ws/session --sessions 500 --out F …
        [--arrival S --process-index K --processes P --total-sessions N]

Runs in its own process so the load it generates is not measured with the server. It talks
to bench.py through JSON lines on stdout (``ready``, ``progress``, ``done``) and commands
on stdin (``go T0 TEND`` for sessions, ``stop`` for nodes), and writes its raw samples to
``--out`` as JSON.

Time stamps: ``time.monotonic()`` (CLOCK_MONOTONIC). On Linux that clock is system-wide,
so stamps taken in the session process (``is_final`` sent) and in the node process
(``job_assign`` read) are directly comparable on one machine, at nanosecond resolution and
without the jumps of the wall clock. The wall-clock ``client_timestamp_ms`` the browser
sends is still filled in, as the real client does; the scheduler's ``job_assign`` does not
carry it back, so samples are joined afterwards by (session_id, utterance_index).

* ``sessions``: each simulated browser opens ``/ws/session`` with the web client's
  ``session_init`` (two-way zh/en) and, after ``go``, sends one Plan A chunk (13 × 20 ms
  Opus packets, ``client_timestamp_ms`` set) every ``--chunk-interval`` s and, after every
  ``--chunks-per-utterance`` chunks, an empty ``audio_chunk`` with ``is_final`` — as the web
  client does. Sessions start at random phases and with a random first utterance length,
  so cuts are spread evenly over time. Sending stops at TEND (a partly sent utterance is
  abandoned); then each session waits up to ``--grace`` s for outcomes and closes.
  With ``--arrival S`` (> 0) no session connects before ``go``: they arrive spread evenly
  over the first S seconds of the window instead (an arrival wave: browsers reconnecting
  after a restart, a rush hour), each streaming from its own arrival — never sending
  chunks "due" before it arrived. The ``--process-index``/``--processes`` of the load
  processes interleave their arrivals, so the wave is even overall. Arrivals are not
  throttled by ``--connect-concurrency``: a browser does not wait for another's
  handshake, and a limit here would hide a server that answers upgrades slowly.
  A session whose upgrade is answered with HTTP 503 (admission control: ``overloaded``
  or ``session_start_rate``) is counted as ``refused``, by reason, and not retried.
* ``nodes``: ``FakeNode`` agents (register, heartbeat, ``job_ack``, ``job_result`` after
  ``--service-time``), with a stamp for every ``job_assign``. Before reporting ``ready`` a
  probe session checks that the server dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import trio
import trio_websocket

from trio_scheduler.simulate.frames import opus_chunk_payload, session_init_frame
from trio_scheduler.simulate.node import FakeNode
from trio_scheduler.simulate.peer import Peer, connect, connect_failure
from trio_scheduler.simulate.script import reachability_explained

now = time.monotonic


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return line.strip() or "stop"  # EOF: the parent is gone


def wall_ms() -> int:
    return int(time.time() * 1000)


def web_init(a: str = "zh", b: str = "en") -> dict[str, Any]:
    """The web client's two-way ``session_init`` (PROTOCOL §5), with its own trace id."""
    return session_init_frame(src_lang="auto", tgt_lang=b, mode="two_way_auto", lang_a=a,
                              lang_b=b, auto_langs=[a, b], trace_id=str(uuid.uuid4()))


# ---------------------------------------------------------------------------------------
# sessions


class SessionLoad:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.payload = opus_chunk_payload(13)
        self.limiter = trio.CapacityLimiter(args.connect_concurrency)
        self.go = trio.Event()
        self.all_settled = trio.Event()
        self.settled = 0  # sessions connected, refused or failed
        self._settled_ids: set[int] = set()
        self.t0 = self.t_end = 0.0
        self.connected = 0
        self.failed: list[str] = []
        self.refused: Counter[str] = Counter()  # upgrades answered 503, by reason
        self.connect_ms: list[float] = []  # arrival (or connect start) → session_init_ack
        self.rows: list[list[Any]] = []  # [session_id, index, final_sent, outcome_at, missing]
        self.errors: Counter[str] = Counter()
        self.backpressure = 0
        self.lag_ms: list[float] = []
        self.chunks = 0
        self.finals = 0
        self.results = 0

    def _settle(self, i: int) -> None:
        """Session ``i`` connected, was refused or failed to connect (counted once)."""
        if i in self._settled_ids:
            return
        self._settled_ids.add(i)
        self.settled += 1
        if self.settled == self.args.sessions:
            self.all_settled.set()

    def arrival_at(self, i: int) -> float:
        """When session ``i`` of this process arrives (``--arrival``): this process's
        sessions take every P-th place, offset K, among all N sessions of the run, so P
        processes together arrive evenly over the first S seconds of the window."""
        args = self.args
        place = i * args.processes + args.process_index
        return self.t0 + args.arrival * place / max(1, args.total_sessions or args.sessions)

    async def run(self) -> None:
        arrivals = self.args.arrival > 0
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as sessions:
                if not arrivals:  # everyone connects first, then the clock starts
                    for i in range(self.args.sessions):
                        sessions.start_soon(self.session, i, None)
                    with trio.move_on_after(self.args.connect_timeout):
                        await self.all_settled.wait()
                emit(event="ready", connected=self.connected, failed=len(self.failed),
                     refused=sum(self.refused.values()))
                command = (await read_command()).split()
                if command[0] != "go":
                    sessions.cancel_scope.cancel()
                    return
                self.t0, self.t_end = float(command[1]), float(command[2])
                self.go.set()
                if arrivals:
                    for i in range(self.args.sessions):
                        sessions.start_soon(self.session, i, self.arrival_at(i))
                outer.start_soon(self.progress)
                # the session tasks end by themselves: TEND + grace at the latest
            outer.cancel_scope.cancel()

    async def progress(self) -> None:
        while True:
            await trio.sleep(0.5)
            emit(event="progress", finals=self.finals, results=self.results,
                 errors=sum(self.errors.values()) + len(self.failed),
                 refused=sum(self.refused.values()), connected=self.connected)

    def connect_timeout(self, arrive_at: float | None) -> float:
        """How long a session may take to connect: ``--connect-timeout``; an arriving one
        no longer than until its stream would end (TEND + grace), so a server that
        stalls upgrades cannot keep this process past the end of the run."""
        if arrive_at is None:
            return self.args.connect_timeout
        return max(0.1, min(self.args.connect_timeout,
                            self.t_end + self.args.grace - now()))

    def refusal(self, exc: BaseException) -> str | None:
        """The admission reason if ``exc`` is an upgrade answered with HTTP 503, else None
        (any other failure to connect is a failed connection)."""
        if not isinstance(exc, trio_websocket.ConnectionRejected) or exc.status_code != 503:
            return None
        try:
            return str(orjson.loads(exc.body or b"{}").get("reason") or "unknown")
        except (orjson.JSONDecodeError, AttributeError):
            return "unknown"

    async def session(self, i: int, arrive_at: float | None) -> None:
        """One browser: connect (now, or at ``arrive_at`` after go), ``session_init``,
        then stream. Before go, connects are limited to ``--connect-concurrency``."""
        args = self.args
        holding = accepted = False
        if arrive_at is None:
            await self.limiter.acquire_on_behalf_of(i)
            holding = True
        else:
            await trio.sleep(max(0.0, arrive_at - now()))
        started = now()
        timeout = self.connect_timeout(arrive_at)
        try:
            async with trio_websocket.open_websocket_url(
                    args.url, max_message_size=16 * 1024 * 1024, connect_timeout=timeout,
                    disconnect_timeout=10) as ws:
                peer = Peer(ws)
                with trio.fail_after(timeout):
                    await peer.send(web_init())
                    ack = await peer.recv(within=timeout)
                if holding:
                    self.limiter.release_on_behalf_of(i)
                    holding = False
                if ack.get("type") != "session_init_ack":
                    self.failed.append(f"session_init refused: {ack}")
                    self._settle(i)
                    return
                accepted = True
                self.connected += 1
                self.connect_ms.append(round((now() - started) * 1000, 1))
                self._settle(i)
                # an arriving browser streams from its own arrival, a waiting one from go
                await self.stream(ws, ack["session_id"], i,
                                  None if arrive_at is None else now())
        except (trio_websocket.HandshakeError, OSError, trio.TooSlowError) as exc:
            reason = self.refusal(exc)
            if reason is not None:
                self.refused[reason] += 1
            elif isinstance(exc, (trio_websocket.HandshakeError, OSError)):
                self.failed.append(connect_failure(args.url, exc))
            else:
                self.failed.append("no session_init_ack in time")
            self._settle(i)
        except trio_websocket.ConnectionClosed as exc:
            if not accepted or not self.go.is_set():
                self.failed.append(f"closed before start: {exc.reason}")
                self._settle(i)
            else:
                self.errors["disconnected"] += 1
        finally:
            if holding:
                self.limiter.release_on_behalf_of(i)

    async def stream(self, ws: trio_websocket.WebSocketConnection, session_id: str,
                     i: int, arrived: float | None) -> None:
        """Chunks every ``--chunk-interval`` s from go (at a random phase) or, for an
        arriving session, from ``arrived`` — its schedule starts then, so it never sends
        a burst of chunks "due" before it was there — until TEND; then up to ``--grace``
        s for the outcomes of the utterances it finished (``is_final`` sent)."""
        args = self.args
        finals: list[float] = []
        outcomes: dict[int, tuple[float, str | None]] = {}
        all_done = trio.Event()
        sending_over = False
        closed_by_us = False

        def check_done() -> None:
            if sending_over and len(outcomes) >= len(finals):
                all_done.set()

        async def reader() -> None:
            try:
                while True:
                    message = await ws.get_message()
                    at = now()
                    frame = orjson.loads(message)
                    kind = frame.get("type")
                    if kind == "translation_result" or kind == "missing_result":
                        index = frame.get("utterance_index")
                        missing = frame.get("reason", "?") if kind == "missing_result" else None
                        if missing is not None:
                            self.errors[f"missing_result:{missing}"] += 1
                        if isinstance(index, int) and index < len(finals) \
                                and index not in outcomes:
                            outcomes[index] = (at, missing)
                            self.results += missing is None
                            check_done()
                    elif kind == "ui_event":
                        if frame.get("status") == "error":
                            self.errors[f"ui_event:{frame.get('error_code')}"] += 1
                    elif kind == "error":
                        self.errors[f"error:{frame.get('code')}"] += 1
                    elif kind == "backpressure":
                        self.backpressure += 1
            except trio_websocket.ConnectionClosed as exc:
                if not closed_by_us:
                    self.errors[f"disconnected:{exc.reason.code if exc.reason else '?'}"] += 1
                    all_done.set()

        rnd = random.Random(args.seed * 100003 + i)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await self.go.wait()
            interval, per_utt = args.chunk_interval, args.chunks_per_utterance
            start = (self.t0 if arrived is None else arrived) + rnd.random() * interval
            utt_len = rnd.randint(1, per_utt)  # first utterance: random length, spreads cuts
            in_utt = 0
            seq = 0
            k = 0
            try:
                while not all_done.is_set():
                    scheduled = start + k * interval
                    if scheduled >= self.t_end:
                        break
                    await trio.sleep(max(0.0, scheduled - now()))
                    self.lag_ms.append(round((now() - scheduled) * 1000, 3))
                    await ws.send_message(orjson.dumps({
                        "type": "audio_chunk", "session_id": session_id, "seq": seq,
                        "is_final": False, "payload": self.payload,
                        "client_timestamp_ms": wall_ms(),
                    }).decode())
                    seq += 1
                    k += 1
                    in_utt += 1
                    self.chunks += 1
                    if in_utt == utt_len:
                        # counted before the send: its outcome may be read before the
                        # send returns, and the reader only takes indexes it knows
                        finals.append(now())
                        try:
                            await ws.send_message(orjson.dumps({
                                "type": "audio_chunk", "session_id": session_id,
                                "seq": seq, "is_final": True, "payload": "",
                                "client_timestamp_ms": wall_ms(),
                            }).decode())
                        except trio_websocket.ConnectionClosed:
                            finals.pop()  # never sent: not an utterance
                            raise
                        self.finals += 1
                        seq += 1
                        in_utt = 0
                        utt_len = per_utt
            except trio_websocket.ConnectionClosed:
                pass  # the reader counts it
            sending_over = True
            check_done()
            with trio.move_on_at(trio.current_time() + max(0.0, self.t_end + args.grace - now())):
                await all_done.wait()
            closed_by_us = True
            nursery.cancel_scope.cancel()
        for index, sent_at in enumerate(finals):
            at, missing = outcomes.get(index, (None, None))
            self.rows.append([session_id, index, sent_at, at, missing])
        lost = len(finals) - len(outcomes)
        if lost:
            self.errors["no_outcome"] += lost

    def report(self) -> dict[str, Any]:
        return {
            "sessions": self.args.sessions, "connected": self.connected,
            "failed_connections": self.failed, "refused": dict(self.refused),
            "connect_ms": self.connect_ms, "utterances": self.rows,
            "errors": dict(self.errors), "backpressure": self.backpressure,
            "lag_ms": self.lag_ms, "chunks_sent": self.chunks,
        }


# ---------------------------------------------------------------------------------------
# nodes


class NodeLoad:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.assigns: list[list[Any]] = []  # [session_id, index, read_at]
        self.counts: Counter[str] = Counter()
        self.nodes: list[FakeNode] = []
        self.in_flight: list[list[float]] = []  # [time, jobs running on all nodes]

    def hook(self, node: FakeNode):
        def on_event(kind: str, frame: dict[str, Any]) -> None:
            if kind == "job_assign":
                self.assigns.append([frame.get("session_id"), frame.get("utterance_index"),
                                     now()])
                node.jobs.clear()  # keep memory flat: the stamps are all we need
            elif kind == "job_result":
                node.results.clear()
            node.frames.clear()
            self.counts[kind] += 1
        return on_event

    async def run(self) -> None:
        args = self.args
        languages = [lang for lang in args.languages.split(",") if lang]
        async with trio.open_nursery() as nursery:
            for _ in range(args.nodes):
                node = FakeNode(args.url, languages=languages,
                                max_concurrent_jobs=args.capacity,
                                service_time_s=args.service_time)
                node.on_event = self.hook(node)
                self.nodes.append(node)
                await nursery.start(node.run)
            probe_ms = await self.probe()
            nursery.start_soon(self.sample_in_flight)
            emit(event="ready", nodes=len(self.nodes), probe_ms=probe_ms)
            await read_command()
            nursery.cancel_scope.cancel()

    async def sample_in_flight(self) -> None:
        while True:
            self.in_flight.append([now(), sum(n.in_flight for n in self.nodes)])
            await trio.sleep(0.5)

    async def probe(self) -> float | None:
        """One session that retries until an utterance comes back: the nodes are usable."""
        url = self.args.url.replace("/ws/node", "/ws/session")
        started = now()
        with trio.move_on_after(20):
            await trio.sleep(0.3)  # first heartbeats reach the server's node table
            async with connect(url) as peer:
                await peer.send(web_init())
                session_id = (await peer.recv())["session_id"]
                seq = 0
                while True:
                    await peer.send({"type": "audio_chunk", "session_id": session_id,
                                     "seq": seq, "is_final": False,
                                     "payload": opus_chunk_payload(13)})
                    await peer.send({"type": "audio_chunk", "session_id": session_id,
                                     "seq": seq + 1, "is_final": True, "payload": ""})
                    seq += 2
                    try:
                        frame = await peer.recv_type(
                            "translation_result", "error", "missing_result",
                            within=max(2.0, 3 * self.args.service_time),
                        )
                    except trio.TooSlowError:
                        frame = {}
                    if frame.get("type") == "translation_result":
                        break
                    await trio.sleep(0.2)
            await trio.sleep(0.5)  # let the probe's slot release and the socket close
            return round((now() - started) * 1000, 1)
        return None

    def report(self) -> dict[str, Any]:
        return {
            "nodes": len(self.nodes), "assigns": self.assigns, "counts": dict(self.counts),
            "max_in_flight": max((n.max_in_flight for n in self.nodes), default=0),
            "in_flight": self.in_flight,
            "closed": [n.close_reason for n in self.nodes if n.close_reason is not None],
        }


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("sessions", "nodes"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--chunk-interval", type=float, default=0.256)
    parser.add_argument("--chunks-per-utterance", type=int, default=8)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--connect-concurrency", type=int, default=32)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arrival", type=float, default=0.0,
                        help="sessions arrive after go, evenly over this many seconds "
                             "(0: all connect before go)")
    parser.add_argument("--process-index", type=int, default=0,
                        help="this process's place K among the P session processes")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--total-sessions", type=int, default=0,
                        help="sessions of all P processes (default: --sessions)")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--service-time", type=float, default=0.2)
    parser.add_argument("--languages", default="zh,en,ja")
    args = parser.parse_args(argv)
    load = SessionLoad(args) if args.role == "sessions" else NodeLoad(args)
    try:
        with reachability_explained(f"bench_load {args.role}"):
            trio.run(load.run)
    except KeyboardInterrupt:
        pass
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(load.report()))
    emit(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
