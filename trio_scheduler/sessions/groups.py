"""Utterance groups: which results the browser plays back as one (PROTOCOL §2.4).

Pure and clock-driven. A result with recognised speech joins the active group; a new
group starts when none is active, when the group already has ``max_parts`` parts, or when
more than ``window_s`` passed since the group's last TTS playback ended. The browser's
``tts_started``/``tts_play_ended`` tell when playback runs, matched by ``group_id``: a
lost end must not leave the session "playing" for good, so a playback is believed for
at most ``max_playback_s`` and at most ``max_playbacks`` are tracked at once.
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
        max_playback_s: float = 30.0,
        max_playbacks: int = 16,
    ) -> None:
        self._window_s = window_s
        self._max_parts = max_parts
        self._new_group_id = new_group_id
        self._max_playback_s = max_playback_s
        self._max_playbacks = max_playbacks
        self._group_id: str | None = None
        self._parts = 0
        # group id -> (playbacks of it running, when the latest one started)
        self._playing: dict[str, tuple[int, float]] = {}
        self._last_play_end: float | None = None

    def playing(self, now: float) -> bool:
        """Some playback started and has not ended (nor outlived ``max_playback_s``)."""
        for group_id, (_, started) in list(self._playing.items()):
            if now - started > self._max_playback_s:
                del self._playing[group_id]
        return bool(self._playing)

    def assign(self, now: float, has_speech: bool) -> GroupPart | None:
        if not has_speech:
            return None
        expired = (
            not self.playing(now)
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

    def playback_started(self, group_id: str, now: float) -> None:
        running, _ = self._playing.pop(group_id, (0, now))  # re-inserted: newest last
        self._playing[group_id] = (running + 1, now)
        while len(self._playing) > self._max_playbacks:
            del self._playing[next(iter(self._playing))]  # the oldest

    def playback_ended(self, group_id: str, now: float) -> None:
        running, started = self._playing.pop(group_id, (0, now))
        if running > 1:  # parts of one group may play overlapping
            self._playing[group_id] = (running - 1, started)
        self._last_play_end = now
