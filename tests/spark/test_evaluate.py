"""The evaluate job on the served shop (tiny models): every model's lists follow the
protocol, the metrics land in gold.eval_metrics, the report's numbers equal that table,
the cross-encoder AUC equals one computed from plain model scores, reruns replace."""
import html
import os
import re
import shutil
from argparse import Namespace
from dataclasses import replace

import pandas as pd
import pytest
from pyspark.sql import functions as F

from helpers import SHOP, make_config, tiny
from llmrec import stages, tables
from llmrec.evaluate import baselines, compare
from llmrec.infer import candidates, engine, rank
from llmrec.tables.schemas import EVAL_METRICS, EXAMPLES, INTERACTIONS, RECOMMENDATIONS

MODELS = "popular,als,item_item,content,fused,hybrid"


@pytest.fixture(scope="module")
def evaluated(spark, served, tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluated")
    root = base / "root"
    shutil.copytree(served.storage.root, root)
    cfg = make_config(root, *SHOP, *tiny(tiny_dir), "evaluate.ks=1,3,5", f"evaluate.models={MODELS}",
                      f"evaluate.reports_dir={base / 'reports'}", "evaluate.run=t1", "examples.neg_ratio=2")
    stages.examples(spark, cfg, Namespace())  # test pairs for the cross-encoder's AUC
    result = stages.evaluate(spark, cfg, Namespace())
    return cfg, result


def test_lists_follow_the_protocol(spark, served):
    hist = candidates.history(spark, served).select("user_idx", "item_idx")
    users = tables.read(spark, served, RECOMMENDATIONS).select("user_idx").distinct()
    models = ["popular", "item_item", "fused", "hybrid"]  # als and content: the candidate tests
    lists = baselines.ranked_lists(spark, served, models, users, 5).toPandas()
    assert set(lists.model) == set(models)
    seen = set(map(tuple, hist.toPandas().to_numpy()))
    assert not [r for r in lists.itertuples() if (r.user_idx, r.item_idx) in seen]  # history excluded
    for (model, user), g in lists.groupby(["model", "user_idx"]):
        assert sorted(g["rank"]) == list(range(1, len(g) + 1)) and len(g) <= 5, (model, user)
        assert g.item_idx.is_unique
    # popular: everyone's list by users per item (ties: smaller item), minus the user's own
    h = hist.toPandas()
    order = h.groupby("item_idx").size().reset_index(name="n").sort_values(["n", "item_idx"],
                                                                          ascending=[False, True])
    for user in lists.user_idx.unique()[:20]:
        own = set(h[h.user_idx == user].item_idx)
        want = [i for i in order.item_idx if i not in own][:5]
        got = lists[(lists.model == "popular") & (lists.user_idx == user)].sort_values("rank").item_idx
        assert list(got) == want
    hybrid = lists[lists.model == "hybrid"].sort_values(["user_idx", "rank"])
    recs = tables.read(spark, served, RECOMMENDATIONS).toPandas().sort_values(["user_idx", "rank"])
    assert list(hybrid.item_idx) == list(recs.item_idx)


def test_each_model_scores_only_the_users_asked(spark, served):
    """A sample's lists are exactly its rows of everyone's lists (the item-item neighbours
    still come from every user's history), and no other user is scored."""
    everyone = tables.read(spark, served, RECOMMENDATIONS).select("user_idx").distinct()
    ids = sorted(r.user_idx for r in everyone.collect())
    sample = spark.createDataFrame([(u,) for u in ids[::3]], "user_idx long")
    models = MODELS.split(",")
    key = ["model", "user_idx", "rank"]
    full = baselines.ranked_lists(spark, served, models, everyone, 5).toPandas()
    part = baselines.ranked_lists(spark, served, models, sample, 5).toPandas()
    assert set(part.user_idx) <= set(ids[::3]) and set(part.model) == set(models)
    want = full[full.user_idx.isin(ids[::3])].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(part.sort_values(key).reset_index(drop=True), want, check_dtype=False)


def test_metrics_table_and_report_agree(spark, evaluated):
    cfg, result = evaluated
    everything = tables.read(spark, cfg, EVAL_METRICS).where(F.col("run") == "t1").toPandas()
    assert not everything.duplicated(["slice", "model", "metric", "k"]).any()
    rows = everything[(everything.slice == "overall") & ~everything.model.str.startswith("candidates.")]
    ranking = rows[rows.metric.isin(["precision", "recall", "ndcg", "map", "hit", "mrr"])]
    assert len(ranking) == 6 * 6 * 3  # models x metrics x K
    # evaluated users: a relevant test pair and a hybrid list
    test = tables.read(spark, cfg, INTERACTIONS).where("split = 'test' and weight > 0")
    ranked = tables.read(spark, cfg, RECOMMENDATIONS).select("user_idx").distinct()
    assert set(rows.users) == {test.select("user_idx").distinct().join(ranked, "user_idx").count()}
    assert (ranking.value.between(0, 1)).all()
    recall = ranking[ranking.metric == "recall"].set_index(["model", "k"]).value
    assert all(recall[(m, 1)] <= recall[(m, 3)] <= recall[(m, 5)] for m in MODELS.split(","))
    assert result["report"].endswith("t1/report.html") and os.path.isfile(result["report"])
    # by slice: each slice's users are a subset of the evaluated ones
    sliced = everything[everything.slice.isin(["cold_items", "cold_users", "tail_items"])]
    assert set(sliced.slice) == {"cold_items", "cold_users", "tail_items"}
    assert len(sliced[sliced.metric == "ndcg"]) == 3 * 6 * 3 and (sliced.users <= rows.users.max()).all()
    # candidate recall: every source and the fused list, on test (overall) and validation
    recall = everything[everything.model.str.startswith("candidates.")]
    assert set(recall.slice) == {"overall", "validation"} and set(recall.metric) == {"recall"}
    assert {"candidates.fused", "candidates.als", "candidates.content"} <= set(recall.model)
    fused = recall[(recall.model == "candidates.fused") & (recall.slice == "overall")].set_index("k").value
    assert fused[10] <= fused[20]

    page = open(result["report"]).read()
    cells = re.findall(r'<td data-model="([^"]+)" data-metric="([^"]+)" data-k="(\d*)">([^<]+)</td>', page)
    shown = {(m, metric, int(k) if k else None): v for m, metric, k, v in cells}
    want = {(r.model, r.metric, None if pd.isna(r.k) else int(r.k)):
            "n/a" if r.value is None or pd.isna(r.value) else f"{r.value:.4f}" for r in rows.itertuples()}
    assert shown == want
    folder = os.path.dirname(result["report"])
    for png in ("metrics_vs_k.png", "beyond_accuracy.png", "popularity.png", "slices.png",
                "candidate_recall.png"):
        with open(os.path.join(folder, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f'alt="{png}"' in page
    assert html.escape(result["run"]) in page and "Sample explanations" in page


def test_cross_encoder_auc_equals_plain_scores(spark, evaluated, tiny_dir):
    cfg, result = evaluated
    pairs = tables.read(spark, cfg, EXAMPLES).where("split = 'test'").toPandas()
    logits = engine.run(rank.score_ref(cfg, tiny_dir), list(pairs.user_text), list(pairs.item_text))
    pos, neg = logits[pairs.label.to_numpy() > 0], logits[pairs.label.to_numpy() <= 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert result["auc"]["cross_encoder_spark"] == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-3)


def test_rerun_replaces_the_run_and_prints_headline(spark, evaluated, capsys):
    cfg, first = evaluated
    # the same run again, with two of the models: its partition is replaced, not appended to
    fewer = replace(cfg, evaluate=replace(cfg.evaluate, models="popular,hybrid", auc=False))
    spark.catalog.clearCache()
    again = stages.evaluate(spark, fewer, Namespace())
    # what it cached it unpersisted: a notebook's session keeps no frame of a finished job
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()
    rows = tables.read(spark, cfg, EVAL_METRICS).where("run = 't1' and slice = 'overall'").toPandas()
    rows = rows[~rows.model.str.startswith("candidates.")]
    assert set(rows.model) == {"popular", "hybrid"} and len(rows) == 2 * 12 * 3
    assert again["headline"] == {m: first["headline"][m] for m in ("popular", "hybrid")}
    out = capsys.readouterr().out
    assert f"Report: {os.path.abspath(first['report'])}" in out
    assert re.search(r"^hybrid\s+\d\.\d{4}", out, re.M)


def test_hybrid_k_beyond_its_lists_is_refused(spark, served, tmp_path):
    cfg = make_config(tmp_path, *SHOP, "evaluate.ks=1,10")  # recommend.k is 5
    with pytest.raises(ValueError, match="recommend.k"):
        compare.run(spark, cfg)
