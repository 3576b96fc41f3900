"""The pure parts of ``serve --workers``: the worker count, what workers need, their
command line and settings, and the restart policy."""

from __future__ import annotations

import argparse
import os

import pytest

from trio_scheduler.cli import build_parser
from trio_scheduler.config import Config, WorkersConfig, with_overrides
from trio_scheduler.startup import ExitCode
from trio_scheduler.workers.count import redis_missing, usable_cores, worker_count
from trio_scheduler.workers.restarts import (
    early_exits_after,
    exit_code_for,
    how_it_exited,
    restart_delay_s,
)
from trio_scheduler.workers.worker import worker_command, worker_config

# -- how many ------------------------------------------------------------------------------


def test_a_worker_count_is_a_whole_number_or_auto():
    assert worker_count("3") == 3
    assert worker_count("auto") == usable_cores() == len(os.sched_getaffinity(0))
    for wrong in ("0", "-2", "two", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            worker_count(wrong)


def test_a_worker_count_below_1_is_a_command_line_error(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--workers", "0"])
    assert exited.value.code == ExitCode.BAD_CONFIG
    assert "argument --workers: a whole number >= 1 or 'auto', not '0'" in capsys.readouterr().err


def test_more_than_one_worker_needs_redis():
    alone = Config()
    shared = with_overrides(alone, store={"redis_url": "redis://r:6379/0"})
    assert redis_missing(1, alone) is None  # one worker: the embedded store will do
    assert redis_missing(2, shared) is None
    assert redis_missing(2, alone).startswith("2 workers need a shared Redis")


# -- a worker's command line and settings --------------------------------------------------


def test_a_worker_gets_the_parents_command_line_with_its_port_index_and_link():
    parent = ["serve", "--config", "c.toml", "--port", "0", "--redis-url", "redis://r/0",
              "--log-format", "json", "--log-level", "debug", "--record-trace", "t.jsonl",
              "--trace-audio", "full", "--host", "127.0.0.1", "--workers", "4"]
    command = worker_command(parent, port=5011, index=3, link_fd=9)
    assert command[1:3] == ["-m", "trio_scheduler"]
    parser = build_parser()
    as_parent, as_worker = parser.parse_args(parent), parser.parse_args(command[3:])
    assert (as_worker.port, as_worker.worker_index, as_worker.supervisor_fd) == (5011, 3, 9)
    assert {**vars(as_worker), "port": 0, "worker_index": None, "supervisor_fd": None} == (
        vars(as_parent))


def test_a_worker_listens_beside_the_others_and_records_its_own_trace():
    config = with_overrides(Config(), trace={"path": "/var/trace/frames.jsonl"})
    mine = worker_config(config, 2)
    assert mine.server.reuse_port is True
    assert mine.trace.path == "/var/trace/frames.worker2.jsonl"
    assert worker_config(Config(), 2).trace.path is None


# -- restarts --------------------------------------------------------------------------------

SETTINGS = WorkersConfig(restart_delay_s=0.5, max_restart_delay_s=3.0, stable_after_s=60.0,
                         max_early_exits=5)


def test_early_exits_in_a_row_double_the_wait_up_to_its_cap_then_give_up():
    delays, early = [], 0
    for _ in range(5):
        early = early_exits_after(early, ran_s=1.0, settings=SETTINGS)
        delays.append(restart_delay_s(early, SETTINGS))
    assert delays == [0.5, 1.0, 2.0, 3.0, None]


def test_an_exit_after_a_long_run_starts_the_count_again():
    assert early_exits_after(4, ran_s=60.0, settings=SETTINGS) == 0
    assert restart_delay_s(0, SETTINGS) == 0.5
    assert early_exits_after(4, ran_s=59.9, settings=SETTINGS) == 5


def test_a_huge_early_exit_limit_does_not_overflow_the_wait():
    many = WorkersConfig(max_early_exits=100_000)
    assert restart_delay_s(99_999, many) == many.max_restart_delay_s


@pytest.mark.parametrize(
    ("returncode", "exit_code"),
    [(2, ExitCode.BAD_CONFIG), (3, ExitCode.CANNOT_LISTEN), (4, ExitCode.STORE_UNREACHABLE),
     (1, ExitCode.FAILED), (0, ExitCode.FAILED), (-9, ExitCode.FAILED), (70, ExitCode.FAILED)],
)
def test_a_worker_that_ends_the_server_passes_on_only_reasons_not_to_start(returncode,
                                                                            exit_code):
    assert exit_code_for(returncode) == exit_code


def test_how_a_worker_exited_names_the_signal():
    assert how_it_exited(0) == {"exit_code": 0}
    assert how_it_exited(-9) == {"signal": "SIGKILL"}
    assert how_it_exited(-40) == {"signal": "40"}  # a real-time signal has no name here
