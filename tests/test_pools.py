"""Unit tests of pool derivation (management/pools.py) and snapshot views (snapshot.py)."""

from __future__ import annotations

from types import MappingProxyType

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_scheduler.management.needs import (
    STAGE_SERVICES,
    Needs,
    needs_for,
    pipeline_services,
)
from trio_scheduler.management.pools import (
    derive_pools,
    move_node,
    required_pairs,
    served_pairs,
    served_pools,
)
from trio_scheduler.management.snapshot import NodeStatus, NodeView, Snapshot
from trio_scheduler.protocol.messages import Pipeline

FULL_SERVICES = frozenset({"asr", "nmt", "tts"})

# ---------------------------------------------------------------------------------------
# served_pairs


@pytest.mark.parametrize(
    ("asr", "tts", "semantic", "expected"),
    [
        pytest.param(["zh", "en"], ["zh", "en"], [], {"zh:zh", "zh:en", "en:zh", "en:en"},
                     id="same-list"),
        pytest.param(["zh"], ["en", "ja"], ["fr"], {"zh:en", "zh:ja"},
                     id="tts-wins-over-semantic"),
        pytest.param(["zh", "en"], [], ["ja"], {"zh:ja", "en:ja"}, id="semantic-fallback"),
        pytest.param(["zh"], [], [], set(), id="no-targets-at-all"),
        pytest.param([], ["en"], ["en"], set(), id="no-sources"),
        pytest.param(["ZH", "En"], ["pt-BR"], [], {"zh:pt-br", "en:pt-br"},
                     id="case-insensitive"),
        pytest.param(["zh", "ZH", " zh "], ["EN", "en"], [], {"zh:en"}, id="duplicates-merge"),
        pytest.param(["en"], [], ["JA", "ja"], {"en:ja"}, id="semantic-case-insensitive"),
    ],
)
def test_served_pairs(asr, tts, semantic, expected):
    assert served_pairs(asr, tts, semantic) == frozenset(expected)


def test_served_pairs_semantic_defaults_to_nothing():
    assert served_pairs(["zh"], []) == frozenset()


def test_served_pairs_returns_frozenset():
    assert isinstance(served_pairs(["zh"], ["en"]), frozenset)


# ---------------------------------------------------------------------------------------
# required_pairs


@pytest.mark.parametrize(
    ("mode", "src", "tgt", "lang_a", "lang_b", "auto_langs", "expected"),
    [
        pytest.param("one_way", "zh", "en", None, None, None, {"zh:en"}, id="one-way"),
        pytest.param(None, "zh", "en", None, None, None, {"zh:en"}, id="mode-absent"),
        pytest.param("one_way", "ZH", "En", None, None, None, {"zh:en"}, id="one-way-case"),
        pytest.param("one_way", "zh", "en", "ja", "fr", ["ko"], {"zh:en"},
                     id="one-way-ignores-a-b-and-auto-langs"),
        pytest.param("two_way_auto", "auto", "en", "zh", "en", ["zh", "en"],
                     {"zh:en", "en:zh"}, id="two-way-both-directions"),
        pytest.param("two_way_auto", "auto", "en", "ZH", "Ja", None, {"zh:ja", "ja:zh"},
                     id="two-way-ignores-tgt-and-case"),
        pytest.param("one_way", "auto", "en", None, None, ["zh", "ja"], {"zh:en", "ja:en"},
                     id="auto-every-source-into-target"),
        pytest.param(None, "AUTO", "en", None, None, ["ZH"], {"zh:en"}, id="auto-case"),
        pytest.param("one_way", "auto", "en", None, None, ["zh", "en"], {"zh:en"},
                     id="auto-drops-source-equal-to-target"),
        pytest.param("one_way", "auto", "en", None, None, ["en"], {"en:en"},
                     id="auto-only-target-language-kept"),
    ],
)
def test_required_pairs(mode, src, tgt, lang_a, lang_b, auto_langs, expected):
    assert required_pairs(mode, src, tgt, lang_a, lang_b, auto_langs) == frozenset(expected)


# ---------------------------------------------------------------------------------------
# served_pools / required_pools / needs: pools chosen by what the pipeline needs


@pytest.mark.parametrize(
    ("asr", "tts", "semantic", "expected"),
    [
        pytest.param(["zh", "en"], ["en"], [], {"zh:en", "en:en", "zh:*", "en:*"},
                     id="pairs-and-sources"),
        pytest.param(["ZH"], [], [], {"zh:*"}, id="asr-only-node-has-a-source-pool"),
        pytest.param([], ["en"], ["en"], set(), id="no-sources-no-pools"),
    ],
)
def test_served_pools(asr, tts, semantic, expected):
    assert served_pools(asr, tts, semantic) == frozenset(expected)


ASR = frozenset({"asr"})


@pytest.mark.parametrize(
    ("mode", "src", "tgt", "lang_a", "lang_b", "auto_langs", "services", "expected"),
    [
        pytest.param("one_way", "zh", "en", None, None, None, FULL_SERVICES, {"zh:en"},
                     id="full-pipeline-needs-the-pair"),
        pytest.param("one_way", "zh", "en", None, None, None, frozenset({"asr", "nmt"}),
                     {"zh:en"}, id="nmt-needs-the-pair"),
        pytest.param("one_way", "zh", "en", None, None, None, frozenset({"asr", "tts"}),
                     {"zh:en"}, id="tts-needs-the-pair"),
        pytest.param("one_way", "ZH", "en", None, None, None, ASR, {"zh:*"},
                     id="asr-only-needs-the-source"),
        pytest.param("two_way_auto", "auto", "en", "zh", "ja", None, ASR, {"zh:*", "ja:*"},
                     id="two-way-asr-only-needs-both-sources"),
        pytest.param("one_way", "auto", "en", None, None, ["zh", "en"], ASR, {"zh:*"},
                     id="auto-asr-only-has-the-sources-of-the-full-pipeline"),
        pytest.param("one_way", "auto", "en", None, None, ["zh", "ja"], ASR, {"zh:*", "ja:*"},
                     id="auto-asr-only-needs-every-source"),
    ],
)
def test_needs_for_pipelines(mode, src, tgt, lang_a, lang_b, auto_langs, services, expected):
    pipeline = Pipeline(**{flag: service in services for flag, service in STAGE_SERVICES.items()})
    needs = needs_for(pipeline, mode=mode, src_lang=src, tgt_lang=tgt, lang_a=lang_a,
                      lang_b=lang_b, auto_langs=auto_langs)
    assert needs == Needs(frozenset(expected), services)


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        pytest.param(Pipeline(), {"asr", "nmt", "tts"}, id="default"),
        pytest.param(Pipeline(use_nmt=False, use_tts=False), {"asr"}, id="asr-only"),
        pytest.param(Pipeline(use_semantic=True, use_tone=True), {"asr", "nmt", "tts"},
                     id="semantic-and-tone-choose-no-node"),
        pytest.param(Pipeline(use_nmt=False, use_tts=False, use_tone=True), {"asr"},
                     id="asr-with-tone"),
        pytest.param(Pipeline(use_asr=False, use_nmt=False, use_tts=False), set(), id="none"),
    ],
)
def test_pipeline_services(pipeline, expected):
    assert pipeline_services(pipeline) == frozenset(expected)


def test_needs_for_asr_only_pipeline():
    needs = needs_for(Pipeline(use_nmt=False, use_tts=False), mode="one_way", src_lang="zh",
                      tgt_lang="en", lang_a=None, lang_b=None, auto_langs=None)
    assert needs == Needs(frozenset({"zh:*"}), ASR)
    assert needs.describe() == "zh:* with asr"


# ---------------------------------------------------------------------------------------
# derive_pools / move_node, examples


def test_derive_pools_example():
    pools = derive_pools(
        {
            "n1": frozenset({"zh:en", "en:zh"}),
            "n2": frozenset({"zh:en"}),
            "n3": frozenset(),
        }
    )
    assert pools == {"zh:en": frozenset({"n1", "n2"}), "en:zh": frozenset({"n1"})}
    assert all(isinstance(ids, frozenset) for ids in pools.values())


def test_derive_pools_empty():
    assert derive_pools({}) == {}


BEFORE = {"zh:en": frozenset({"n0", "n1"}), "en:zh": frozenset({"n0"})}  # n1 serves zh:en


@pytest.mark.parametrize(
    ("node_id", "old", "new", "expected"),
    [
        pytest.param("n2", set(), {"zh:en", "ja:en"},
                     {"zh:en": {"n0", "n1", "n2"}, "en:zh": {"n0"}, "ja:en": {"n2"}}, id="add"),
        pytest.param("n1", {"zh:en"}, {"en:zh", "ja:en"},
                     {"zh:en": {"n0"}, "en:zh": {"n0", "n1"}, "ja:en": {"n1"}}, id="change"),
        pytest.param("n1", {"zh:en"}, set(), {"zh:en": {"n0"}, "en:zh": {"n0"}}, id="remove"),
        pytest.param("n1", {"zh:en"}, {"zh:en"}, {"zh:en": {"n0", "n1"}, "en:zh": {"n0"}},
                     id="unchanged"),
        pytest.param("n0", {"zh:en", "en:zh"}, {"zh:en"}, {"zh:en": {"n0", "n1"}},
                     id="pool-emptied-is-removed"),
    ],
)
def test_move_node_examples(node_id, old, new, expected):
    pools = dict(BEFORE)
    move_node(pools, node_id, frozenset(old), frozenset(new))
    assert pools == {pair: frozenset(ids) for pair, ids in expected.items()}


def test_move_node_removes_emptied_pool():
    pools = {"zh:en": frozenset({"n1"}), "en:zh": frozenset({"n1", "n2"})}
    move_node(pools, "n1", frozenset({"zh:en", "en:zh"}), frozenset())
    assert pools == {"en:zh": frozenset({"n2"})}


# ---------------------------------------------------------------------------------------
# Property tests

LANGS = ["zh", "en", "ja", "ZH", "En"]
lang_lists = st.lists(st.sampled_from(LANGS), max_size=4)
NODE_IDS = [f"n{i}" for i in range(5)]
PAIRS = [f"{a}:{b}" for a in ("zh", "en", "ja") for b in ("zh", "en", "ja")]


@given(
    nodes=st.dictionaries(
        st.sampled_from(NODE_IDS), st.tuples(lang_lists, lang_lists, lang_lists), max_size=5
    )
)
def test_node_in_pool_iff_it_serves_the_pair(nodes):
    pools = derive_pools(
        {node_id: served_pairs(asr, tts, sem) for node_id, (asr, tts, sem) in nodes.items()}
    )
    for node_id, (asr, tts, sem) in nodes.items():
        sources = {lang.lower() for lang in asr}
        targets = {lang.lower() for lang in tts} or {lang.lower() for lang in sem}
        for a in ("zh", "en", "ja"):
            for b in ("zh", "en", "ja"):
                serves = a in sources and b in targets
                assert (node_id in pools.get(f"{a}:{b}", frozenset())) == serves
    assert all(pools.values()), "no empty pool"


operations = st.lists(
    st.tuples(
        st.sampled_from(NODE_IDS),
        st.one_of(st.none(), st.frozensets(st.sampled_from(PAIRS), max_size=4)),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(ops=operations)
def test_move_node_sequence_equals_derive_pools(ops):
    """Add / change / remove nodes one by one: the pools always equal a fresh derivation."""
    node_pairs: dict[str, frozenset[str]] = {}
    pools: dict[str, frozenset[str]] = {}
    for node_id, new in ops:
        old = node_pairs.get(node_id, frozenset())
        new_pairs = frozenset() if new is None else new
        move_node(pools, node_id, old, new_pairs)
        if new is None:
            node_pairs.pop(node_id, None)
        else:
            node_pairs[node_id] = new_pairs
        assert pools == derive_pools(node_pairs)
        assert all(pools.values()), "an empty pool was left behind"


@given(
    nodes=st.dictionaries(
        st.sampled_from(NODE_IDS), st.frozensets(st.sampled_from(PAIRS), max_size=5), min_size=1
    ),
    data=st.data(),
)
def test_removing_a_node_removes_it_everywhere(nodes, data):
    pools = derive_pools(nodes)
    victim = data.draw(st.sampled_from(sorted(nodes)))
    move_node(pools, victim, nodes[victim], frozenset())
    assert all(victim not in ids for ids in pools.values())
    remaining = {k: v for k, v in nodes.items() if k != victim}
    assert pools == derive_pools(remaining)


# ---------------------------------------------------------------------------------------
# Snapshot


FULL = FULL_SERVICES


def view(node_id: str, pools=frozenset(), status=NodeStatus.READY, services=FULL) -> NodeView:
    return NodeView(
        node_id=node_id,
        epoch=1,
        status=status,
        max_concurrent_jobs=4,
        pools=frozenset(pools),
        services=frozenset(services),
        accept_public_jobs=True,
        link=object(),
    )


def full(*pools: str) -> Needs:
    return Needs(frozenset(pools), FULL)


POOLS = {
    "zh:en": frozenset({"n1", "n2", "n3"}),
    "en:zh": frozenset({"n2", "n3"}),
    "ja:en": frozenset({"n3"}),
    "ko:en": frozenset(),
}


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param({"zh:en"}, {"n1", "n2", "n3"}, id="single-pool"),
        pytest.param({"zh:en", "en:zh"}, {"n2", "n3"}, id="intersection"),
        pytest.param({"zh:en", "en:zh", "ja:en"}, {"n3"}, id="intersection-of-three"),
        pytest.param({"zh:en", "fr:en"}, set(), id="one-pool-missing"),
        pytest.param({"fr:en"}, set(), id="only-pool-missing"),
        pytest.param({"zh:en", "ko:en"}, set(), id="empty-pool"),
        pytest.param({"en:zh", "ja:en", "fr:de"}, set(), id="missing-after-nonempty"),
        pytest.param(set(), set(), id="no-pairs"),
    ],
)
def test_snapshot_candidates(pairs, expected):
    nodes = {i: view(i) for i in ("n1", "n2", "n3")}
    snapshot = Snapshot(version=1, nodes=nodes, pools=POOLS)
    assert snapshot.candidates(full(*pairs)) == frozenset(expected)


@pytest.mark.parametrize(
    ("needs", "expected"),
    [
        pytest.param(Needs(frozenset({"zh:en"}), FULL_SERVICES), {"full"}, id="full-pipeline"),
        pytest.param(Needs(frozenset({"zh:*"}), ASR), {"full", "asr-only", "no-tts"},
                     id="asr-only-job-any-recogniser"),
        pytest.param(Needs(frozenset({"zh:*"}), frozenset({"asr", "nmt"})), {"full", "no-tts"},
                     id="asr-nmt-job"),
        pytest.param(Needs(frozenset({"zh:*"}), frozenset({"asr", "tone"})), set(),
                     id="service-nobody-has"),
    ],
)
def test_snapshot_candidates_need_the_services(needs, expected):
    nodes = {
        "full": view("full", {"zh:en", "zh:*"}),
        "asr-only": view("asr-only", {"zh:*"}, services={"asr"}),
        "no-tts": view("no-tts", {"zh:en", "zh:*"}, services={"asr", "nmt"}),
    }
    pools = derive_pools({node_id: node.pools for node_id, node in nodes.items()})
    snapshot = Snapshot(version=1, nodes=nodes, pools=pools)
    assert snapshot.candidates(needs) == frozenset(expected)


def test_snapshot_empty():
    snapshot = Snapshot.empty()
    assert snapshot.version == 0
    assert dict(snapshot.nodes) == {}
    assert dict(snapshot.pools) == {}
    assert snapshot.candidates(full("zh:en")) == frozenset()


def make_snapshot() -> Snapshot:
    return Snapshot(version=3, nodes={"n1": view("n1", {"zh:en"})}, pools={"zh:en": {"n1"}})


@pytest.mark.parametrize("attribute", ["version", "nodes", "pools"])
def test_snapshot_attributes_are_frozen(attribute):
    snapshot = make_snapshot()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(snapshot, attribute, None)


@pytest.mark.parametrize(
    "attribute", ["node_id", "epoch", "status", "max_concurrent_jobs", "pools", "services", "link"]
)
def test_node_view_attributes_are_frozen(attribute):
    node = view("n1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(node, attribute, None)


def test_snapshot_mappings_are_read_only():
    snapshot = make_snapshot()
    assert isinstance(snapshot.nodes, MappingProxyType)
    assert isinstance(snapshot.pools, MappingProxyType)
    with pytest.raises(TypeError):
        snapshot.nodes["x"] = view("x")  # type: ignore[index]
    with pytest.raises(TypeError):
        snapshot.pools["ja:en"] = frozenset({"x"})  # type: ignore[index]
    with pytest.raises(TypeError):
        del snapshot.nodes["n1"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        del snapshot.pools["zh:en"]  # type: ignore[attr-defined]


def test_snapshot_copies_its_inputs():
    nodes = {"n1": view("n1")}
    pools = {"zh:en": frozenset({"n1"})}
    snapshot = Snapshot(version=1, nodes=nodes, pools=pools)
    nodes["n2"] = view("n2")
    pools["en:zh"] = frozenset({"n2"})
    del pools["zh:en"]
    assert set(snapshot.nodes) == {"n1"}
    assert dict(snapshot.pools) == {"zh:en": frozenset({"n1"})}


def test_node_view_equality_ignores_link_and_schedulable():
    a = view("n1", {"zh:en"})
    b = view("n1", {"zh:en"})
    assert a.link is not b.link
    assert a == b
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ("status", "schedulable"),
    [
        (NodeStatus.REGISTERING, False),
        (NodeStatus.READY, True),
        (NodeStatus.DEGRADED, False),
        (NodeStatus.DRAINING, False),
        (NodeStatus.OFFLINE, False),
    ],
)
def test_node_view_schedulable_only_when_ready(status, schedulable):
    assert view("n1", status=status).schedulable is schedulable
