"""What the command-line scripts share: "cannot reach it" is a sentence, not a traceback.

A script pointed at a server that is down, at a wrong URL, or at a Redis that does not
answer prints one line naming the cause and exits with :data:`EXIT_UNREACHABLE`. Anything
else still raises: a traceback from a script means a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import trio_websocket

from trio_scheduler.simulate.peer import CannotConnect
from trio_scheduler.startup import StartupError, leaf_exceptions
from trio_scheduler.store.base import StoreUnavailable

EXIT_UNREACHABLE = 2


def unreachable(exc: BaseException) -> str | None:
    """The sentence for one failure to reach a peer, or None for anything else."""
    match exc:
        case CannotConnect() | StartupError():
            return str(exc)
        case StoreUnavailable():
            return f"the store does not answer: {exc}"
        case trio_websocket.ConnectionClosed(reason=reason) if reason is not None:
            why = f" ({reason.reason})" if reason.reason else ""
            return f"the server closed the connection: {reason.code} {reason.name}{why}"
        case trio_websocket.ConnectionClosed():
            return "the server closed the connection"
    return None


@contextmanager
def reachability_explained(prog: str) -> Iterator[None]:
    """Around a script's ``trio.run``: a failure that is only about reaching the server
    or the store (inside exception groups too) becomes one line and the exit status."""
    try:
        yield
    except BaseException as exc:
        sentences = [unreachable(leaf) for leaf in leaf_exceptions(exc)]
        if not sentences or None in sentences:
            raise
        print(f"{prog}: {sentences[0]}", file=sys.stderr)
        raise SystemExit(EXIT_UNREACHABLE) from None
