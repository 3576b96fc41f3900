"""What makes a worker of ``serve --workers`` differ from a single ``serve``: its command
line (the parent's own, plus the port, its index and its link) and two settings.

The parent passes its command line on whole rather than rebuilding it, so every option of
``serve``, today's and tomorrow's, reaches the workers; the options added last win.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trio_scheduler.config import Config, with_overrides


def worker_command(argv: list[str], *, port: int, index: int, link_fd: int) -> list[str]:
    """The command line of worker ``index``, from the parent's ``argv`` (``serve …``)."""
    return [
        sys.executable, "-m", "trio_scheduler", *argv,
        "--port", str(port), "--worker-index", str(index), "--supervisor-fd", str(link_fd),
    ]


def worker_config(config: Config, index: int) -> Config:
    """A worker listens with ``SO_REUSEPORT`` (beside the others), and records its trace,
    if any, in a file of its own (``trace.jsonl`` -> ``trace.worker2.jsonl``)."""
    sections: dict[str, dict] = {"server": {"reuse_port": True}}
    if config.trace.path:
        path = Path(config.trace.path)
        own = path.with_name(f"{path.stem}.worker{index}{path.suffix}")
        sections["trace"] = {"path": str(own)}
    return with_overrides(config, **sections)
