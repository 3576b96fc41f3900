"""docs/protocol.md stays in step with the code: every message type and field, error code
and close code the code knows is in it, and every setting it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from trio_scheduler.config import Config
from trio_scheduler.protocol import messages
from trio_scheduler.protocol.errors import CloseCode, ErrorCode
from trio_scheduler.sessions.outcomes import MISSING_REASON

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")

MESSAGE_CLASSES = [
    cls for cls in vars(messages).values()
    if isinstance(cls, type) and attrs.has(cls) and cls.__module__ == messages.__name__
]


def test_every_message_class_is_found():
    types = {cls.TYPE for cls in MESSAGE_CLASSES if hasattr(cls, "TYPE")}
    assert set(messages.SESSION_INBOUND) | set(messages.NODE_INBOUND) <= types
    assert {"session_init_ack", "translation_result", "job_assign", "node_control"} <= types


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_and_field_is_documented(cls):
    if hasattr(cls, "TYPE"):
        assert f"`{cls.TYPE}`" in DOC
    missing = [f.name for f in attrs.fields(cls) if f"`{f.name}`" not in DOC]
    assert missing == [], f"{cls.__name__} fields not in docs/protocol.md"


@pytest.mark.parametrize("name", sorted(messages.ROOM_MESSAGE_TYPES))
def test_room_messages_are_documented(name):
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_is_documented(code):
    assert f"`{code}`" in DOC


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_every_close_code_is_documented(code):
    assert re.search(rf"^\| {int(code)} \|", DOC, re.MULTILINE)


@pytest.mark.parametrize("reason", sorted(set(MISSING_REASON.values())))
def test_every_missing_result_reason_is_documented(reason):
    assert f"`{reason}`" in DOC


def test_every_setting_named_exists_with_its_default():
    """``[section] key`` (default) in the document: the key exists, the default is true."""
    defaults = Config()
    named = re.findall(r"`\[(\w+)\] (\w+)`(?: \(([\d.]+)(?: (MiB|s))?\))?", DOC)
    assert len(named) > 30
    for section, key, default, unit in named:
        value = getattr(getattr(defaults, section), key)  # AttributeError: no such key
        if default:
            scale = 1024 * 1024 if unit == "MiB" else 1
            assert value == float(default) * scale, (section, key, value, default)
