"""The evaluate job: every model ranks for the same users on the same split, scored by
the same metrics, into gold.eval_metrics and reports/<run>/.

Protocol: models learn from the serving history (`infer.history_splits`, train+val by
default) and rank the whole catalog minus each user's history items; the relevant items
are the user's test pairs (weight above `evaluate.relevant_min_weight`); evaluated users
are those with a relevant item (and, with `evaluate.users: ranked`, a hybrid list).
"""
from __future__ import annotations

import json
import os

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from llmrec import storage, tables
from llmrec.conf import Config
from llmrec.evaluate import baselines, metrics, report, slices
from llmrec.frames import CacheScope, global_rank
from llmrec.infer import candidates as cands, engine, rank
from llmrec.progress import log
from llmrec.ranker import cuts, saved
from llmrec.stamps import utc_now
from llmrec.tables.schemas import (
    CANDIDATES, EVAL_METRICS, EXAMPLES, ITEM_EMBEDDINGS, ITEM_INDEX, RECOMMENDATIONS, SILVER_ITEMS,
)

POPULARITY_BINS = 20
HEADLINE = ("ndcg", "recall", "map", "catalog_coverage")  # printed at the end, at the largest K


def _check(cfg: Config) -> None:
    conf = cfg.evaluate
    if "hybrid" in conf.model_names and max(conf.k_values) > cfg.recommend.k:
        raise ValueError(f"evaluate.ks goes to {max(conf.k_values)} but the hybrid lists hold "
                         f"recommend.k={cfg.recommend.k} items: lower evaluate.ks or raise recommend.k")


def cross_encoder_auc(spark: SparkSession, cfg: Config) -> float | None:
    """AUC of the trained cross-encoder on the gold.examples test pairs, scored in Spark."""
    path = rank.cross_encoder(cfg)
    if not path or not tables.exists(spark, cfg, EXAMPLES):
        return None
    engine.arrow_batch(spark, cfg)
    pairs = tables.read(spark, cfg, EXAMPLES).where(F.col("split") == "test") \
        .select(F.col("user_text").alias("first"), F.col("item_text").alias("second"), "label")
    with CacheScope() as cached:
        scored = cached(rank.with_ce_scores(spark, pairs, rank.score_ref(cfg, path)))
        return metrics.auc(scored, "ce_score", "label")


def popularity_profile(lists: DataFrame, hist: DataFrame, catalog: DataFrame, k: int) -> list[dict]:
    """Share of each model's top-k recommendations (and of the history's pairs, model
    `history`) per bin of item popularity: bin 0 = the most popular 1/POPULARITY_BINS of
    the catalog. Shows how far each model reaches into the long tail."""
    counts = catalog.join(hist.groupBy("item_idx").agg(F.count("*").alias("n")), "item_idx", "left") \
        .fillna(0, ["n"])
    n_items = counts.count()
    binned = global_rank(counts, F.col("n").desc(), F.col("item_idx"), name="r") \
        .withColumn("bin", F.floor((F.col("r") - 1) * POPULARITY_BINS / n_items).cast("int"))
    recs = lists.where(F.col("rank") <= k).join(binned, "item_idx").groupBy("model", "bin").count()
    seen = binned.groupBy("bin").agg(F.sum("n").alias("count")).withColumn("model", F.lit("history"))
    both = recs.unionByName(seen)
    shares = both.withColumn("share", F.col("count") / F.sum("count").over(Window.partitionBy("model")))
    return [r.asDict() for r in shares.orderBy("model", "bin").collect()]


def sample_explanations(spark: SparkSession, cfg: Config, users: DataFrame, n: int) -> list[dict]:
    """The explained recommendations of n evaluated users (a seeded, stable choice)."""
    recs = tables.read(spark, cfg, RECOMMENDATIONS)
    chosen = recs.select("user_idx").distinct().join(users, "user_idx") \
        .orderBy(F.xxhash64(F.lit(cfg.examples.seed), "user_idx")).limit(n)
    titles = tables.read(spark, cfg, SILVER_ITEMS).select("item_id", "title")
    rows = recs.join(chosen, "user_idx").join(titles, "item_id", "left") \
        .orderBy(F.xxhash64(F.lit(cfg.examples.seed), "user_idx"), "rank") \
        .select(*[c for c in ("user_id", "rank", "item_id", "title", "score", "source", "reason",
                              "top_history", "tokens") if c in recs.columns or c == "title"]) \
        .collect()
    return [r.asDict(recursive=True) for r in rows]


def ranker_summary(spark: SparkSession, cfg: Config) -> dict | None:
    """The ranker stage's ranker.json (its choice and validation figures), when recommend served it."""
    if cfg.recommend.ranker != "learned":
        return None
    try:
        return saved.load_summary(spark, cfg)
    except FileNotFoundError:
        return None


def training_metrics(cfg: Config) -> dict | None:
    from llmrec.train.launch import output_dir

    path = os.path.join(output_dir(cfg), "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def run(spark: SparkSession, cfg: Config) -> dict:
    _check(cfg)
    with CacheScope() as cached, storage.staging(cfg.storage.root, "eval_lists") as staging:
        return _run(spark, cfg, cached, staging)


def _run(spark: SparkSession, cfg: Config, cached: CacheScope, staging: str) -> dict:
    conf = cfg.evaluate
    started = utc_now()
    name = conf.run or started.strftime("%Y%m%d-%H%M%S")
    ks, models, k = conf.k_values, conf.model_names, max(conf.k_values)

    relevant = cached(cuts.relevant(spark, cfg, "test"))
    users = relevant.select("user_idx").distinct()
    if conf.users == "ranked" and "hybrid" in models:
        users = users.join(tables.read(spark, cfg, RECOMMENDATIONS).select("user_idx").distinct(), "user_idx")
    users = cached(users)
    truth = relevant.join(users, "user_idx")
    n_users = users.count()
    if not n_users:
        raise ValueError("no user has a relevant test item (check interactions.split and "
                         "evaluate.relevant_min_weight, or run recommend for the test users)")
    log.info("evaluate: %s users with %s relevant test items; models %s; K %s", f"{n_users:,}",
             f"{truth.count():,}", ", ".join(models), ", ".join(map(str, ks)))

    # Written once and read back: every metric reads the lists, and the plans that made
    # them (ALS, top-K, joins) are too large to re-plan under each metric's query.
    history = cached(cands.history(spark, cfg))
    baselines.ranked_lists(spark, cfg, models, users, k, history).write.parquet(staging)
    lists = cached(spark.read.parquet(staging))
    log.info("evaluate: %s ranked items from %d models", f"{lists.count():,}", len(models))
    hist = history.select("user_idx", "item_idx")
    catalog = tables.read(spark, cfg, ITEM_INDEX).select("item_idx")
    vectors = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "vector") \
        if tables.exists(spark, cfg, ITEM_EMBEDDINGS) else None
    truths = {slice_: cached(df) for slice_, df in slices.slice_truths(spark, cfg, truth, hist).items()}
    beyond = metrics.beyond_accuracy(lists, truth, ks, catalog, hist, vectors)
    table = slices.by_slice(lists, truths, ks).unionByName(beyond.withColumn("slice", F.lit("overall")))
    if tables.exists(spark, cfg, CANDIDATES):
        table = table.unionByName(slices.candidate_recall(spark, cfg, users, truth))
    rows = [r.asDict() for r in table.collect()]
    auc = cross_encoder_auc(spark, cfg) if conf.auc else None
    if auc is not None:
        rows.append({"slice": "overall", "model": "cross_encoder", "metric": "auc", "k": None, "value": auc,
                     "users": n_users})
    tables.overwrite_partitions(
        spark.createDataFrame([(name, r["slice"], r["model"], r["metric"], r["k"], r["value"], r["users"], started)
                               for r in rows], EVAL_METRICS.schema), cfg, EVAL_METRICS, run=[name])
    overall = [r for r in rows if r["slice"] == "overall" and not r["model"].startswith("candidates.")]
    order = lambda r: (r["slice"], r["model"], r["metric"], r["k"] or 0)  # noqa: E731

    training = training_metrics(cfg)
    result = {
        "run": name, "users": n_users, "ks": ks, "models": models,
        "protocol": protocol(cfg, n_users, catalog.count()),
        "metrics": sorted(overall, key=order),
        "by_slice": sorted((r for r in rows if r["slice"] not in ("overall", "validation")), key=order),
        "candidate_recall": sorted((r for r in rows if r["model"].startswith("candidates.")), key=order),
        "candidate_sources": slices.sources_in_order(cfg),
        "ranker": ranker_summary(spark, cfg),
        "auc": {"cross_encoder_spark": auc,
                "train_job_test": ((training or {}).get("test") or {}).get("auc")},
        "popularity": popularity_profile(lists, hist, catalog, k),
        "explanations": sample_explanations(spark, cfg, users, conf.sample_users)
        if tables.exists(spark, cfg, RECOMMENDATIONS) else [],
        "training": training,
    }
    result["report"] = report.write(os.path.join(conf.reports_dir, name), result)
    return summary(result)


def protocol(cfg: Config, n_users: int, n_items: int) -> dict:
    """The protocol in words, for the report's first section."""
    split = cfg.interactions.split
    how = {"leave_last": f"each user's last {split.test_n} item(s) by first interaction "
                         f"(users with >= {split.min_user_items} items)",
           "global": f"pairs first seen in the last {split.test_days} days",
           "ratio": f"a seeded random {split.test_ratio:.0%} of each user's items "
                    f"(users with >= {split.min_user_items} items)"}[split.method]
    floor = cfg.evaluate.relevant_min_weight
    return {
        "split": f"{split.method}: {how}",
        "learnt_from": f"interactions of the splits {', '.join(cuts.history_splits(cfg))}",
        "relevant": "every test pair" if floor is None else f"test pairs with weight > {floor:g}",
        "ranking": "full ranking over the catalog; each user's history items excluded",
        "users": f"{n_users:,} users with a relevant test item"
                 + (" and a hybrid list (recommend.user_sample)" if cfg.evaluate.users == "ranked"
                    and "hybrid" in cfg.evaluate.model_names else ""),
        "catalog": f"{n_items:,} items",
        "ks": ", ".join(map(str, cfg.evaluate.k_values)),
    }


def value(result: dict, model: str, metric: str, k: int | None) -> float | None:
    for r in result["metrics"]:
        if (r["model"], r["metric"], r["k"]) == (model, metric, k):
            return r["value"]
    return None


def summary(result: dict) -> dict:
    """What the job returns (and logs): the run, report path and headline numbers, recall@K
    and users by slice, and what the ranker stage chose to serve."""
    k = max(result["ks"])
    by_slice: dict = {}
    for r in result["by_slice"]:
        if r["metric"] == "recall" and r["k"] == k:
            by_slice.setdefault(r["slice"], {"users": r["users"]})[r["model"]] = round(r["value"], 4)
    ranker = result.get("ranker") or {}
    return {"run": result["run"], "report": result["report"], "users": result["users"], "k": k,
            "auc": result["auc"],
            "headline": {m: {f"{name}@{k}": round(value(result, m, name, k) or 0.0, 4) for name in HEADLINE}
                         for m in result["models"]},
            f"recall@{k}_by_slice": by_slice,
            "ranker": (ranker.get("choice") or {}).get("use_label")}


def headline(summary: dict) -> str:
    """The lines printed at the end of the job: where the report is, the key numbers."""
    k = summary["k"]
    cols = [f"{name}@{k}" for name in HEADLINE]
    lines = [f"Report: {os.path.abspath(summary['report'])}",
             f"{summary['users']:,} users evaluated; full ranking over the catalog",
             f"{'model':<12}" + "".join(f"{c:>22}" for c in cols)]
    for model, vals in summary["headline"].items():
        lines.append(f"{model:<12}" + "".join(f"{vals[c]:>22.4f}" for c in cols))
    for name, vals in summary[f"recall@{k}_by_slice"].items():
        if not vals["users"]:
            continue
        models = ", ".join(f"{m} {v:.4f}" for m, v in vals.items() if m != "users")
        lines.append(f"recall@{k} on {name} ({vals['users']:,} users): {models}")
    auc = summary["auc"]["cross_encoder_spark"]
    if auc is not None:
        lines.append(f"cross-encoder AUC on the test pairs: {auc:.4f}")
    if summary["ranker"]:
        lines.append(f"hybrid = the ranker stage's choice on validation: {summary['ranker']}")
    return "\n".join(lines)
