"""Command line: ``trio-scheduler serve …``, ``trio-scheduler check-config FILE``.

Every way of not starting ends in one line naming the cause and an exit code from
:class:`~trio_scheduler.startup.ExitCode` (listed in README), never in a traceback: a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import structlog
import trio

from trio_scheduler import __version__
from trio_scheduler.config import (
    Config,
    ConfigError,
    check_relations,
    config_warnings,
    load_config,
    with_overrides,
)
from trio_scheduler.drain import drain
from trio_scheduler.logs import LEVELS, configure_logging
from trio_scheduler.server import Scheduler, serve
from trio_scheduler.startup import ExitCode, startup_error
from trio_scheduler.workers.count import redis_missing, worker_count
from trio_scheduler.workers.link import ParentLink
from trio_scheduler.workers.supervisor import serve_workers
from trio_scheduler.workers.worker import worker_config

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-scheduler", description="Dispatch server for real-time speech translation."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the scheduler until SIGINT/SIGTERM")
    serve_cmd.set_defaults(run=run_serve)
    serve_cmd.add_argument("--config", type=Path, help="TOML config file (see config/scheduler.toml)")
    serve_cmd.add_argument("--host", help="address to listen on (overrides [server] host)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (overrides [server] port)")
    serve_cmd.add_argument(
        "--redis-url",
        help="shared Redis store, e.g. redis://127.0.0.1:6379/0 (default: embedded store)",
    )
    serve_cmd.add_argument(
        "--log-format", choices=("console", "json"), help="overrides [logging] format"
    )
    serve_cmd.add_argument("--log-level", choices=LEVELS, help="overrides [logging] level")
    serve_cmd.add_argument(
        "--record-trace", metavar="FILE.jsonl", help="record every frame in and out (see [trace])"
    )
    serve_cmd.add_argument(
        "--trace-audio", choices=("redact", "full"), help="overrides [trace] audio"
    )
    serve_cmd.add_argument(
        "--workers", type=worker_count, metavar="N|auto",
        help="run N scheduler processes on the port (auto: one per core), restarted when "
        "they exit; more than one needs a Redis URL",
    )
    # A worker of --workers: its index (for its log lines) and its link to the parent.
    serve_cmd.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    check_cmd = commands.add_parser(
        "check-config", help="validate a config file (keys, types, values and their relations)"
    )
    check_cmd.set_defaults(run=run_check_config)
    check_cmd.add_argument("file", type=Path, help="TOML config file")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    overrides: dict[str, dict] = {}
    if server:
        overrides["server"] = server
    if args.redis_url is not None:
        overrides["store"] = {"redis_url": args.redis_url}
    logging = {k: v for k, v in (("format", args.log_format), ("level", args.log_level)) if v}
    if logging:
        overrides["logging"] = logging
    trace = {k: v for k, v in (("path", args.record_trace), ("audio", args.trace_audio)) if v}
    if trace:
        overrides["trace"] = trace
    try:
        config = with_overrides(config, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    check_relations(config)
    return config


async def run_until_signalled(
    config: Config,
    *,
    parent: ParentLink | None = None,
    task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a signal. SIGTERM drains first (see :mod:`trio_scheduler.drain`), as
    an orchestrator expects; SIGINT, or a second signal during the drain, stops at once.
    Either way every socket is closed with 1001 and the call returns (exit code 0).

    A worker of ``serve --workers`` tells its ``parent`` when it listens, and drains as on
    SIGTERM if the parent is gone.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            scheduler = await nursery.start(serve, config)
            task_status.started(scheduler)
            stopping = Stopping(scheduler, nursery)
            if parent is not None:
                await parent.say_listening()
                nursery.start_soon(_drain_when_gone, parent, stopping)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGTERM:
                    stopping.drain_first(signal=name)
                else:
                    stopping.at_once(signal=name)


@attrs.define
class Stopping:
    """How the server stops: a drain first, or at once; asked again, at once."""

    scheduler: Scheduler
    nursery: trio.Nursery
    draining: bool = False

    def drain_first(self, **cause: str) -> None:
        if self.draining:
            self.at_once(**cause)
            return
        log.info("draining before stopping", **cause)
        self.draining = True
        self.nursery.start_soon(_drain_then_stop, self.scheduler, self.nursery.cancel_scope)

    def at_once(self, **cause: str) -> None:
        log.info("stopping", **cause)
        self.nursery.cancel_scope.cancel()


async def _drain_then_stop(scheduler: Scheduler, server_scope: trio.CancelScope) -> None:
    await drain(scheduler)
    log.info("stopping")
    server_scope.cancel()


async def _drain_when_gone(parent: ParentLink, stopping: Stopping) -> None:
    await parent.wait_parent_gone()
    stopping.drain_first(cause="the parent process is gone")


def _invalid(exc: ConfigError) -> int:
    print(f"trio-scheduler: invalid configuration: {exc}", file=sys.stderr)
    return ExitCode.BAD_CONFIG


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return _invalid(exc)
    if args.worker_index is not None:
        return _run(_as_worker(config, args.worker_index, args.supervisor_fd))
    if args.workers is not None:
        problem = redis_missing(args.workers, config)
        if problem is not None:
            print(f"trio-scheduler: invalid command line: {problem}", file=sys.stderr)
            return ExitCode.BAD_CONFIG
    configure_logging(config.logging.format, config.logging.level)
    for warning in config_warnings(config):
        log.warning("configuration", advice=warning)
    if args.workers is not None:
        return _run(functools.partial(serve_workers, config, args.workers, args.argv))
    return _run(functools.partial(run_until_signalled, config))


def _as_worker(
    config: Config, index: int, link_fd: int | None
) -> Callable[[], Awaitable[object]]:
    """A worker: settings of its own, its index on every log line (its parent logged the
    configuration's warnings), its link to the parent."""
    config = worker_config(config, index)
    configure_logging(config.logging.format, config.logging.level, fields={"worker": index})

    async def main() -> None:
        parent = ParentLink(link_fd) if link_fd is not None else None
        await run_until_signalled(config, parent=parent)

    return main


def _run(main: Callable[[], Awaitable[object]]) -> int:
    """Run ``main``; its exit code (OK unless it returns one), or why it could not start."""
    try:
        code = trio.run(main)
    except BaseException as exc:
        error = startup_error(exc)
        if error is None:
            raise
        log.error(f"cannot start: {error}", exit_code=int(error.exit_code))
        return error.exit_code
    return ExitCode.OK if code is None else code


def run_check_config(args: argparse.Namespace) -> int:
    """Load the file as ``serve`` would; print what is wrong, or that it is valid."""
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        return _invalid(exc)
    for warning in config_warnings(config):
        print(f"{args.file}: warning: {warning}")
    print(f"{args.file}: valid")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # passed on whole to the workers of serve --workers
    return int(args.run(args))
