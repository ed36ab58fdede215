"""Evaluation metrics in Spark against answers computed by hand on small cases (users
without relevant items or without recommendations, ties), and against Spark MLlib's
RankingMetrics on a random case."""
import math
import random

import pytest

from llmrec.evaluate import metrics
from llmrec.frames import CacheScope

RECS = "model string, user_idx long, item_idx long, rank int"


def table(df):
    return {(r.model, r.metric, r.k): r.value for r in df.collect()}


def test_ranking_metrics_by_hand(spark):
    truth = spark.createDataFrame(
        [(1, 10), (1, 11), (1, 12), (1, 12),  # a duplicate truth row counts once
         (2, 20), (3, 30), (3, 31)], "user_idx long, item_idx long")  # user 3: no recommendations
    recs = spark.createDataFrame(
        [("a", 1, 10, 1), ("a", 1, 99, 2), ("a", 1, 12, 3), ("a", 1, 11, 4),
         ("a", 2, 21, 1), ("a", 2, 22, 2), ("a", 2, 20, 3),
         ("a", 4, 10, 1),  # user 4 has no relevant item: not evaluated
         ("b", 4, 10, 1)], RECS)  # model b: no hit for any evaluated user
    got = table(metrics.ranking(recs, truth, [1, 3]))
    assert {r for r in metrics.ranking(recs, truth, [3]).select("users").distinct().collect()} == {(3,)}
    log2 = math.log2
    idcg3 = 1 + 1 / log2(3) + 1 / log2(4)
    # user 1: hits at ranks 1 and 3 of 3 relevant; user 2: a hit at rank 3 of 1; user 3: nothing
    want = {
        ("a", "precision", 3): (2 / 3 + 1 / 3 + 0) / 3,
        ("a", "recall", 3): (2 / 3 + 1 + 0) / 3,
        ("a", "ndcg", 3): ((1 + 1 / log2(4)) / idcg3 + (1 / log2(4)) / 1) / 3,
        ("a", "map", 3): ((1 / 1 + 2 / 3) / 3 + (1 / 3) / 1) / 3,
        ("a", "hit", 3): 2 / 3,
        ("a", "mrr", 3): (1 + 1 / 3) / 3,
        ("a", "precision", 1): 1 / 3, ("a", "recall", 1): (1 / 3) / 3, ("a", "ndcg", 1): 1 / 3,
        ("a", "map", 1): 1 / 3, ("a", "hit", 1): 1 / 3, ("a", "mrr", 1): 1 / 3,
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert all(got[("b", m, k)] == 0.0 for m in metrics.RANKING for k in (1, 3))
    assert len(got) == 2 * 2 * len(metrics.RANKING)


def test_ranking_metrics_equal_spark_mllib(spark):
    from pyspark.mllib.evaluation import RankingMetrics

    rnd = random.Random(3)
    truth, recs, pairs = [], [], []
    for u in range(200):
        rel = rnd.sample(range(60), rnd.randint(1, 8))
        ranked = rnd.sample(range(60), 10)
        truth += [(u, i) for i in rel]
        recs += [("m", u, i, r + 1) for r, i in enumerate(ranked)]
        pairs.append((ranked, rel))
    got = table(metrics.ranking(spark.createDataFrame(recs, RECS),
                                spark.createDataFrame(truth, "user_idx long, item_idx long"), [5, 10]))
    ref = RankingMetrics(spark.sparkContext.parallelize(pairs, 2))
    for k in (5, 10):
        assert got[("m", "precision", k)] == pytest.approx(ref.precisionAt(k), abs=1e-9)
        assert got[("m", "recall", k)] == pytest.approx(ref.recallAt(k), abs=1e-9)
        assert got[("m", "ndcg", k)] == pytest.approx(ref.ndcgAt(k), abs=1e-9)
        assert got[("m", "map", k)] == pytest.approx(ref.meanAveragePrecisionAt(k), abs=1e-9)


def test_beyond_accuracy_by_hand(spark):
    catalog = spark.createDataFrame([(i,) for i in range(1, 6)], "item_idx long")
    recs = spark.createDataFrame([("a", 1, 1, 1), ("a", 1, 2, 2), ("a", 2, 1, 1), ("a", 2, 3, 2),
                                  ("a", 9, 5, 1)], RECS)  # user 9 is not evaluated
    truth = spark.createDataFrame([(1, 2), (2, 5)], "user_idx long, item_idx long")
    history = spark.createDataFrame([(1, 1), (2, 1), (1, 4), (2, 2)], "user_idx long, item_idx long")
    vectors = spark.createDataFrame([(1, [1.0, 0.0]), (2, [0.0, 1.0]), (3, [0.6, 0.8]), (4, [0.8, 0.6])],
                                    "item_idx long, vector array<float>")
    got = table(metrics.beyond_accuracy(recs, truth, [1, 2], catalog, history, vectors))
    want = {
        # top 2: item 1 twice, items 2 and 3 once, of 5 items
        ("a", "catalog_coverage", 2): 3 / 5,
        ("a", "entropy", 2): -(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)),
        ("a", "gini", 2): ((2 * 4 - 6) * 0.25 + (2 * 5 - 6) * 0.5) / 4,  # shares 0, 0, .25, .25, .5
        # 4 history pairs: item 1 in 2, item 2 in 1, item 3 in none (counts as 1)
        ("a", "novelty", 2): (1 + 2 + 1 + 2) / 4,
        ("a", "diversity", 2): ((1 - 0.0) + (1 - 0.6)) / 2,
        # only user 1's item 2 is relevant: 1 - mean(cos(v2, v1), cos(v2, v4)) = 1 - 0.3
        ("a", "serendipity", 2): ((0 + 0.7) / 2 + 0) / 2,
        ("a", "catalog_coverage", 1): 1 / 5, ("a", "entropy", 1): 0.0, ("a", "gini", 1): 1.0,
        ("a", "novelty", 1): 1.0, ("a", "serendipity", 1): 0.0,
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got[("a", "diversity", 1)] is None  # no list of two


def test_a_cache_scope_releases_its_frames_when_the_stage_fails(spark):
    spark.catalog.clearCache()
    with pytest.raises(ValueError, match="stage failed"):
        with CacheScope() as cached:
            df = cached(spark.range(5))
            assert df.count() == 5 and df.is_cached
            raise ValueError("stage failed")
    assert not df.is_cached and spark._jsparkSession.sharedState().cacheManager().isEmpty()


def test_gini_even_and_concentrated(spark):
    catalog = spark.createDataFrame([(i,) for i in range(4)], "item_idx long")
    truth = spark.createDataFrame([(u, 0) for u in range(4)], "user_idx long, item_idx long")
    history = spark.createDataFrame([(0, 0)], "user_idx long, item_idx long")
    even = [("even", u, u, 1) for u in range(4)]
    one = [("one", u, 0, 1) for u in range(4)]
    got = table(metrics.beyond_accuracy(spark.createDataFrame(even + one, RECS), truth, [1], catalog,
                                        history, None))
    assert got[("even", "gini", 1)] == pytest.approx(0.0)
    assert got[("one", "gini", 1)] == pytest.approx(1.0)
    assert got[("even", "entropy", 1)] == pytest.approx(2.0)
    assert got[("one", "diversity", 1)] is None


def test_auc_with_ties(spark):
    rows = [(0.9, 1), (0.8, 0), (0.8, 1), (0.3, 0), (0.1, 1)]
    # positive 0.9 beats both negatives, 0.8 ties one and beats one, 0.1 beats none
    assert metrics.auc(spark.createDataFrame(rows, "score double, label int")) == pytest.approx(3.5 / 6)
    tied = spark.createDataFrame([(0.5, 1), (0.5, 0), (0.5, 0)], "score double, label int")
    assert metrics.auc(tied) == pytest.approx(0.5)
    assert metrics.auc(spark.createDataFrame([(0.5, 1)], "score double, label int")) is None
