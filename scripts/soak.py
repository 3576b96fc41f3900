"""Soak: the real server under steady load for a long time, with peers coming and going,
sampled for anything that grows.

    python scripts/soak.py [--minutes 20] [--sessions 200] [--nodes 20] [--sample-s 60]
                           [--redis-url URL] [--out soak.json]

The server runs as its own process (``trio-scheduler serve``); the load runs in this one:

* ``--sessions`` browsers streaming as the web client does (a 13-packet Plan A chunk every
  256 ms, ``is_final`` after 8 chunks); each lives 20–120 s, leaves (closes its socket, as
  the web client does) and is replaced by a new one a few seconds later;
* ``--nodes`` node agents answering each job after 50 ms; each stays 30–180 s, then drops
  its socket and reconnects 5 s later with its id, as the real agent does; now and then one
  reconnects while its old socket is still open (a takeover).

Every ``--sample-s`` the server's ``/metrics`` is read: resident memory, open file
descriptors, Trio tasks, and the size of every long-lived map (``retained_entries``), with
the jobs done so far. At the end the load stops, and one more sample is taken once every
session has ended: the maps must be back to their idle size. The samples go to ``--out``
(JSON) and are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from trio_scheduler.simulate.frames import (
    audio_chunk_frame,
    heartbeat_frame,
    one_way_init,
    opus_chunk_payload,
    register_frame,
    result_frame,
)
from trio_scheduler.simulate.peer import CannotConnect, connect
from trio_scheduler.simulate.script import reachability_explained

CHUNK_S = 0.256
CHUNKS_PER_UTTERANCE = 8
SERVICE_S = 0.05
WATCHED = ("process_resident_memory_bytes", "process_open_fds", "trio_scheduler_trio_tasks",
           "trio_scheduler_jobs_started_total", "trio_scheduler_sessions_open")


class Load:
    def __init__(self, port: int, rng: random.Random) -> None:
        self.base = f"ws://127.0.0.1:{port}"
        self.rng = rng
        self.outcomes = 0
        self.sessions_run = 0
        self.node_connections = 0
        self.takeovers = 0
        self.payload = opus_chunk_payload(13)

    async def browser_slot(self) -> None:
        """One browser after another, each living a while."""
        await trio.sleep(self.rng.uniform(0, 5))  # spread the starts
        while True:
            with trio.move_on_after(self.rng.uniform(20, 120)):
                try:
                    await self._browser()
                except* (trio_websocket.ConnectionClosed, CannotConnect):
                    pass  # the server closed it (its tasks may each say so): reconnect
            await trio.sleep(self.rng.uniform(3, 7))  # the web client reconnects

    async def _browser(self) -> None:
        async with connect(f"{self.base}/ws/session") as client:
            await client.send(one_way_init("zh", "en"))
            session_id = (await client.recv_type("session_init_ack"))["session_id"]
            self.sessions_run += 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._count_outcomes, client)
                seq = 0
                while True:
                    await client.send(audio_chunk_frame(session_id, seq, payload=self.payload,
                                                        is_final=False))
                    seq += 1
                    if seq % CHUNKS_PER_UTTERANCE == 0:
                        await client.send(audio_chunk_frame(session_id, seq, is_final=True,
                                                            payload=""))
                        seq += 1
                    await trio.sleep(CHUNK_S)

    async def _count_outcomes(self, client) -> None:
        async for frame in client.frames("translation_result", "missing_result"):
            self.outcomes += 1

    async def node_slot(self, index: int) -> None:
        """One node agent: it stays a while, drops, and comes back with its id."""
        node_id = f"soak-node-{index}"
        while True:
            stay_s = self.rng.uniform(30, 180)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._node, node_id, stay_s)
                    if self.rng.random() < 0.2:  # a takeover: the new socket comes early
                        await trio.sleep(stay_s - 1)
                        self.takeovers += 1
                        await self._node(node_id, 10)
            except* (trio_websocket.ConnectionClosed, CannotConnect):
                pass  # taken over (4001) or dropped: the agent reconnects
            await trio.sleep(5)  # the agent reconnects after 5 s

    async def _node(self, node_id: str, stay_s: float) -> None:
        with trio.move_on_after(stay_s):
            async with connect(f"{self.base}/ws/node") as node:
                await node.send(register_frame(node_id=node_id, max_concurrent_jobs=16))
                await node.recv_type("node_register_ack")
                await node.send(heartbeat_frame(node_id))
                self.node_connections += 1
                async with trio.open_nursery() as jobs:
                    jobs.start_soon(self._heartbeats, node, node_id)
                    async for job in node.frames("job_assign"):
                        jobs.start_soon(self._answer, node, node_id, job)

    async def _heartbeats(self, node, node_id: str) -> None:
        while True:
            await trio.sleep(15)  # the agent's heartbeat period
            await node.send(heartbeat_frame(node_id))

    async def _answer(self, node, node_id: str, job: dict) -> None:
        await trio.sleep(SERVICE_S)  # the node's processing time
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await node.send(result_frame(job, node_id))


async def scrape(port: int) -> dict[str, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    body = raw.partition(b"\r\n\r\n")[2].decode()
    sample = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name in WATCHED:
                sample[s.name] = s.value
            elif s.name == "trio_scheduler_retained_entries":
                sample[s.labels["map"]] = s.value
    return sample


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "trio_scheduler", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--log-format", "json", "--log-level", "warning"]
    if args.redis_url:
        command += ["--redis-url", args.redis_url]
    log = open(log_path, "w")  # noqa: SIM115 (kept open for the process's life)
    return subprocess.Popen(command, stdout=log, stderr=log, env=os.environ.copy())


async def wait_until_serving(port: int, process: subprocess.Popen) -> None:
    with trio.fail_after(30):
        while process.poll() is None:
            with contextlib.suppress(OSError):
                await scrape(port)
                return
            await trio.sleep(0.2)  # the server process is starting
    raise SystemExit(f"soak: the server exited ({process.returncode}) before serving")


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"soak-server-{port}.log"
    process = start_server(args, port, log_path)
    samples = []
    started = time.monotonic()
    try:
        await wait_until_serving(port, process)
        load = Load(port, random.Random(args.seed))

        async def sample(phase: str) -> None:
            row = {"minute": round((time.monotonic() - started) / 60, 1), "phase": phase,
                   **await scrape(port), "outcomes": load.outcomes,
                   "sessions_run": load.sessions_run, "node_connections": load.node_connections,
                   "takeovers": load.takeovers}
            samples.append(row)
            print(json.dumps(row), flush=True)

        await sample("idle")
        async with trio.open_nursery() as nursery:
            for index in range(args.nodes):
                nursery.start_soon(load.node_slot, index)
            for _ in range(args.sessions):
                nursery.start_soon(load.browser_slot)
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                await trio.sleep(min(args.sample_s, max(end - time.monotonic(), 0)))
                await sample("load")
            nursery.cancel_scope.cancel()
        with trio.move_on_after(60):  # every session of the load ends (its cleanup ran)
            while (await scrape(port)).get("sessions", 0):
                await trio.sleep(0.5)
        await sample("after")
    finally:
        process.terminate()
        process.wait(timeout=30)
    Path(args.out).write_text(json.dumps(samples, indent=1))
    print_table(samples, args)


def print_table(samples: list[dict], args: argparse.Namespace) -> None:
    columns = ["minute", "phase", "process_resident_memory_bytes", "process_open_fds",
               "trio_scheduler_trio_tasks", "sessions", "dispatcher_routes",
               "dispatcher_ended_jobs", "dispatcher_waiting_jobs", "nodes_registered",
               "nodes_departed", "pairing_codes", "unsent_outcomes", "outcomes"]
    names = ["min", "phase", "RSS MiB", "fds", "tasks", "sessions", "routes", "dedup",
             "waiting", "nodes", "departed", "pairings", "unsent", "outcomes"]
    print(f"\n{args.sessions} browser slots, {args.nodes} node slots, {args.minutes} min, "
          f"store {'redis' if args.redis_url else 'memory'}")
    print("| " + " | ".join(names) + " |")
    print("|" + "---|" * len(names))
    for row in samples:
        cells = []
        for column in columns:
            value = row.get(column, 0)
            if column == "process_resident_memory_bytes":
                value = f"{value / 2**20:.0f}"
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            cells.append(str(value))
        print("| " + " | ".join(cells) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--sample-s", type=float, default=60)
    parser.add_argument("--redis-url")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="soak.json")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    with reachability_explained("soak"):
        trio.run(main, arguments)
