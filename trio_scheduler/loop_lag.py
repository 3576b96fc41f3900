"""How late the event loop runs: a task that sleeps a fixed interval and measures how much
later than asked it wakes up.

A Trio loop that is late to wake a sleeper is late for every task: frames wait to be read,
timers fire late. The probe costs one wake-up per interval; ``lag_s`` is a plain
attribute, so admission control or a metrics scrape can read it without awaiting.
"""

from __future__ import annotations

import trio


class LoopLagProbe:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0  # how late the latest wake-up was

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            due = trio.current_time() + self.interval_s
            await trio.sleep_until(due)
            self.lag_s = max(0.0, trio.current_time() - due)
