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

CPU_WINDOW_S = 1.0  # how often cpu_busy is renewed


class LoopLagProbe:
    def __init__(
        self, interval_s: float, on_sample: Callable[[float, float], None] | None = None,
        *, wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.interval_s = interval_s
        self._wall, self._cpu = wall, cpu
        self.lag_s = 0.0  # how late the latest wake-up was
        self.cpu_busy = 0.0  # process CPU seconds per wall second, over the last window
        self.cpu_windows = 0  # windows measured so far (cpu_busy renewed)
        self.on_sample = on_sample  # called with (lag_s, now) after every wake-up

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        window_wall, window_cpu = self._wall(), self._cpu()
        while True:
            due = trio.current_time() + self.interval_s
            await trio.sleep_until(due)
            now = trio.current_time()
            self.lag_s = max(0.0, now - due)
            wall = self._wall()
            if wall - window_wall >= CPU_WINDOW_S:
                cpu = self._cpu()
                self.cpu_busy = (cpu - window_cpu) / (wall - window_wall)
                self.cpu_windows += 1
                window_wall, window_cpu = wall, cpu
            if self.on_sample is not None:
                self.on_sample(self.lag_s, now)
