"""Which directed language pairs a node serves, and which nodes form each pool.

Pure functions only: the owner task calls them, the property tests check them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

LANGUAGE_TAG = re.compile(r"^[a-z0-9-]{1,16}$")
AUTO = "auto"


def normalize_language(tag: str) -> str:
    """Language tags compare case-insensitively (``pt-BR`` is ``pt-br``)."""
    return tag.strip().lower()


def is_language_tag(tag: str) -> bool:
    return bool(LANGUAGE_TAG.match(tag)) and any(ch.isalpha() for ch in tag)


def pair_key(src: str, tgt: str) -> str:
    return f"{src}:{tgt}"


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


def derive_pools(node_pairs: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Pools from scratch: pair -> ids of the (ready) nodes serving it."""
    members: dict[str, set[str]] = {}
    for node_id, pairs in node_pairs.items():
        for pair in pairs:
            members.setdefault(pair, set()).add(node_id)
    return {pair: frozenset(ids) for pair, ids in members.items()}


def move_node(
    pools: dict[str, frozenset[str]],
    node_id: str,
    old_pairs: frozenset[str],
    new_pairs: frozenset[str],
) -> None:
    """Update ``pools`` in place for one node whose served pairs (as a ready node) changed.

    Touches only the pairs that differ, so an unchanged node costs nothing. Empty pools are
    removed, so ``pools`` stays equal to :func:`derive_pools` of the same nodes.
    """
    for pair in old_pairs - new_pairs:
        remaining = pools[pair] - {node_id}
        if remaining:
            pools[pair] = remaining
        else:
            del pools[pair]
    for pair in new_pairs - old_pairs:
        pools[pair] = pools.get(pair, frozenset()) | {node_id}


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
