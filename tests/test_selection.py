"""Unit tests of node ranking (dispatch/selection.py): stickiness and power of two choices."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_scheduler.dispatch.selection import rank_candidates
from trio_scheduler.management.snapshot import NodeStatus, NodeView


def node(node_id: str) -> NodeView:
    return NodeView(
        node_id=node_id,
        epoch=1,
        status=NodeStatus.READY,
        max_concurrent_jobs=4,
        pools=frozenset({"zh:en", "zh:*"}),
        services=frozenset({"asr", "nmt", "tts"}),
        accept_public_jobs=True,
        link=object(),
    )


def rank(loads: dict[str, float], sticky: str | None = None, seed: int = 0, rng=None) -> list[str]:
    nodes = [node(node_id) for node_id in loads]
    ranked = rank_candidates(
        nodes,
        sticky_node_id=sticky,
        load=lambda n: loads[n.node_id],
        rng=rng if rng is not None else random.Random(seed),
    )
    return [n.node_id for n in ranked]


class ScriptedSample(random.Random):
    """A Random whose ``sample(population, 2)`` picks the two ids it was given."""

    def __init__(self, picks: Sequence[str]) -> None:
        super().__init__(0)
        self.picks = list(picks)
        self.sampled_from: list[list[str]] = []

    def sample(self, population, k, **kwargs):  # type: ignore[override]
        assert k == 2
        self.sampled_from.append([n.node_id for n in population])
        by_id = {n.node_id: n for n in population}
        return [by_id[i] for i in self.picks]


# ---------------------------------------------------------------------------------------
# Stickiness


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("sticky_load", [0.0, 0.5, 0.75, 0.99])
def test_sticky_node_first_while_it_has_room(seed, sticky_load):
    loads = {"a": 0.0, "b": 0.25, "sticky": sticky_load, "c": 0.0}
    assert rank(loads, sticky="sticky", seed=seed)[0] == "sticky"


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("sticky_load", [1.0, 1.25])
def test_full_sticky_node_is_not_first(seed, sticky_load):
    loads = {"a": 0.5, "sticky": sticky_load, "b": 0.75}
    ranked = rank(loads, sticky="sticky", seed=seed)
    assert ranked[0] != "sticky"
    assert sorted(ranked) == ["a", "b", "sticky"]  # still a fallback, exactly once


def test_full_sticky_node_goes_through_p2c_like_the_others():
    loads = {"a": 0.5, "sticky": 1.0, "b": 0.0}
    rng = ScriptedSample(["sticky", "a"])
    assert rank(loads, sticky="sticky", rng=rng) == ["a", "sticky", "b"]
    assert sorted(rng.sampled_from[0]) == ["a", "b", "sticky"]


def test_absent_sticky_node_is_ignored():
    loads = {"a": 0.5, "b": 0.0}
    assert rank(loads, sticky="gone") == ["b", "a"]


def test_sticky_first_then_p2c_among_the_rest():
    loads = {"sticky": 0.5, "a": 0.75, "b": 0.25, "c": 0.0}
    rng = ScriptedSample(["a", "b"])
    assert rank(loads, sticky="sticky", rng=rng) == ["sticky", "b", "a", "c"]
    assert sorted(rng.sampled_from[0]) == ["a", "b", "c"]  # sticky not sampled again


# ---------------------------------------------------------------------------------------
# Power of two choices


@pytest.mark.parametrize(
    ("loads", "picks", "expected"),
    [
        pytest.param({"a": 0.5, "b": 0.25, "c": 0.0, "d": 1.0}, ["a", "b"],
                     ["b", "a", "c", "d"], id="less-loaded-of-pair-first-rest-by-load"),
        pytest.param({"a": 0.25, "b": 0.75, "c": 0.0, "d": 0.5}, ["b", "a"],
                     ["a", "b", "c", "d"], id="order-of-sample-irrelevant"),
        pytest.param({"a": 1.0, "b": 0.75, "c": 0.0}, ["a", "b"], ["b", "a", "c"],
                     id="pair-beats-even-idle-rest"),
        pytest.param({"a": 0.5, "b": 0.5, "c": 0.0}, ["c", "b"], ["c", "b", "a"],
                     id="rest-single"),
    ],
)
def test_p2c_with_scripted_sample(loads, picks, expected):
    assert rank(loads, rng=ScriptedSample(picks)) == expected


@pytest.mark.parametrize("seed", range(50))
def test_two_nodes_less_loaded_first(seed):
    assert rank({"busy": 0.75, "idle": 0.25}, seed=seed) == ["idle", "busy"]


@pytest.mark.parametrize(
    ("loads", "sticky", "expected"),
    [
        pytest.param({}, None, [], id="no-candidates"),
        pytest.param({}, "x", [], id="no-candidates-sticky"),
        pytest.param({"a": 0.5}, None, ["a"], id="single"),
        pytest.param({"a": 1.0}, None, ["a"], id="single-full-still-listed"),
        pytest.param({"a": 1.0}, "a", ["a"], id="single-full-sticky"),
        pytest.param({"a": 0.5}, "a", ["a"], id="single-sticky"),
    ],
)
def test_small_candidate_sets(loads, sticky, expected):
    assert rank(loads, sticky=sticky) == expected


def test_ties_are_broken_at_random():
    loads = {"a": 0.0, "b": 0.0}
    firsts = {rank(loads, seed=seed)[0] for seed in range(100)}
    assert firsts == {"a", "b"}


# ---------------------------------------------------------------------------------------
# Properties


@given(
    loads=st.dictionaries(
        st.sampled_from([f"n{i}" for i in range(8)]),
        st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.5]),
    ),
    sticky=st.one_of(st.none(), st.sampled_from(["n0", "n1", "gone"])),
    seed=st.integers(0, 2**32),
)
def test_every_candidate_exactly_once(loads, sticky, seed):
    ranked = rank(loads, sticky=sticky, seed=seed)
    assert sorted(ranked) == sorted(loads)


@given(
    loads=st.dictionaries(
        st.sampled_from([f"n{i}" for i in range(8)]),
        st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
        min_size=1,
    ),
    sticky=st.one_of(st.none(), st.sampled_from(["n0", "n1", "gone"])),
    seed=st.integers(0, 2**32),
)
def test_same_seed_same_ranking(loads, sticky, seed):
    assert rank(loads, sticky=sticky, seed=seed) == rank(loads, sticky=sticky, seed=seed)


@given(
    loads=st.dictionaries(
        st.sampled_from([f"n{i}" for i in range(8)]),
        st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
        min_size=3,
    ),
    seed=st.integers(0, 2**32),
)
def test_after_the_p2c_pair_the_rest_is_sorted_by_load(loads, seed):
    ranked = rank(loads, seed=seed)
    assert loads[ranked[0]] <= loads[ranked[1]]
    tail = [loads[i] for i in ranked[2:]]
    assert tail == sorted(tail)


def test_most_loaded_never_first_over_many_draws():
    loads = {"idle": 0.0, "half": 0.5, "full": 1.0}
    rng = random.Random(12345)
    firsts = {"idle": 0, "half": 0, "full": 0}
    for _ in range(3000):
        ranked = rank(loads, rng=rng)
        assert sorted(ranked) == ["full", "half", "idle"]
        firsts[ranked[0]] += 1
    assert firsts["full"] == 0
    # p2c samples each of the 3 pairs with probability 1/3: idle wins 2 of them.
    assert 1800 < firsts["idle"] < 2200
    assert 800 < firsts["half"] < 1200


def test_seeded_rankings_are_reproducible_across_many_draws():
    loads = {f"n{i}": (i % 4) / 4 for i in range(10)}

    def draws(seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [rank(loads, rng=rng) for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
