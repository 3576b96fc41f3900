"""Validating ``session_init`` into the settings a session runs with (PROTOCOL §2.3.1)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import attrs

from trio_scheduler.management.needs import Needs, needs_for, pipeline_services
from trio_scheduler.management.node_state import Rejection
from trio_scheduler.management.pools import AUTO, is_language_tag, normalize_language
from trio_scheduler.protocol.errors import ErrorCode, echo
from trio_scheduler.protocol.messages import Pipeline, SessionInit, Utterance

MODES = ("one_way", "two_way_auto")


@attrs.frozen
class SessionSpec:
    session_id: str
    trace_id: str
    tenant_id: str | None
    src_lang: str
    tgt_lang: str
    mode: str | None
    lang_a: str | None
    lang_b: str | None
    auto_langs: list[str] | None
    dialect: str | None
    features: dict[str, Any]
    enable_streaming_asr: bool | None
    partial_update_interval_ms: int | None
    pipeline: Pipeline = Pipeline()
    pinned_node_id: str | None = None

    def needs(self) -> Needs:
        """What a node must offer to take a job run with these settings."""
        return needs_for(
            self.pipeline,
            mode=self.mode,
            src_lang=self.src_lang,
            tgt_lang=self.tgt_lang,
            lang_a=self.lang_a,
            lang_b=self.lang_b,
            auto_langs=self.auto_langs,
        )


def new_session_id() -> str:
    return "s-" + secrets.token_hex(4).upper()


def _invalid(message: str, field: str) -> Rejection:
    return Rejection(ErrorCode.INVALID_MESSAGE, message, {"field": field})


def check_languages(
    *,
    src_lang: str,
    tgt_lang: str,
    mode: str | None,
    lang_a: str | None,
    lang_b: str | None,
    auto_langs: list[str] | None,
) -> dict[str, Any] | Rejection:
    """The language settings normalised, or why they are refused (PROTOCOL §2.3.1)."""
    langs: dict[str, Any] = {
        "src_lang": src_lang, "tgt_lang": tgt_lang, "lang_a": lang_a, "lang_b": lang_b,
    }
    for field, value in langs.items():
        if value is None:
            continue
        normal = normalize_language(value)
        if normal != AUTO and not is_language_tag(normal):
            return _invalid(f"{field} {echo(value)} is not a language tag", field)
        langs[field] = normal
    if auto_langs is not None:
        auto_langs = [normalize_language(lang) for lang in auto_langs]
        for lang in auto_langs:
            if not is_language_tag(lang):
                return _invalid(
                    f"auto_langs entry {echo(lang)} is not a language tag", "auto_langs"
                )
    if mode is not None and mode not in MODES:
        return _invalid(f"mode must be one of {', '.join(MODES)}", "mode")
    if langs["tgt_lang"] == AUTO:
        return _invalid("tgt_lang cannot be 'auto'", "tgt_lang")
    if mode == "two_way_auto":
        if not langs["lang_a"] or not langs["lang_b"]:
            return _invalid("two_way_auto needs lang_a and lang_b", "lang_a")
        if AUTO in (langs["lang_a"], langs["lang_b"]) or langs["lang_a"] == langs["lang_b"]:
            return _invalid("lang_a and lang_b must be two different languages", "lang_b")
    elif langs["src_lang"] == AUTO and not auto_langs:
        return _invalid("src_lang 'auto' in one-way mode needs auto_langs", "auto_langs")
    return {**langs, "mode": mode, "auto_langs": auto_langs}


def check_session_init(message: SessionInit, session_id: str) -> SessionSpec | Rejection:
    """The session's settings, or why the init is refused (languages, mode, auto)."""
    langs = check_languages(
        src_lang=message.src_lang,
        tgt_lang=message.tgt_lang,
        mode=message.mode,
        lang_a=message.lang_a,
        lang_b=message.lang_b,
        auto_langs=message.auto_langs,
    )
    if isinstance(langs, Rejection):
        return langs
    return SessionSpec(
        session_id=session_id,
        trace_id=message.trace_id or str(uuid.uuid4()),
        tenant_id=message.tenant_id,
        dialect=message.dialect,
        features=message.features or {},
        enable_streaming_asr=message.enable_streaming_asr,
        partial_update_interval_ms=message.partial_update_interval_ms,
        **langs,
    )


def check_utterance(message: Utterance, spec: SessionSpec) -> SessionSpec | Rejection:
    """The settings one ``utterance`` runs with, or why it is refused.

    A gateway describes every utterance: its languages (``src_lang``/``tgt_lang`` always,
    ``mode``, ``lang_a``, ``lang_b``, ``auto_langs``, ``dialect``, ``features`` when given)
    override the session's, and what it leaves out is the session's. Its pipeline must run
    at least one stage.
    """
    if message.pipeline is not None and not pipeline_services(message.pipeline):
        return _invalid("pipeline enables no stage", "pipeline")
    langs = check_languages(
        src_lang=message.src_lang,
        tgt_lang=message.tgt_lang,
        mode=_given(message.mode, spec.mode),
        lang_a=_given(message.lang_a, spec.lang_a),
        lang_b=_given(message.lang_b, spec.lang_b),
        auto_langs=_given(message.auto_langs, spec.auto_langs),
    )
    if isinstance(langs, Rejection):
        return langs
    return attrs.evolve(
        spec,
        dialect=_given(message.dialect, spec.dialect),
        features=message.features or spec.features,
        pipeline=message.pipeline or spec.pipeline,
        **langs,
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value
