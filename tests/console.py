"""The real program and scripts run as processes: their exit code and what they said."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).with_name("trio-scheduler")
RUN_BOUND_S = 30  # one start-and-fail of the real program, imports included


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True,
                          timeout=RUN_BOUND_S, cwd=ROOT)


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=RUN_BOUND_S, cwd=ROOT)


def one_line(stderr: str) -> str:
    """The program said exactly one thing, and not with a traceback."""
    assert "Traceback" not in stderr and "sub-exception" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]

