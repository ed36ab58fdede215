"""The `ranker` stage: LambdaMART over the validation cut's candidates, and the choice of
what to serve.

1. The validation cut's candidates (first stage fit on train only) of a ranker.user_sample
   of the users with a validation pair, each user's best ranker.pool by fused score, get
   their features (llmrec.ranker.features; the cross-encoder scores the best ce_top) and
   a label: 1 for the user's relevant validation pairs.
2. The users are dealt by a seeded hash: ranker.holdout of them are held out; of the rest,
   ranker.early_stop_share are the rows xgboost early-stops on; the others fit it.
3. xgboost's SparkXGBRanker (barrier-mode training on ranker.num_workers Spark tasks,
   grouped by user) fits on the users with at least one relevant candidate.
4. llmrec.ranker.choose compares the ranker with each single source, the fusion (as
   configured and with weights tuned on the fitting users) and the cross-encoder blend on
   the held-out users, and picks the pool depth, the blend and the new-item slots.
5. <ranker.output_dir>/model (the Spark ML model) and ranker.json: the feature list, the
   versions, the parameters, the choice and every validation figure, feature importance.

llmrec.ranker.saved reads them back for recommend.
"""
from __future__ import annotations

import json
import os

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from llmrec import storage, tables
from llmrec.conf import Config
from llmrec.frames import CacheScope, sample_users
from llmrec.progress import log
from llmrec.infer import engine, rank
from llmrec.ranker import choose, cuts, features, saved
from llmrec.stamps import fingerprint, utc_now
from llmrec.tables.schemas import CANDIDATES


def _role(cfg: Config) -> F.Column:
    """holdout, early_stop or fit, by a seeded hash of the user (another seed than the
    user sample's, whose users all hash below its fraction)."""
    conf = cfg.ranker
    u = F.pmod(F.xxhash64(F.lit(conf.seed + 1), "user_idx"), F.lit(1_000_000)) / 1_000_000.0
    return F.when(u < conf.holdout, "holdout") \
        .when(u < conf.holdout + (1 - conf.holdout) * conf.early_stop_share, "early_stop").otherwise("fit")


def _estimator(cfg: Config):
    from xgboost.spark import SparkXGBRanker

    conf = cfg.ranker
    return SparkXGBRanker(features_col="features", label_col="label", qid_col="user_idx",
                          validation_indicator_col="early_stop", objective=conf.objective,
                          eval_metric=f"ndcg@{cfg.recommend.k}", n_estimators=conf.n_estimators,
                          learning_rate=conf.learning_rate, max_depth=conf.max_depth,
                          min_child_weight=conf.min_child_weight, subsample=conf.subsample,
                          colsample_bytree=conf.colsample_bytree,
                          early_stopping_rounds=conf.early_stopping_rounds, num_workers=conf.num_workers,
                          random_state=conf.seed, tree_method="hist")


def run(spark: SparkSession, cfg: Config) -> dict:
    """Fits the ranker on the validation cut and writes the model and ranker.json."""
    # XGBoost reads its rows in Arrow batches and sketches its split points batch by batch:
    # the batch size shapes the model, and run alone the stage must get the pipeline's.
    engine.arrow_batch(spark, cfg)
    with CacheScope() as cached, storage.staging(cfg.storage.root, "ranker_frame") as staging:
        return _fit(spark, cfg, cached, staging)


def _fit(spark: SparkSession, cfg: Config, cached: CacheScope, staging: str) -> dict:
    import xgboost

    conf, cut = cfg.ranker, cuts.val(cfg)
    keys = features.attribute_keys(spark, cfg)
    names = features.names(keys)
    cands = sample_users(tables.read(spark, cfg, CANDIDATES).where(F.col("cut") == cut.name).drop("cut"),
                         conf.seed, conf.user_sample)
    cands = features.pool(cands, conf.pool)
    ce = rank.ce_top_scores(spark, cfg, cands, cut)
    frame = features.labelled(spark, cfg, features.build(spark, cfg, cands, cut, keys, ce), cut) \
        .withColumn("role", _role(cfg))
    # Written once and read back: the feature plan is large, and fit, choice and
    # importance all read the rows.
    frame.write.parquet(staging)
    frame = cached(spark.read.parquet(staging))
    counts = {r["role"]: (r["users"], r["rows"], r["positives"]) for r in frame.groupBy("role").agg(
        F.countDistinct("user_idx").alias("users"), F.count("*").alias("rows"),
        F.sum("label").alias("positives")).collect()}
    log.info("ranker: %s", "; ".join(f"{role} {u:,} users, {n:,} rows, {p:,} relevant"
                                     for role, (u, n, p) in sorted(counts.items())))
    if not counts.get("fit") or not counts["fit"][2]:
        raise ValueError("ranker: no validation user to fit on has a relevant candidate (check the split's "
                         "val_n / val_ratio and evaluate.relevant_min_weight)")
    # Users without a relevant candidate carry no ranking signal.
    useful = frame.where(F.col("role") != "holdout").groupBy("user_idx").agg(F.max("label").alias("m")) \
        .where(F.col("m") > 0).select("user_idx")
    train = frame.where(F.col("role") != "holdout").join(useful, "user_idx", "left_semi") \
        .withColumn("early_stop", F.col("role") == "early_stop")
    log.info("ranker: fitting SparkXGBRanker (%s, %d features, %d workers)", conf.objective, len(names),
             conf.num_workers)
    model = _estimator(cfg).fit(features.assemble(train, names))
    booster = model.get_booster()
    holdout = cached(model.transform(features.assemble(frame.where(F.col("role") == "holdout"), names)))
    truth = cuts.relevant(spark, cfg, cut.label_split)
    fit_users = frame.where(F.col("role") != "holdout").select("user_idx").distinct()
    hold_users = frame.where(F.col("role") == "holdout").select("user_idx").distinct()
    truth_holdout = cached(truth.join(hold_users, "user_idx", "left_semi"))
    known = cuts.history(spark, cfg, cut).select("item_idx").distinct()
    choice = choose.choose(spark, cfg, frame.where(F.col("role") != "holdout"), holdout,
                           truth.join(fit_users, "user_idx", "left_semi"), truth_holdout,
                           truth_holdout.join(known, "item_idx", "left_anti"), ce is not None)
    # the assembled vector's slots are f0, f1, ...: named after the feature columns
    importance = {names[int(f[1:])]: v for f, v in booster.get_score(importance_type="gain").items()}
    out = saved.output_dir(cfg)
    model.write().overwrite().save(os.path.join(out, "model"))
    summary = {
        "format": saved.FORMAT, "with_ce": ce is not None, "created_at": utc_now().isoformat() + "Z",
        "features": names, "attribute_keys": keys,
        "xgboost": xgboost.__version__, "params": dict(vars(conf)),
        "arrow_batch_rows": int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")),
        "best_iteration": int(getattr(booster, "best_iteration", -1) or -1),
        "users": {role: {"users": u, "rows": n, "relevant": p} for role, (u, n, p) in counts.items()},
        "feature_importance_gain": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        "choice": choice,
    }
    summary["model_id"] = f"ranker@{fingerprint(summary)}"
    storage.write_text(spark, os.path.join(out, "ranker.json"), json.dumps(summary, indent=1, default=str))
    nd = choice["val_ndcg"]
    held_out = counts.get("holdout", (0, 0, 0))[0]
    log.info("ranker: validation nDCG@%d on %s held-out users: %s", choice["k"], f"{held_out:,}",
             ", ".join(f"{m} {v:.4f}" for m, v in sorted(nd.items(), key=lambda kv: -kv[1])))
    if choice["use"]["kind"] != "learned":
        log.warning("ranker: the learned ranker (%s, %.4f) is below %s (%.4f) on validation: recommend serves %s",
                    choose.label(choice["learned"]), nd[choose.label(choice["learned"])], choice["use_label"],
                    nd[choice["use_label"]], choice["use_label"])
    log.info("ranker: serving %s, new-item slots %d, fusion weights %s", choice["use_label"],
             choice["new_item_slots"], choice["fusion_weights"])
    return {"model_dir": out, "model_id": summary["model_id"], "serving": choice["use_label"],
            "val_ndcg": nd, "new_item_slots": choice["new_item_slots"], "fusion_weights": choice["fusion_weights"],
            "best_iteration": summary["best_iteration"], "features": len(names)}
