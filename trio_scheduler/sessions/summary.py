"""The one line a session leaves in the log when it ends.

Counted as the client is told each utterance's outcome, so the line says what the user
got: results, silences, failures, timeouts and gaps, and what was still under way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from trio_scheduler.sessions.ordering import Deliver, Release


@attrs.define
class SessionSummary:
    started_at: float
    outcomes: Counter[str] = attrs.Factory(Counter)

    def told(self, released: Iterable[Release]) -> None:
        """Outcomes on their way to the client (a skipped index is a gap)."""
        for item in released:
            self.outcomes[item.item.kind if isinstance(item, Deliver) else "gap"] += 1

    def fields(self, now: float, *, unfinished: int, closed: Any = None) -> dict[str, Any]:
        """The session-end line's fields; ``closed`` is the socket's close reason, if any."""
        code = getattr(closed, "code", None)
        return {
            "duration_s": round(now - self.started_at, 3),
            "utterances": sum(self.outcomes.values()) + unfinished,
            "outcomes": dict(sorted(self.outcomes.items())),
            "unfinished": unfinished,
            "close_code": int(code) if code is not None else None,
        }
