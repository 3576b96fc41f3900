"""Which pools a node belongs to, which pools a job needs, and which nodes form each pool.

A pool is keyed by what its nodes can do with a language: ``src:tgt`` (a directed pair:
recognise ``src``, deliver ``tgt``) or ``src:*`` (recognise ``src``, whatever the
target: the pool of ASR-only work). ``*`` is not a language-tag character, so the two
kinds of key never collide.

Pure functions only: the owner task calls them, the property tests check them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

LANGUAGE_TAG = re.compile(r"^[a-z0-9-]{1,16}$")
AUTO = "auto"
ANY_TARGET = "*"
# Services that turn recognised text into the target language: a job using any of them
# needs a node serving its directed pair; a job using none only needs the source.
TARGET_SERVICES = frozenset({"nmt", "tts"})


def normalize_language(tag: str) -> str:
    """Language tags compare case-insensitively (``pt-BR`` is ``pt-br``)."""
    return tag.strip().lower()


def is_language_tag(tag: str) -> bool:
    return bool(LANGUAGE_TAG.match(tag)) and any(ch.isalpha() for ch in tag)


def pair_key(src: str, tgt: str) -> str:
    return f"{src}:{tgt}"


def source_key(src: str) -> str:
    """The pool of nodes that recognise ``src``, for jobs that need no target language."""
    return pair_key(src, ANY_TARGET)


def source_of(pair: str) -> str:
    return pair.partition(":")[0]


def served_pairs(
    asr_languages: Iterable[str],
    tts_languages: Iterable[str],
    semantic_languages: Iterable[str] = (),
) -> frozenset[str]:
    """Directed pairs ``src:tgt`` with src among the ASR languages and tgt among the TTS
    languages — or the semantic languages when the node lists no TTS language (§3.4)."""
    sources = {normalize_language(lang) for lang in asr_languages}
    targets = {normalize_language(lang) for lang in tts_languages} or {
        normalize_language(lang) for lang in semantic_languages
    }
    return frozenset(pair_key(src, tgt) for src in sources for tgt in targets)


def served_pools(
    asr_languages: Iterable[str],
    tts_languages: Iterable[str],
    semantic_languages: Iterable[str] = (),
) -> frozenset[str]:
    """Every pool a ready node with these languages belongs to: its directed pairs and
    one ``src:*`` pool per ASR language."""
    sources = frozenset(source_key(normalize_language(lang)) for lang in asr_languages)
    return served_pairs(asr_languages, tts_languages, semantic_languages) | sources


def derive_pools(node_keys: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Pools from scratch: pool key -> ids of the (ready) nodes in it."""
    members: dict[str, set[str]] = {}
    for node_id, keys in node_keys.items():
        for key in keys:
            members.setdefault(key, set()).add(node_id)
    return {key: frozenset(ids) for key, ids in members.items()}


def move_node(
    pools: dict[str, frozenset[str]],
    node_id: str,
    old_keys: frozenset[str],
    new_keys: frozenset[str],
) -> None:
    """Update ``pools`` in place for one node whose pool keys (as a ready node) changed.

    Touches only the keys that differ, so an unchanged node costs nothing. Empty pools are
    removed, so ``pools`` stays equal to :func:`derive_pools` of the same nodes.
    """
    for key in old_keys - new_keys:
        remaining = pools[key] - {node_id}
        if remaining:
            pools[key] = remaining
        else:
            del pools[key]
    for key in new_keys - old_keys:
        pools[key] = pools.get(key, frozenset()) | {node_id}


def required_pairs(
    mode: str | None,
    src_lang: str,
    tgt_lang: str,
    lang_a: str | None,
    lang_b: str | None,
    auto_langs: Iterable[str] | None,
) -> frozenset[str]:
    """The pairs a node must serve to take a session's jobs.

    ``two_way_auto`` needs both directions between ``lang_a`` and ``lang_b``; one-way
    ``auto`` needs every ``auto_langs`` source into the target; otherwise ``src:tgt``.
    The caller validated the languages.
    """
    if mode == "two_way_auto":
        assert lang_a and lang_b
        a, b = normalize_language(lang_a), normalize_language(lang_b)
        return frozenset({pair_key(a, b), pair_key(b, a)})
    tgt = normalize_language(tgt_lang)
    if normalize_language(src_lang) == AUTO:
        sources = {normalize_language(lang) for lang in auto_langs or ()}
        return frozenset(pair_key(src, tgt) for src in sources if src != tgt) or frozenset(
            pair_key(src, tgt) for src in sources
        )
    return frozenset({pair_key(normalize_language(src_lang), tgt)})
