"""Scheduler instances as real processes (``python -m trio_scheduler serve``), for tests
that kill one without warning (SIGKILL) or run the supervised ``--workers`` parent.

Readiness is read from the process's own log (its "scheduler listening" line), as for
redis-server: no sleeping, no polling of the port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_EVENT = "scheduler listening"


class InstanceError(RuntimeError):
    pass


# The suite shares a machine with itself and others: a test about something else must not
# be turned away by admission control because its neighbours load the CPU. Admission
# control's own tests set these.
LENIENT_ADMISSION = {"overload_lag_ms": 60_000, "overload_cpu_percent": 100_000.0,
                     "max_session_starts_per_s": 100_000.0}


def write_config(path: Path, sections: dict[str, dict]) -> Path:
    """A TOML config with ``sections`` (flat values only: numbers, strings, booleans);
    admission control is lenient unless ``sections`` says otherwise."""
    sections = {**sections, "server": {**LENIENT_ADMISSION, **sections.get("server", {})}}

    def value(v) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value(v)}" for key, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class ServerProcess:
    """One ``trio-scheduler serve`` process with JSON logs read by a thread."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_scheduler", *args, "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, bufsize=1, env={**os.environ, **(env or {})},
        )
        self.log: list[dict] = []  # every line so far
        self._ended = False
        self._changed = threading.Condition()
        self.instance_id: str | None = None
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": line.rstrip("\n")}
            with self._changed:
                self.log.append(event)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def mark(self) -> int:
        """Where the log is now: ``wait_for(…, since=mark)`` looks only at what follows."""
        with self._changed:
            return len(self.log)

    def wait_for(self, event_name: str, timeout: float = 20.0, *, since: int = 0,
                 **fields) -> dict:
        """Block until a log line with that event (and fields) has appeared (it may have
        appeared already, after line ``since``)."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._changed:
            while True:
                for event in self.log[seen:]:
                    if event.get("event") == event_name and all(
                        event.get(k) == v for k, v in fields.items()
                    ):
                        return event
                seen = len(self.log)
                if self._ended:
                    raise InstanceError(self._report(
                        f"exited ({self.process.wait()}) before {event_name!r}"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InstanceError(self._report(f"no {event_name!r} within {timeout} s"))
                self._changed.wait(remaining)

    def wait_closed(self, timeout: float = 20.0) -> None:
        """Block until every process writing to the log has closed it (exited)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._ended, timeout):
                raise InstanceError(self._report(f"log still open after {timeout} s"))

    def kill(self) -> None:
        """SIGKILL: no goodbye, no cleanup."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def _report(self, what: str) -> str:
        tail = "\n".join(json.dumps(e) for e in list(self.log)[-30:])
        return f"scheduler process {what}; its last log lines:\n{tail}"


def start_instance(config: Path, port: int) -> ServerProcess:
    server = ServerProcess(["serve", "--config", str(config), "--port", str(port)])
    try:
        server.instance_id = server.wait_for(READY_EVENT, port=port).get("instance")
    except InstanceError:
        server.kill()
        raise
    return server
