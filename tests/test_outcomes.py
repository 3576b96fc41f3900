"""Which node results count as silence (PROTOCOL §2.4), a pure rule."""

from __future__ import annotations

import pytest

from trio_scheduler.protocol.messages import JobResult
from trio_scheduler.sessions.outcomes import is_silence


def result(**fields) -> JobResult:
    return JobResult(job_id="job-1", attempt_id=1, node_id="n", session_id="s-1",
                     utterance_index=0, success=True, trace_id="t", **fields)


@pytest.mark.parametrize(
    ("fields", "silent"),
    [
        pytest.param({}, True, id="nothing-at-all"),
        pytest.param({"text_asr": "", "text_translated": "", "tts_audio": ""}, True,
                     id="empty-strings-no-reason"),
        pytest.param({"text_asr": "hi", "extra": {"reason": "ASR_EMPTY"}}, True,
                     id="asr-empty-reason-wins"),
        pytest.param({"text_asr": "hi", "extra": {"reason": "NO_TEXT_ASSIGNED"}}, True,
                     id="no-text-assigned"),
        pytest.param({"text_asr": "hi"}, False, id="asr-text"),
        pytest.param({"text_translated": "hello"}, False, id="translation-only"),
        pytest.param({"tts_audio": "AAAA"}, False, id="audio-only"),
        pytest.param({"extra": {"reason": "SOMETHING_ELSE"}}, True, id="other-reason-empty"),
        pytest.param({"text_asr": "hi", "extra": {"reason": "SOMETHING_ELSE"}}, False,
                     id="other-reason-with-text"),
        pytest.param({"text_asr": "hi", "extra": {"reason": 7}}, False, id="reason-not-text"),
    ],
)
def test_is_silence(fields, silent):
    assert is_silence(result(**fields)) is silent
