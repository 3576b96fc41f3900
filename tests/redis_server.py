"""Throwaway ``redis-server`` processes for the tests: free ports on 127.0.0.1, no persistence.

Readiness is read from the server itself: its log goes to stdout, and the server is ready
once it prints "Ready to accept connections". No sleeping, no polling the port. A reader
thread keeps draining stdout for the server's whole life, so its log can never fill the pipe
and block it.

A Redis Cluster is three such servers started with ``--cluster-enabled yes``, joined by
``redis-cli --cluster create`` (which returns once they agree on the slot map), and ready
when each has logged "Cluster state changed: ok" — about two seconds after it started, since
a new primary waits that long before it takes writes.

Never the Redis on 127.0.0.1:6379, which may be someone's real one.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

READY_LINE = "Ready to accept connections"
CLUSTER_OK_LINE = "Cluster state changed: ok"
NOT_FOUND = "{} not found: run the README's test command, which installs it"


class RedisServerError(RuntimeError):
    """redis-server could not be started; the message carries its output."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return port


class RedisServer:
    """One running ``redis-server`` process; :meth:`stop` ends it."""

    def __init__(self, process: subprocess.Popen[str], port: int, argv: list[str] | None = None
                 ) -> None:
        self.process = process
        self.port = port
        self.argv = argv
        self.url = f"redis://127.0.0.1:{port}/0"
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"redis-server:{port}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)  # EOF: the process closed stdout (it exited)

    def wait_ready(self, timeout: float) -> None:
        """Block until the ready line, or raise RedisServerError with the output so far."""
        self.wait_for(READY_LINE, timeout)

    def wait_for(self, text: str, timeout: float) -> None:
        """Block until the server logs a line containing ``text`` (after the lines already
        waited for), or raise RedisServerError with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise RedisServerError(self._report(f"not ready after {timeout:g} s")) from None
            if line is None:
                code = self.process.wait()
                raise RedisServerError(self._report(f"exited with status {code} before being ready"))
            if text in line:
                return

    def restart(self, timeout: float = 15.0) -> None:
        """Stop the server and start a fresh one on the same port: everything it held is
        gone (no persistence), as after a crash."""
        assert self.argv is not None
        self.stop()
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"redis-server:{self.port}",
                                        daemon=True)
        self._reader.start()
        self.wait_ready(timeout)

    def freeze(self) -> None:
        """Stop the process (SIGSTOP), and return once it is stopped: from then on the
        server answers nothing, though its connections stay open, until :meth:`thaw`."""
        self.process.send_signal(signal.SIGSTOP)
        os.waitpid(self.process.pid, os.WUNTRACED)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _report(self, what: str) -> str:
        output = "\n".join(self.output) or "(no output)"
        return f"redis-server on port {self.port} {what}; its output:\n{output}"


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedisServerError(NOT_FOUND.format(name))
    return path


def _cluster_args(directory: Path, port: int) -> list[str]:
    """Options of a cluster node: its bus on another free port, its own node table file."""
    bus_port = free_port()
    while bus_port == port:
        bus_port = free_port()
    return [
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus_port),
        "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
    ]


def start_redis_server(
    directory: Path, *, cluster: bool = False, timeout: float = 15.0, attempts: int = 3,
    extra_args: tuple[str, ...] = (),
) -> RedisServer:
    """Start redis-server in ``directory`` on a free port and return it once it is ready;
    ``cluster=True`` starts it as a cluster node (of no cluster yet); ``extra_args`` are
    more options (``--requirepass``, say).

    A port that was free when picked can be taken before the server binds it; that attempt
    then fails and other ports are tried, up to ``attempts`` times.
    """
    executable = _executable("redis-server")
    error: RedisServerError | None = None
    for _ in range(attempts):
        port = free_port()
        argv = [
            executable,
            *(_cluster_args(directory, port) if cluster else []),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", "",  # log to stdout, where readiness is read
            "--daemonize", "no",
            *extra_args,
        ]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        server = RedisServer(process, port, argv)
        try:
            server.wait_ready(timeout)
        except RedisServerError as exc:
            server.stop()
            error = exc
            if "Address already in use" not in exc.args[0]:
                break
        else:
            return server
    assert error is not None
    raise error


class RedisClusterServers:
    """The servers of one running Redis Cluster (primaries only); :meth:`stop` ends them."""

    def __init__(self, servers: list[RedisServer]) -> None:
        self.servers = servers
        self.url = f"redis+cluster://127.0.0.1:{servers[0].port}"

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis_cluster(
    directory: Path, *, primaries: int = 3, timeout: float = 15.0
) -> RedisClusterServers:
    """Start a Redis Cluster of ``primaries`` primaries and no replicas on free ports, and
    return it once every node says the cluster is ok."""
    redis_cli = _executable("redis-cli")
    servers: list[RedisServer] = []
    try:
        for _ in range(primaries):
            servers.append(start_redis_server(directory, cluster=True, timeout=timeout))
        _create_cluster(redis_cli, servers, timeout)
        for server in servers:
            server.wait_for(CLUSTER_OK_LINE, timeout)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return RedisClusterServers(servers)


def _create_cluster(redis_cli: str, servers: list[RedisServer], timeout: float) -> None:
    """Join ``servers`` into one cluster, the slots shared evenly among them; returns once
    they agree on the slot map."""
    command = [
        redis_cli, "--cluster", "create",
        *(f"127.0.0.1:{server.port}" for server in servers),
        "--cluster-replicas", "0",
        "--cluster-yes",
    ]
    try:
        create = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise RedisServerError(f"redis-cli --cluster create took over {timeout:g} s") from exc
    if create.returncode != 0:
        raise RedisServerError(
            f"redis-cli --cluster create exited with status {create.returncode}; its "
            f"output:\n{create.stdout}{create.stderr}"
        )
