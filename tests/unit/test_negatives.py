"""Negative sampling without Spark: shares of samplers, candidates as negatives, top-ups."""
import numpy as np
import pytest

from llmrec import conf
from llmrec.features.examples import NegativeSampler, allocate


@pytest.mark.parametrize("shares, n, want", [
    ({"popularity": 1.0}, 3, [("popularity", 3)]),
    ({"candidates": 2, "popularity": 1}, 3, [("candidates", 2), ("popularity", 1)]),
    ({"candidates": 0.5, "hard": 0.5}, 3, [("candidates", 2), ("hard", 1)]),  # ties: by name
    ({"uniform": 1, "hard": 0}, 2, [("uniform", 2)]),
])
def test_allocate_shares_out_every_draw(shares, n, want):
    assert allocate(shares, n) == want


def sampler(**overrides) -> NegativeSampler:
    cfg = conf.load(None, [f"examples.{k}={v}" for k, v in overrides.items()])
    items = np.arange(100, dtype=np.int64)
    return NegativeSampler(items, np.ones(100), items % 5, cfg.examples)


def test_candidate_negatives_come_from_the_users_candidates():
    s = sampler(negatives="{candidates: 2, popularity: 1}", neg_ratio=3)
    cands = np.array([10, 11, 12, 13, 14])
    got = s.sample(user=1, target=7, category=2, seen={7, 10}, candidates=cands)
    kinds = [k for _, k in got]
    assert len(got) == 3 and kinds.count("candidates") == 2 and kinds.count("popularity") == 1
    assert {i for i, k in got if k == "candidates"} <= {11, 12, 13, 14}  # never seen, never the target
    assert got == s.sample(user=1, target=7, category=2, seen={7, 10}, candidates=cands)  # a hash, not a dice


def test_a_short_candidate_list_is_topped_up_uniformly():
    s = sampler(negatives="candidates", neg_ratio=4)
    got = s.sample(user=1, target=7, category=2, seen={7, 10}, candidates=np.array([10, 11]))
    assert len(got) == 4 and (11, "candidates") in got and [k for _, k in got].count("uniform") == 3
    # no candidates at all (a user without a validation pair): all uniform
    assert {k for _, k in s.sample(user=2, target=7, category=2, seen=set(), candidates=None)} == {"uniform"}


def test_one_sampler_draws_as_before():
    """examples.negatives: popularity alone draws exactly what the single-sampler code drew."""
    s = sampler(negatives="popularity", neg_ratio=3)
    assert [k for _, k in s.sample(user=5, target=9, category=1, seen={9})] == ["popularity"] * 3
