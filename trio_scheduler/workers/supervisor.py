"""The parent of ``serve --workers N``: a supervisor, not a scheduler.

It holds the port (bound with ``SO_REUSEPORT``, never listening: the workers' listening
sockets get every connection) and runs N copies of its own command line as workers,
each told its index, the port and the descriptor of its :mod:`~.link`. It does nothing
else: no store, no sockets of peers. Workers share its stderr; each of their log lines
carries ``worker``.

- Start: worker 1 alone, then the others together. A worker that exits before it ever
  listened stops the start: the parent stops the others and exits with that worker's
  code, so a start that fails says so once (one worker's line), with the code a single
  process would give.
- A worker that exits later is started again, after a wait that grows with its early
  exits in a row (:mod:`~.restarts`); too many, and the parent stops the others and exits
  with the failing worker's code.
- SIGTERM and SIGINT are passed to every worker (a second one too: the workers' own
  meaning of it applies, stop at once), nothing is started again, and the parent exits
  0 once every worker has stopped. Workers run in their own session, so a terminal's
  Ctrl-C reaches them once, through the parent.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
from collections.abc import Callable

import structlog
import trio

from trio_scheduler.config import Config, WorkersConfig
from trio_scheduler.startup import ExitCode, reserve_port
from trio_scheduler.workers import link
from trio_scheduler.workers.restarts import (
    early_exits_after,
    exit_code_for,
    how_it_exited,
    restart_delay_s,
)
from trio_scheduler.workers.worker import worker_command

log = structlog.get_logger(__name__)

WorkerCommand = Callable[[int, int], list[str]]  # (index, descriptor of its link) -> argv


async def serve_workers(config: Config, count: int, argv: list[str]) -> ExitCode:
    """Hold the configured port (port 0: one picked for all) and run ``count`` workers of
    this program's command line ``argv`` on it until they have stopped."""
    sockets = await reserve_port(config.server.host, config.server.port)
    with contextlib.ExitStack() as held:
        for sock in sockets:
            held.enter_context(sock)
        port = sockets[0].getsockname()[1]

        def command(index: int, link_fd: int) -> list[str]:
            return worker_command(argv, port=port, index=index, link_fd=link_fd)

        return await Supervisor(command, count, config.workers, port=port).run()


class Supervisor:
    """Keeps ``count`` workers running, each started by ``command``, until a stop."""

    def __init__(
        self, command: WorkerCommand, count: int, settings: WorkersConfig, *, port: int
    ) -> None:
        self._command = command
        self._count = count
        self._settings = settings
        self._port = port
        self._running: dict[int, trio.Process] = {}  # worker index -> its live process
        self._stop_signal: signal.Signals | None = None  # the last one passed on
        self._stopping = trio.Event()
        self.exit_code = ExitCode.OK

    async def run(self) -> ExitCode:
        """Run the workers until they have all stopped; the parent's exit code."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pass_on, signals)
                await self._run_workers()
                nursery.cancel_scope.cancel()
        log.info("workers stopped", exit_code=int(self.exit_code))
        return self.exit_code

    async def _run_workers(self) -> None:
        async with trio.open_nursery() as workers:
            await workers.start(self._keep_running, 1)
            if self._stopping.is_set():
                return
            async with trio.open_nursery() as starting:
                for index in range(2, self._count + 1):
                    starting.start_soon(workers.start, self._keep_running, index)
            if not self._stopping.is_set():
                log.info("workers listening", port=self._port, workers=self._count)

    async def _pass_on(self, signals: trio.abc.ReceiveChannel[int]) -> None:
        async for number in signals:
            signum = signal.Signals(number)
            log.info("draining workers" if signum == signal.SIGTERM else "stopping workers",
                     signal=signum.name)
            self._stop(signum)

    def _stop(self, signum: signal.Signals) -> None:
        self._stop_signal = signum
        self._stopping.set()
        for process in self._running.values():
            process.send_signal(signum)

    def _give_up(self, returncode: int) -> None:
        """End the whole server because of one worker: the others drain and stop."""
        self.exit_code = exit_code_for(returncode)
        self._stop(signal.SIGTERM)

    async def _keep_running(
        self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run worker ``index`` until the stop, starting it again when it exits.
        Started once the worker first listens (or the stop came first)."""
        listened = False

        def listening() -> None:
            nonlocal listened
            if not listened:
                listened = True
                task_status.started()

        early_exits = 0
        while not self._stopping.is_set():
            started_at = trio.current_time()
            returncode = await self._run_worker(index, listening)
            ran_s = trio.current_time() - started_at
            exited = {"worker": index, "ran_s": round(ran_s, 1), **how_it_exited(returncode)}
            if self._stopping.is_set():
                if returncode not in (0, -self._stop_signal) and self.exit_code == ExitCode.OK:
                    self.exit_code = ExitCode.FAILED
                log.info("worker stopped", **exited)
                break
            if not listened:
                log.error("a worker could not start; stopping", **exited)
                self._give_up(returncode)
                break
            log.warning("worker exited", **exited)
            early_exits = early_exits_after(early_exits, ran_s, self._settings)
            delay_s = restart_delay_s(early_exits, self._settings)
            if delay_s is None:
                log.error("a worker keeps exiting; stopping", worker=index,
                          early_exits=early_exits, within_s=self._settings.stable_after_s)
                self._give_up(returncode)
                break
            log.info("restarting worker", worker=index, delay_s=delay_s)
            with trio.move_on_after(delay_s):
                await self._stopping.wait()
        listening()  # a start ended by the stop is no failure: nothing waits for it

    async def _run_worker(self, index: int, listening: Callable[[], None]) -> int:
        """Start worker ``index``, call ``listening`` once it listens; its return code."""
        parent_end, worker_end = link.socket_pair()
        with parent_end:
            async with trio.open_nursery() as nursery:
                with worker_end:
                    process: trio.Process = await nursery.start(functools.partial(
                        trio.run_process, self._command(index, worker_end.fileno()),
                        check=False, stdin=subprocess.DEVNULL,
                        pass_fds=(worker_end.fileno(),), start_new_session=True,
                    ))
                self._running[index] = process
                if self._stop_signal is not None:  # the stop came while it was starting
                    process.send_signal(self._stop_signal)
                log.info("worker started", worker=index, pid=process.pid)
                if await link.wait_listening(parent_end):
                    listening()
                await process.wait()
            del self._running[index]
        return process.returncode
