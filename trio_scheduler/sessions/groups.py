"""Utterance groups: which results the browser plays back as one (PROTOCOL §2.4).

Pure and clock-driven. A result with recognised speech joins the active group; a new
group starts when none is active, when the group already has ``max_parts`` parts, or when
more than ``window_s`` passed since the group's last TTS playback ended. The browser's
``tts_started``/``tts_play_ended`` tell when playback runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import attrs


@attrs.frozen
class GroupPart:
    group_id: str
    part_index: int


class GroupTracker:
    def __init__(
        self,
        window_s: float = 2.0,
        max_parts: int = 8,
        new_group_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._window_s = window_s
        self._max_parts = max_parts
        self._new_group_id = new_group_id
        self._group_id: str | None = None
        self._parts = 0
        self._playing = 0  # playbacks started and not ended
        self._last_play_end: float | None = None

    @property
    def playing(self) -> bool:
        return self._playing > 0

    def assign(self, now: float, has_speech: bool) -> GroupPart | None:
        if not has_speech:
            return None
        expired = (
            not self.playing
            and self._last_play_end is not None
            and now - self._last_play_end > self._window_s
        )
        if self._group_id is None or expired or self._parts >= self._max_parts:
            self._group_id = self._new_group_id()
            self._parts = 0
            self._last_play_end = None
        part = GroupPart(self._group_id, self._parts)
        self._parts += 1
        return part

    def playback_started(self) -> None:
        self._playing += 1

    def playback_ended(self, now: float) -> None:
        self._playing = max(0, self._playing - 1)
        self._last_play_end = now
