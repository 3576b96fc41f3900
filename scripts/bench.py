"""Load benchmark: the real server in its own process, streaming browsers and GPU nodes
simulated in other processes, over real sockets.

    .venv/bin/python scripts/bench.py [--sessions 100] [--nodes 50] [--capacity 4]
        [--duration 30] [--service-time 0.2] [--chunks-per-utterance 8]
        [--redis | --redis-url URL] [--workers N] [--arrival S]
        [--target scheduler|relay] [--compare-relay] [--levels 100,1000]
        [--out report.json] [--plot latency.png] [--smoke]

For each load level (and target) it:

1. starts the server under test as a subprocess: ``trio-scheduler serve`` (embedded store,
   ``--redis-url URL``, or ``--redis``: a private ``redis-server`` on a free port), or with
   ``--target relay`` the bare relay ``scripts/relay.py`` (the baseline). ``--workers N``
   runs ``serve --workers N`` (N scheduler processes on the port, children of the serve
   process); as more than one needs a shared store, N > 1 without ``--redis-url`` starts
   the private redis-server as ``--redis`` does. The relay ignores ``--workers``;
2. starts ``scripts/bench_load.py nodes`` (M ``FakeNode`` agents with ``--capacity`` job
   slots each, answering every job after ``--service-time`` s) and, once a probe
   utterance came back, 1–2 ``bench_load.py sessions`` processes sharing the N streaming
   browsers (2 from ``--split-above`` sessions);
3. after every session is open, starts the clock: each browser sends one Plan A chunk
   (13 × 20 ms Opus packets) every 256 ms with ``client_timestamp_ms`` and an ``is_final``
   after every K chunks, for ``--duration`` seconds; then waits up to ``--grace`` s for the
   outstanding results. With ``--arrival S`` (the overload scenario) no browser connects
   before the clock starts: they arrive evenly over the window's first S seconds, each
   sending ``session_init`` and streaming from its own arrival. A server running behind
   answers an arriving browser's upgrade with HTTP 503 (admission control, ``Retry-After``):
   such a browser is counted as *refused* — not an error, not retried.

Measured (all by the load generator, never inside the server):

* utterances/s completed (``is_final`` sent in the window and ``translation_result`` back);
* sessions: ``accepted_sessions`` (``session_init_ack`` received), ``refused_sessions``
  (upgrade answered 503, with ``refused_reasons``: ``overloaded`` / ``session_start_rate``)
  and ``failed_connections`` (anything else);
* outcomes of the ``utterances_sent`` (``is_final`` sent by an accepted session):
  ``utterances_with_outcome`` / ``outcome_percent`` (a ``translation_result`` or a
  ``missing_result`` came back — the browser was told something) and
  ``completed_percent`` (a ``translation_result``); the rest are ``no_outcome``: nothing
  came back before the session closed, ``--grace`` s after the window;
* end-to-end latency: ``is_final`` sent → ``translation_result`` read, p50/p95/p99/max;
* dispatch latency: ``is_final`` sent (session process) → ``job_assign`` read (node
  process). Both stamps are ``time.monotonic()``, i.e. Linux's system-wide
  CLOCK_MONOTONIC, so they compare across processes on one machine exactly (ns
  resolution, no wall-clock steps) — wall-clock ms carried in frames would be coarser and
  the ``job_assign`` does not carry the client's time stamp anyway; samples are joined by
  (session_id, utterance_index). It includes the node process's own read delay;
* server CPU seconds per 1000 utterances: utime+stime from ``/proc/<pid>/stat`` (all
  threads) over the streaming window, of the server process and all its descendants
  (with ``--workers``: the serve parent and every worker, found through their ``ppid``
  and re-listed at each sample, as workers start after the parent); with ``--redis`` the
  redis-server's CPU is reported separately;
* server RSS (``VmRSS`` of ``/proc/<pid>/status``, summed over the same process tree, so
  pages the workers share are counted once per worker): at start, idle (nodes connected,
  no session), with every session open, and while streaming (mean/max) → KiB per accepted
  session. With ``--arrival`` there is no "every session open, not streaming" moment (no
  ``connected`` figure) and the streaming figures are taken after the last arrival;
* errors: ``error`` frames, ``missing_result`` frames, ``ui_event`` errors, utterances with
  no outcome within the grace period, failed connections (a 503 refusal is counted apart,
  as ``refused``), sockets closed by the server, a server that died;
* the generator's own CPU and how late it sent its chunks (``send lag``): when these are
  high the generator, not the server, limits the run.

The report is printed as a table and, with ``--out``, written as JSON. Only the standard
library is needed here (``tqdm`` and ``matplotlib`` are used when installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def code_version() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it (read-only git)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines() if line[3:].startswith("trio_scheduler/")]
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "modified_server_files": changed}


def venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


PYTHON = venv_python()


# ---------------------------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_seconds() -> float:
    """CPU seconds all cores spent not idle (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def try_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def parent_pids() -> dict[int, int]:
    """pid → ppid of every process now (field 4 of ``/proc/<pid>/stat``)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                data = f.read()
            parents[int(entry.name)] = int(data[data.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return parents


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid, names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return int(data[data.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, as they are now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_pids().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


class ProcessTree:
    """CPU and RSS of the server under test: its process and all its descendants (with
    ``serve --workers N`` the parent does no scheduling, its workers do).

    The tree is listed again at every sample (at most once per ``relist_s``, as a scan of
    /proc costs a few ms of the bench's own CPU): workers start after the parent and a
    dead one is restarted under a new pid. CPU over the window is summed per pid, as the
    last reading of each pid seen minus its reading when the window started (0 for a pid
    that did not exist then); a worker that exits keeps its last sampled reading, so at
    most one sampling interval of its CPU is missed."""

    def __init__(self, root: int, relist_s: float = 1.0) -> None:
        self.root, self.relist_s = root, relist_s
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.seen: dict[int, int | None] = {}  # descendant pid → its start time
        self._pids: list[int] = [root]
        self._listed_at = -math.inf

    def pids(self, fresh: bool = False) -> list[int]:
        """The tree's pids, listed again if ``fresh`` or older than ``relist_s``."""
        if fresh or time.monotonic() - self._listed_at >= self.relist_s:
            self._pids, self._listed_at = process_tree(self.root), time.monotonic()
            for pid in self._pids[1:]:
                if pid not in self.seen:
                    self.seen[pid] = start_time(pid)
        return self._pids

    def readings(self, fresh: bool = False) -> dict[int, float]:
        return {pid: cpu for pid in self.pids(fresh) if (cpu := try_cpu(pid)) is not None}

    def mark(self) -> None:
        """The window starts now."""
        self.start = self.readings(fresh=True)
        self.last = dict(self.start)

    def cpu(self, fresh: bool = False) -> float:
        """CPU seconds the tree used since ``mark`` (sampled now)."""
        self.last.update(self.readings(fresh))
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids(fresh=True):
            try:
                total += rss_kib(pid)
            except OSError:
                pass
        return total

    def kill_leftovers(self) -> None:
        """SIGKILL descendants still alive once the root has stopped (a worker that
        outlived a supervisor killed after its stop timeout). Only processes seen in this
        tree, each checked by pid *and* start time, never one that reused a pid."""
        for pid, started in self.seen.items():
            if started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Poll ``check`` until true; a process that exits meanwhile is reported with the
    last line of its ``log`` (where a server says why it could not start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            lines = log.read_text(errors="replace").splitlines() if log else []
            why = f": {lines[-1]}" if lines else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}{why}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout} s")


def tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class RedisServer:
    """A private redis-server on a free port (never 6379), no persistence."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("--redis needs a redis-server binary on PATH")
        self.port = free_port()
        self.log = open(workdir / "redis.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for(self._pong, 10, "redis-server", self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


class Worker:
    """A bench_load.py process: JSON lines on stdout, commands on stdin."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.out = workdir / f"{name}.json"
        self.stderr = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [PYTHON, str(SCRIPTS / "bench_load.py"), *args, "--out", str(self.out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            bufsize=1, cwd=ROOT,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.progress: dict[str, Any] = {}
        self.ready: dict[str, Any] | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "progress":
                self.progress = event
            elif event.get("event") == "ready":
                self.ready = event
            elif event.get("event") == "done":
                self.done.set()
        self.done.set()

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        wait_for(lambda: self.ready is not None, timeout, self.name, self.proc)
        assert self.ready is not None
        return self.ready

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def finish(self, timeout: float) -> dict[str, Any]:
        self.done.wait(timeout)
        code = stop_process(self.proc, 10)
        self.stderr.close()
        if not self.out.exists():
            tail = (self.out.parent / f"{self.name}.log").read_text()[-2000:]
            raise RuntimeError(f"{self.name} wrote no report (exit {code}):\n{tail}")
        return json.loads(self.out.read_bytes())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------
# progress


class Progress:
    def __init__(self, label: str, total: float) -> None:
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.bar = None
        try:
            from tqdm import tqdm  # optional

            self.bar = tqdm(total=round(total, 1), desc=label, unit="s", leave=False,
                            bar_format="{desc} {bar} {n:.0f}/{total:.0f} s {postfix}")
        except ImportError:
            pass

    def update(self, elapsed: float, info: str) -> None:
        elapsed = min(elapsed, self.total)
        if self.bar is not None:
            self.bar.n = round(elapsed, 1)
            self.bar.set_postfix_str(info, refresh=True)
            return
        if self.tty:
            width = 30
            filled = int(width * elapsed / self.total) if self.total else width
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{elapsed:4.0f}/{self.total:.0f} s  {info}   ")
            sys.stderr.flush()
        elif time.monotonic() - self.last_line >= 5:
            self.last_line = time.monotonic()
            print(f"{self.label} {elapsed:.0f}/{self.total:.0f} s  {info}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------
# statistics


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (linear interpolation), max and mean, in the unit of ``values``."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        pos = p * (len(ordered) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p50": round(q(0.50), 2), "p95": round(q(0.95), 2), "p99": round(q(0.99), 2),
            "max": round(ordered[-1], 2), "mean": round(sum(ordered) / len(ordered), 2)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


# ---------------------------------------------------------------------------------------
# one run


def wait_quiet(max_wait: float, threshold: float = 15.0) -> float | None:
    """Wait (at most ``max_wait`` s) until the machine's CPU use over 1 s is below
    ``threshold`` % of one core; the last measured use, None when not waited."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    while True:
        before = system_busy_seconds()
        time.sleep(1.0)
        busy = 100 * (system_busy_seconds() - before)
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                print(f"WARNING: the machine is busy ({busy:.0f}% of a core used by other "
                      f"programs); measuring anyway", file=sys.stderr)
            return round(busy, 1)


def check_open_files(sessions: int, nodes: int, processes: int) -> dict[str, Any]:
    """Raise the soft RLIMIT_NOFILE (inherited by every child) to what the run needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server_needs = sessions + nodes + 64
    generator_needs = math.ceil(sessions / processes) + 64
    needed = max(server_needs, generator_needs)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(f"WARNING: open-file limit {soft} < {needed} needed by the server "
              f"({sessions} sessions + {nodes} nodes + ~64); raise it with `ulimit -n "
              f"{needed}` (hard limit {hard})", file=sys.stderr)
    return {"soft": soft, "hard": hard, "server_needs": server_needs}


def server_command(target: str, port: int, args: argparse.Namespace, redis_url: str | None,
                   workdir: Path) -> tuple[list[str], str | None]:
    """The command line of the server under test and its admin token (None: no admin API).

    Without ``--server-config`` the scheduler gets a generated config: an admin token, so
    the bench can read the scheduler's own view of reserved node slots (``GET
    /admin/nodes``), and with Redis a fresh key prefix, so runs never see each other's
    node records."""
    if target == "relay":
        return [PYTHON, str(SCRIPTS / "relay.py"), "--host", "127.0.0.1", "--port",
                str(port)], None
    entry = Path(PYTHON).parent / "trio-scheduler"
    command = [str(entry)] if entry.exists() else [PYTHON, "-m", "trio_scheduler"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-format", "json"]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    token = None
    config = args.server_config
    if config is None:
        token = f"bench-{secrets.token_hex(8)}"
        config = workdir / "scheduler.toml"
        text = f'[admin]\ntoken = "{token}"\n'
        if redis_url is not None:
            text += f'[store]\nkey_prefix = "bench-{secrets.token_hex(4)}:"\n'
        config.write_text(text)
    command += ["--config", str(config)]
    return command, token


class SlotSampler(threading.Thread):
    """Once a second: the node slots the scheduler holds reserved (``GET /admin/nodes``,
    sum of ``reserved_jobs``) and how long that HTTP answer took.

    With ``--workers N`` each request is answered by whichever worker the kernel hands
    the connection to, so a sample may be one worker's view of the reservations, not
    the sum over workers; the series is then only indicative.

    A request that times out (an overloaded server answers HTTP late) is counted in
    ``timeouts`` and the sampling goes on; any other failure (no admin API) ends it."""

    def __init__(self, port: int, token: str, t0: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.t0 = f"http://127.0.0.1:{port}/admin/nodes", token, t0
        self.samples: list[list[float]] = []  # [t - t0, reserved, answer ms]
        self.stopped = threading.Event()
        self.failed: str | None = None
        self.timeouts = 0

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            started = time.monotonic()
            request = urllib.request.Request(
                self.url, headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    rows = json.loads(resp.read())["nodes"]
            except (OSError, ValueError, KeyError) as exc:
                if isinstance(exc, TimeoutError) or isinstance(
                        getattr(exc, "reason", None), TimeoutError):  # urllib wraps some
                    self.timeouts += 1
                    continue
                self.failed = f"{type(exc).__name__}: {exc}"
                return
            done = time.monotonic()
            self.samples.append([round(started - self.t0, 2),
                                 sum(row.get("reserved_jobs", 0) for row in rows),
                                 round((done - started) * 1000, 1)])


def run_level(target: str, sessions: int, args: argparse.Namespace,
              redis: RedisServer | None, workdir: Path) -> dict[str, Any]:
    redis_url = args.redis_url or (redis.url if redis else None)
    store = None if target == "relay" else ("redis" if redis_url else "memory")
    if store is not None and args.workers is not None:
        store += f"×{args.workers}"
    processes = 2 if sessions >= args.split_above else 1
    limits = check_open_files(sessions, args.nodes, processes)
    label = f"{target}{'/' + store if store else ''} {sessions} sessions"
    rundir = workdir / f"{target}-{(store or 'none').replace('×', 'x')}-{sessions}"
    rundir.mkdir(parents=True, exist_ok=True)

    quiet = wait_quiet(args.quiet_wait)
    port = free_port()
    server_log = open(rundir / "server.log", "w")
    command, admin_token = server_command(target, port, args, redis_url, rundir)
    server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT, cwd=ROOT)
    tree = ProcessTree(server.pid)
    workers: list[Worker] = []
    try:
        if target == "relay":
            wait_for(lambda: tcp_open(port), 20, "relay", server, rundir / "server.log")
        else:
            wait_for(lambda: http_ready(port), 20, "scheduler /ready", server,
                     rundir / "server.log")
            if args.workers is not None:
                # /ready is answered by the first worker up; nodes must find all of them
                wait_for(lambda: "workers listening" in (rundir / "server.log").read_text(),
                         30, "serve --workers", server, rundir / "server.log")
        rss_start = tree.rss_kib()

        nodes = Worker("nodes", [
            "nodes", "--url", f"ws://127.0.0.1:{port}/ws/node", "--nodes", str(args.nodes),
            "--capacity", str(args.capacity), "--service-time", str(args.service_time),
        ], rundir)
        workers.append(nodes)
        probe = nodes.wait_ready(60)
        if probe.get("probe_ms") is None:
            raise RuntimeError("no probe utterance came back: the nodes are not usable")
        time.sleep(0.3)
        rss_idle = tree.rss_kib()

        shares = [sessions // processes + (1 if k < sessions % processes else 0)
                  for k in range(processes)]
        loads = []
        for k, share in enumerate(shares):
            loads.append(Worker(f"sessions{k}", [
                "sessions", "--url", f"ws://127.0.0.1:{port}/ws/session",
                "--sessions", str(share), "--chunks-per-utterance", str(args.chunks_per_utterance),
                "--chunk-interval", str(args.chunk_interval), "--grace", str(args.grace),
                "--seed", str(k + 1), "--arrival", str(args.arrival),
                "--process-index", str(k), "--processes", str(processes),
                "--total-sessions", str(sessions),
            ], rundir))
        workers.extend(loads)
        connect_started = time.monotonic()
        for load in loads:
            load.wait_ready(90)  # with --arrival: at once, nobody connected yet
        connect_s = time.monotonic() - connect_started
        rss_connected = None
        if not args.arrival:
            time.sleep(0.5)
            rss_connected = tree.rss_kib()

        t0 = time.monotonic() + 0.5
        t_end = t0 + args.duration
        for load in loads:
            load.command(f"go {t0:.6f} {t_end:.6f}")
        time.sleep(max(0.0, t0 - time.monotonic()))
        pids = {"nodes": nodes.proc.pid,
                "redis": redis.proc.pid if (redis and store and store.startswith("redis"))
                else None}
        cpu0 = {name: try_cpu(pid) for name, pid in pids.items()}
        tree.mark()
        cpu0["server"] = 0.0  # the tree's CPU counts from mark()
        cpu0["sessions"] = sum(try_cpu(w.proc.pid) or 0.0 for w in loads)
        cpu0["system"] = system_busy_seconds()
        cpu0["bench"] = time.process_time()
        rss_samples: list[list[float]] = []  # [t - t0, KiB]
        other_series: list[float] = []  # per second: machine CPU % not used by the bench
        ours_pids = [pid for pid in (nodes.proc.pid, pids["redis"],
                                     *(w.proc.pid for w in loads)) if pid is not None]

        def busy_sample() -> tuple[float, float, float]:
            return (time.monotonic(), system_busy_seconds(),
                    tree.cpu() + sum(try_cpu(pid) or 0.0 for pid in ours_pids)
                    + time.process_time())

        last_busy = busy_sample()
        sampler = SlotSampler(port, admin_token, t0) if admin_token else None
        if sampler is not None:
            sampler.start()
        progress = Progress(label, args.duration)
        next_rss = t0 + min(2.0, args.duration / 3)
        try:
            while (now := time.monotonic()) < t_end:
                if server.poll() is not None:
                    raise RuntimeError(f"server exited with {server.returncode} during the run")
                if now >= next_rss:
                    rss_samples.append([now - t0, tree.rss_kib()])
                    next_rss = now + 1.0
                if now - last_busy[0] >= 1.0:
                    sample = busy_sample()
                    other = (sample[1] - last_busy[1]) - (sample[2] - last_busy[2])
                    other_series.append(round(max(0.0, 100 * other / (sample[0] - last_busy[0])),
                                              1))
                    last_busy = sample
                finals = sum(w.progress.get("finals", 0) for w in loads)
                results = sum(w.progress.get("results", 0) for w in loads)
                errors = sum(w.progress.get("errors", 0) for w in loads)
                refused = sum(w.progress.get("refused", 0) for w in loads)
                busy = 100 * tree.cpu() / max(1e-9, now - t0)
                progress.update(now - t0, f"sent {finals}  done {results}  errors {errors}  "
                                          + (f"refused {refused}  " if refused else "")
                                          + f"server cpu {busy:.0f}%")
                time.sleep(0.25)
        finally:
            progress.close()
            if sampler is not None:
                sampler.stopped.set()
        cpu1 = {name: try_cpu(pid) for name, pid in pids.items()}
        cpu1["server"] = tree.cpu(fresh=True)
        cpu1["sessions"] = sum(try_cpu(w.proc.pid) or 0.0 for w in loads)
        cpu1["system"] = system_busy_seconds()
        cpu1["bench"] = time.process_time()
        window = time.monotonic() - t0

        reports = [load.finish(args.grace + 60) for load in loads]
        nodes.command("stop")
        node_report = nodes.finish(30)
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode} during the run")
    finally:
        for worker in workers:
            worker.kill()
        tree.pids(fresh=True)  # the workers, for kill_leftovers
        exit_code = stop_process(server)
        tree.kill_leftovers()
        server_log.close()

    return summarize(
        target=target, store=store, sessions=sessions, args=args, processes=processes,
        reports=reports, node_report=node_report, cpu0=cpu0, cpu1=cpu1, window=window,
        rss={"start": rss_start, "idle": rss_idle, "connected": rss_connected,
             "samples": rss_samples}, other_series=other_series,
        connect_s=connect_s, exit_code=exit_code, quiet=quiet, sampler=sampler, t0=t0,
        limits=limits, logs=str(rundir),
    )


def run_measured(target: str, sessions: int, args: argparse.Namespace,
                 redis: RedisServer | None, workdir: Path) -> dict[str, Any]:
    """``run_level``, repeated (``--retries``) while other programs took more than
    ``--max-other-cpu`` % of a core during the window; the least disturbed run is kept."""
    best: dict[str, Any] | None = None
    for attempt in range(1, args.retries + 2):
        run = run_level(target, sessions, args, redis, workdir / f"try{attempt}")
        run["attempt"] = attempt
        if best is None or run["other_cpu_percent"] < best["other_cpu_percent"]:
            best = run
        if run["other_cpu_percent"] <= args.max_other_cpu:
            break
        if attempt <= args.retries:
            print(f"{target} {sessions}: other programs used {run['other_cpu_percent']}% of a "
                  f"core during the run; measuring again", file=sys.stderr)
    assert best is not None
    best["disturbed"] = best["other_cpu_percent"] > args.max_other_cpu
    return best


def summarize(*, target, store, sessions, args, processes, reports, node_report, cpu0, cpu1,
              window, rss, connect_s, exit_code, limits, logs, other_series, quiet, sampler,
              t0) -> dict[str, Any]:
    rows = [row for report in reports for row in report["utterances"]]
    assigned: dict[tuple[str, int], float] = {}
    for session_id, index, at in node_report["assigns"]:
        assigned.setdefault((session_id, index), at)
    e2e_ms, dispatch_ms = [], []
    completed = 0
    for session_id, index, sent_at, outcome_at, missing in rows:
        if outcome_at is not None and missing is None:
            completed += 1
            e2e_ms.append((outcome_at - sent_at) * 1000)
        at = assigned.get((session_id, index))
        if at is not None:
            dispatch_ms.append((at - sent_at) * 1000)

    breakdown: dict[str, int] = {}
    for report in reports:
        for key, count in report["errors"].items():
            breakdown[key] = breakdown.get(key, 0) + count
    failed = [msg for report in reports for msg in report["failed_connections"]]
    if failed:
        breakdown["failed_connection"] = len(failed)
    node_errors = node_report["counts"].get("error", 0)
    if node_errors:
        breakdown["node_error_frame"] = node_errors
    if node_report["closed"]:
        breakdown["node_disconnected"] = len(node_report["closed"])
    if exit_code not in (0, None) and target == "scheduler":
        breakdown["server_exit_code"] = 1

    def delta(name: str) -> float | None:
        if cpu0.get(name) is None or cpu1.get(name) is None:
            return None
        return cpu1[name] - cpu0[name]

    server_cpu = delta("server") or 0.0
    redis_cpu = delta("redis")
    per_k = (lambda cpu: round(cpu / completed * 1000, 3) if completed and cpu is not None
             else None)
    accepted = sum(report["connected"] for report in reports)
    refused: dict[str, int] = {}
    for report in reports:
        for reason, count in report.get("refused", {}).items():
            refused[reason] = refused.get(reason, 0) + count
    with_outcome = sum(1 for row in rows if row[3] is not None)
    percent = (lambda part: round(100 * part / len(rows), 1) if rows else None)
    samples = streaming_rss(rss, args.arrival)
    streaming_mean = sum(samples) / len(samples)
    per_session = max(1, accepted)  # memory is held by the sessions the server took
    ours = sum(delta(name) or 0.0 for name in ("server", "redis", "nodes", "sessions", "bench"))
    other_cpu = max(0.0, (delta("system") or 0.0) - ours)
    in_window = [row for row in node_report["in_flight"] if 0 <= row[0] - t0 <= window]
    slots = {
        # what the nodes really run, summed over nodes, sampled every 0.5 s
        "node_in_flight_mean": round(sum(r[1] for r in in_window) / len(in_window), 1)
        if in_window else None,
        "node_in_flight_max": max((r[1] for r in in_window), default=None),
        "capacity": args.nodes * args.capacity,
    }
    if sampler is not None:
        reserved = sampler.samples
        slots.update({
            # what the scheduler holds reserved (GET /admin/nodes), sampled every 1 s
            "scheduler_reserved_mean": round(sum(r[1] for r in reserved) / len(reserved), 1)
            if reserved else None,
            "scheduler_reserved_max": max((r[1] for r in reserved), default=None),
            "admin_answer_ms_max": max((r[2] for r in reserved), default=None),
            "reserved_series": [r[1] for r in reserved],
            "admin_answer_ms_series": [round(r[2], 1) for r in reserved],
            "sampler_error": sampler.failed,
            "sampler_timeouts": sampler.timeouts,
        })
    lag = [v for report in reports for v in report["lag_ms"]]
    chunks = sum(report["chunks_sent"] for report in reports)
    return {
        "target": target,
        "store": store,
        "sessions": sessions,
        "nodes": args.nodes,
        "node_capacity": args.capacity,
        "service_time_s": args.service_time,
        "chunks_per_utterance": args.chunks_per_utterance,
        "duration_s": round(window, 2),
        "load_processes": processes,
        "workers": args.workers if target == "scheduler" else None,
        "arrival_s": args.arrival,
        "connected_sessions": accepted,
        "accepted_sessions": accepted,
        "refused_sessions": sum(refused.values()),
        "refused_reasons": refused,
        "connect_all_s": round(connect_s, 2) if not args.arrival else None,
        # arrival (or connect start) → session_init_ack, accepted sessions only
        "session_connect_ms": percentiles([v for r in reports for v in r.get("connect_ms", [])]),
        "utterances_sent": len(rows),
        "utterances_completed": completed,
        "utterances_with_outcome": with_outcome,
        "utterances_no_outcome": len(rows) - with_outcome,
        "outcome_percent": percent(with_outcome),
        "completed_percent": percent(completed),
        "utterances_per_s": round(completed / window, 2),
        "chunks_sent": chunks,
        "latency_ms": percentiles(e2e_ms),
        "dispatch_ms": percentiles(dispatch_ms),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_percent": round(100 * server_cpu / window, 1),
        "server_cpu_s_per_1000_utt": per_k(server_cpu),
        "redis_cpu_s_per_1000_utt": per_k(redis_cpu),
        "rss_mib": {
            "start": round(rss["start"] / 1024, 1),
            "idle": round(rss["idle"] / 1024, 1),
            "connected": round(rss["connected"] / 1024, 1)
            if rss["connected"] is not None else None,
            "streaming_mean": round(streaming_mean / 1024, 1),
            "streaming_max": round(max(samples) / 1024, 1),
        },
        "rss_kib_per_session": round(max(0.0, streaming_mean - rss["idle"]) / per_session, 1),
        "rss_kib_per_connected_session": round(
            max(0.0, rss["connected"] - rss["idle"]) / per_session, 1)
        if rss["connected"] is not None else None,
        "errors": sum(breakdown.values()),
        "error_breakdown": breakdown,
        "failed_connections": len(failed),
        "failed_connection_samples": failed[:5],
        "backpressure_frames": sum(report["backpressure"] for report in reports),
        "generator": {
            "sessions_cpu_percent": round(100 * (delta("sessions") or 0.0) / window, 1),
            "nodes_cpu_percent": round(100 * (delta("nodes") or 0.0) / window, 1),
            "send_lag_ms": percentiles(lag),
            "node_max_in_flight": node_report["max_in_flight"],
        },
        # CPU used on this machine by anything but the server, redis and the generator
        # during the window (other programs, the kernel's share): a disturbed run shows here
        "other_cpu_percent": round(100 * other_cpu / window, 1),
        "other_cpu_max_1s_percent": max(other_series, default=None),
        "other_cpu_series": other_series,
        "machine_busy_before_percent": quiet,
        "node_slots": slots,
        "server_exit_code": exit_code,
        "open_files": limits,
        "logs": logs,
    }


def streaming_rss(rss: dict[str, Any], arrival: float) -> list[float]:
    """The RSS samples (KiB) that show the streaming load: with ``--arrival``, those taken
    after the last arrival (while sessions still arrive the server holds fewer); without
    any sample, the figure before the window."""
    samples = [kib for at, kib in rss["samples"] if at >= arrival]
    if not samples:
        samples = [kib for _, kib in rss["samples"]]
    return samples or [rss["connected"] if rss["connected"] is not None else rss["idle"]]


# ---------------------------------------------------------------------------------------
# output


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(runs: list[dict[str, Any]]) -> None:
    header = ("target", "store", "sess", "refused", "nodes", "utt/s", "outcome %", "done %",
              "e2e p50", "p95", "p99", "max",
              "disp p50", "p95", "p99", "cpu s/1k utt", "cpu %", "redis s/1k", "RSS idle MiB",
              "KiB/sess", "slots held", "slots busy", "gen cpu %", "lag p99", "other cpu %",
              "errors")
    lines = []
    for r in runs:
        lat, disp = r["latency_ms"], r["dispatch_ms"]
        lines.append((
            r["target"], r["store"] or "–", str(r["sessions"]), str(r["refused_sessions"]),
            str(r["nodes"]), fmt(r["utterances_per_s"]), fmt(r["outcome_percent"]),
            fmt(r["completed_percent"]), fmt(lat["p50"]), fmt(lat["p95"]), fmt(lat["p99"]),
            fmt(lat["max"]), fmt(disp["p50"]), fmt(disp["p95"]), fmt(disp["p99"]),
            fmt(r["server_cpu_s_per_1000_utt"], 2), fmt(r["server_cpu_percent"]),
            fmt(r["redis_cpu_s_per_1000_utt"], 2),
            fmt(r["rss_mib"]["idle"]), fmt(r["rss_kib_per_session"]),
            fmt(r["node_slots"].get("scheduler_reserved_mean")),
            fmt(r["node_slots"]["node_in_flight_mean"]),
            fmt(r["generator"]["sessions_cpu_percent"] + r["generator"]["nodes_cpu_percent"]),
            fmt(r["generator"]["send_lag_ms"]["p99"]), fmt(r["other_cpu_percent"]),
            str(r["errors"]),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(line, widths)) + " |")
    for r in runs:
        if r.get("disturbed"):
            print(f"note: {r['target']} {r['sessions']} was disturbed: other programs used "
                  f"{r['other_cpu_percent']}% of a core during it")
        if r["refused_sessions"]:
            print(f"refused in {r['target']} {r['sessions']}: {r['refused_sessions']} "
                  f"sessions (HTTP 503) {r['refused_reasons']}; "
                  f"{r['accepted_sessions']} accepted")
        if r["errors"]:
            print(f"errors in {r['target']} {r['sessions']}: {r['error_breakdown']}"
                  + (f" e.g. {r['failed_connection_samples']}" if r["failed_connections"]
                     else ""))


def plot(runs: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed in this environment; no plot "
              f"(pip install matplotlib to get one)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        series.setdefault(f"{r['target']}{'/' + r['store'] if r['store'] else ''}", []).append(r)
    for name, rs in series.items():
        rs = sorted(rs, key=lambda r: r["sessions"])
        xs = [r["sessions"] for r in rs]
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.plot(xs, [r["latency_ms"][q] for r in rs], style, marker="o",
                    label=f"{name} {q}")
    ax.set_xlabel("streaming sessions")
    ax.set_ylabel("is_final → translation_result (ms)")
    ax.set_title("End-to-end latency vs load")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


# ---------------------------------------------------------------------------------------


REPORT_HELP = """\
report (table, and JSON with --out), per run, among others:
  refused            sessions whose upgrade got HTTP 503 (admission control), not retried
                     (refused_sessions, refused_reasons; accepted_sessions took the rest)
  outcome %          utterances_with_outcome / utterances_sent: a translation_result or a
                     missing_result came back (outcome_percent); the rest: no_outcome
  done %             translation_result only (completed_percent)
  cpu s/1k utt, RSS  the server's whole process tree (serve --workers: parent + workers)
  store              memory, redis, or e.g. redis×2 with --workers 2
See the module docstring (scripts/bench.py) for every measure."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("scheduler", "relay"), default="scheduler")
    parser.add_argument("--sessions", type=int, default=100, help="streaming browsers")
    parser.add_argument("--levels", help="comma-separated session counts, e.g. 50,100,200 "
                                         "(instead of --sessions)")
    parser.add_argument("--nodes", type=int, default=50, help="simulated GPU nodes")
    parser.add_argument("--capacity", type=int, default=4,
                        help="job slots per node (its max_concurrent_jobs)")
    parser.add_argument("--service-time", type=float, default=0.2,
                        help="seconds a node takes for each job")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run `serve --workers N` (default 1: a single serve process, "
                             "no supervisor); N > 1 without --redis-url implies --redis. "
                             "Server CPU and RSS cover the parent and all its workers")
    parser.add_argument("--arrival", type=float, default=0.0, metavar="S",
                        help="overload scenario: no session connects before the window; "
                             "they arrive evenly over its first S seconds (at most "
                             "--duration) and stream from their arrival; 503 answers are "
                             "counted as refused (default 0: all connect first)")
    parser.add_argument("--duration", type=float, default=30.0, help="streaming seconds per run")
    parser.add_argument("--chunks-per-utterance", "-K", type=int, default=8,
                        help="is_final after every K chunks (8 × 256 ms ≈ 2 s utterances)")
    parser.add_argument("--chunk-interval", type=float, default=0.256)
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds to wait for outstanding results after the window")
    parser.add_argument("--split-above", type=int, default=200,
                        help="use 2 session processes from this many sessions on")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--redis-url", help="scheduler store: this Redis (a fresh key prefix "
                                           "per run unless --server-config is given)")
    store.add_argument("--redis", action="store_true",
                       help="start a private redis-server on a free port for the store")
    parser.add_argument("--server-config", type=Path, help="--config for trio-scheduler serve")
    parser.add_argument("--compare-relay", action="store_true",
                        help="run every level through scripts/relay.py too and print ratios")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--plot", help="latency percentiles vs load, as PNG (needs matplotlib)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds of tiny load (for the test suite)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each run, wait up to this many seconds for other "
                             "programs to leave the CPU idle (0: do not wait)")
    parser.add_argument("--max-other-cpu", type=float, default=30.0,
                        help="a run during which other programs (and the kernel's network "
                             "work) used more than this %% of a core counts as disturbed")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure a disturbed run again, up to this many times")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep server and worker logs (their directory is printed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.sessions, args.levels, args.nodes = 4, None, 2
        args.duration, args.service_time, args.chunks_per_utterance = 3.0, 0.05, 4
        args.grace = 5.0
        args.quiet_wait, args.retries = 0.0, 0
    if args.workers is not None and args.workers < 1:
        build_parser().error("--workers must be at least 1")
    if not 0 <= args.arrival <= args.duration:
        build_parser().error("--arrival must be between 0 and --duration")
    levels = [int(x) for x in args.levels.split(",")] if args.levels else [args.sessions]
    targets = ["scheduler", "relay"] if args.compare_relay else [args.target]
    if args.redis_url and ":6379" in args.redis_url:
        print("WARNING: --redis-url points at port 6379 (a shared Redis?)", file=sys.stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"open files: soft {soft}, hard {hard}; the server needs about "
          f"sessions + nodes + 64 = {max(levels) + args.nodes + 64}", file=sys.stderr)

    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    # more than one worker needs a shared store: the private one unless a URL was given
    needs_redis = args.redis or (args.workers or 1) > 1 and not args.redis_url
    redis = RedisServer(workdir) if needs_redis and "scheduler" in targets else None
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        for sessions in levels:
            for target in targets:
                try:
                    runs.append(run_measured(target, sessions, args, redis, workdir))
                except (RuntimeError, OSError, ValueError) as exc:
                    failures.append(f"{target} {sessions}: {exc}")
                    print(f"run failed: {target} {sessions} sessions: {exc}", file=sys.stderr)
    finally:
        if redis is not None:
            redis.stop()

    comparison = []
    for sessions in levels:
        pair = {r["target"]: r for r in runs if r["sessions"] == sessions}
        if "scheduler" in pair and "relay" in pair:
            s, rl = pair["scheduler"], pair["relay"]
            comparison.append({
                "sessions": sessions,
                "cpu_per_utt_ratio": ratio(s["server_cpu_s_per_1000_utt"],
                                           rl["server_cpu_s_per_1000_utt"]),
                "p99_latency_ratio": ratio(s["latency_ms"]["p99"], rl["latency_ms"]["p99"]),
                "p50_latency_ratio": ratio(s["latency_ms"]["p50"], rl["latency_ms"]["p50"]),
                "rss_per_session_ratio": ratio(s["rss_kib_per_session"],
                                               rl["rss_kib_per_session"]),
            })
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "open_files": [soft, hard]},
        "code": code_version(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "comparison": comparison,
        "failures": failures,
    }
    if runs:
        print_table(runs)
    for c in comparison:
        print(f"scheduler/relay at {c['sessions']} sessions: CPU per utterance "
              f"×{fmt(c['cpu_per_utt_ratio'], 2)}, p99 latency ×{fmt(c['p99_latency_ratio'], 2)}"
              f", p50 ×{fmt(c['p50_latency_ratio'], 2)}")
    if not args.keep_logs:
        for run in runs:
            run["logs"] = None  # removed below
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.out}")
    if args.plot:
        plot(runs, args.plot)
    if args.keep_logs:
        print(f"logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
