"""Structured logs: readable in a terminal, one JSON object per line in production.

What is logged at which level (README, "Logs"): ``info`` tells an operator what happened
to peers — a session's end with its outcomes, a node's status changes, a peer refused and
why — and ``warning`` what went wrong (a job failed or timed out, a node went silent);
``debug`` adds every job's steps. Nothing is logged per audio chunk or per heartbeat.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    log_format: str = "console", level: str = "info", fields: Mapping[str, Any] | None = None
) -> None:
    """Send structlog's lines to stderr, from ``level`` up, each with ``fields`` (a worker
    of ``serve --workers`` says which it is: its lines share the parent's stderr)."""

    def add_fields(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, **fields} if fields else event

    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line (print() makes two: the line, then its newline), so that
        # the lines of workers sharing one stderr never cut into each other.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
