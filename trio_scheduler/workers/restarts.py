"""When the parent of ``serve --workers`` starts an exited worker again, and when it stops
trying. Pure functions of ``[workers]`` settings.

A worker that exits is started again after ``restart_delay_s``. One that exits soon after
it started (before ``stable_after_s``) again and again is failing for a reason that will
not go away by itself (a crash at start, the store refusing it), so each such early exit
in a row doubles the wait, up to ``max_restart_delay_s``, and after ``max_early_exits``
of them the parent gives up rather than spin. An exit after a long run is an event, not
a pattern: the count starts again.
"""

from __future__ import annotations

import signal

from trio_scheduler.config import WorkersConfig
from trio_scheduler.startup import ExitCode

START_FAILURES = (ExitCode.BAD_CONFIG, ExitCode.CANNOT_LISTEN, ExitCode.STORE_UNREACHABLE)


def early_exits_after(previous: int, ran_s: float, settings: WorkersConfig) -> int:
    """Early exits in a row, counting an exit after ``ran_s`` seconds of running."""
    return previous + 1 if ran_s < settings.stable_after_s else 0


def restart_delay_s(early_exits: int, settings: WorkersConfig) -> float | None:
    """How long to wait before starting the worker again; None: give up."""
    if early_exits >= settings.max_early_exits:
        return None
    doublings = min(max(early_exits - 1, 0), 64)
    return min(settings.restart_delay_s * 2**doublings, settings.max_restart_delay_s)


def exit_code_for(returncode: int) -> ExitCode:
    """The parent's exit code when a worker that exited with ``returncode`` ends the
    whole server: a reason not to start (2, 3, 4) is passed on, so that a supervisor of
    the parent reads it as it would read a single process's; anything else is 1."""
    return ExitCode(returncode) if returncode in START_FAILURES else ExitCode.FAILED


def how_it_exited(returncode: int) -> dict[str, int | str]:
    """Log fields for a worker's exit: its code, or the signal that ended it."""
    if returncode >= 0:
        return {"exit_code": returncode}
    try:
        return {"signal": signal.Signals(-returncode).name}
    except ValueError:  # a signal without a name here (a real-time one)
        return {"signal": str(-returncode)}
