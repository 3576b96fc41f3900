"""How late the event loop runs, and how busy its core is: a task that sleeps a fixed
interval and measures how much later than asked it wakes up.

A Trio loop that is late to wake a sleeper is late for every task: frames wait to be read,
timers fire late. The probe costs one wake-up per interval; ``lag_s`` is a plain
attribute, so a metrics scrape can read it without awaiting, and every sample goes to
``on_sample`` (admission control decides from it, and from ``cpu_busy``). ``cpu_busy`` is the share of one core
the process used over the last second or so: with lag it tells a loop that is behind
because its core is full from one that is behind for another reason (a blocking call,
a machine whose other programs take the core).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

CPU_WINDOW_S = 1.0  # how often cpu_busy and machine_busy are renewed


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core since boot, from Linux's ``/proc/stat``;
    (0, 0) where there is none. Worker processes sharing a machine each keep their own
    share of a core below the limit while together they fill every core (with whatever
    else runs there): only the machine's own count shows that."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    total = sum(fields[:8])
    idle = fields[3] + fields[4]  # idle, iowait
    return (total - idle) / 100, total / 100  # USER_HZ


class LoopLagProbe:
    def __init__(
        self, interval_s: float, on_sample: Callable[[float, float], None] | None = None,
        *, wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        machine: Callable[[], tuple[float, float]] = machine_cpu_seconds,
    ) -> None:
        self.interval_s = interval_s
        self._wall, self._cpu, self._machine = wall, cpu, machine
        self.lag_s = 0.0  # how late the latest wake-up was
        self.cpu_busy = 0.0  # process CPU seconds per wall second, over the last window
        self.machine_busy = 0.0  # share of all cores busy (0..1), over the last window
        self.cpu_windows = 0  # windows measured so far (cpu_busy renewed)
        self.on_sample = on_sample  # called with (lag_s, now) after every wake-up

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        window_wall, window_cpu = self._wall(), self._cpu()
        window_machine = self._machine()
        while True:
            due = trio.current_time() + self.interval_s
            await trio.sleep_until(due)
            now = trio.current_time()
            self.lag_s = max(0.0, now - due)
            wall = self._wall()
            if wall - window_wall >= CPU_WINDOW_S:
                cpu = self._cpu()
                self.cpu_busy = (cpu - window_cpu) / (wall - window_wall)
                machine = self._machine()
                total = machine[1] - window_machine[1]
                self.machine_busy = (machine[0] - window_machine[0]) / total if total > 0 else 0.0
                self.cpu_windows += 1
                window_wall, window_cpu, window_machine = wall, cpu, machine
            if self.on_sample is not None:
                self.on_sample(self.lag_s, now)
