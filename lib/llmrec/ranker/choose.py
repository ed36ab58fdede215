"""How a user's candidates are ordered, and which way wins on validation.

An ordering gives each candidate a `final` score (higher first; ties: the smaller item):
  learned@P      the ranker's prediction for the best P by fused score, the rest after them
                 in fused order (P: a rerank pool depth of ranker.pool_depths)
  fused          reciprocal-rank fusion with the configured weights (candidates.weights)
  fused:tuned    the same with the weights chosen on the validation users that fit the
                 ranker (ranker.fusion_trials random weight vectors and the configured one)
  source:<name>  one first-stage source alone (what it proposed, by its rank; the rest in
                 fused order)
  blend@b        b x cross-encoder + (1 - b) x fused score / the user's best, over the
                 candidates the cross-encoder scored (the rest after them, fused)

`choose` scores each on the held-out validation users by nDCG@recommend.k (the same
metric code as evaluation), picks the best depth and blend, then the winner, and last
how many of the k places go to new items (0, 1 or 2): among the counts whose recall@k of the
cold validation pairs (items no one had in the validation cut's history) reaches the
text-only profile source's own cold recall and, at the lower end of its 95% interval,
ranker.cold_item_floor x the overall recall@k, so new items are not second-class; among
those, the best by nDCG (if none does: the one finding most cold pairs, then by nDCG).
Nothing here reads the test split.
"""
from __future__ import annotations

import random

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from llmrec.conf import CANDIDATE_SOURCES, Config
from llmrec.evaluate import metrics
from llmrec.frames import CacheScope, top_per

WEIGHT_LEVELS = (0.0, 0.3, 1.0, 2.0)
SLOTS = (0, 1, 2)
BLENDS = (0.0, 0.3, 0.5, 0.7, 1.0)


def fused(weights: dict[str, float], rrf_k: int) -> Column:
    """Reciprocal-rank fusion of the <source>_rank columns with these weights."""
    terms = [F.coalesce(F.lit(float(w)) / (F.lit(float(rrf_k)) + F.col(f"{s}_rank")), F.lit(0.0))
             for s, w in weights.items() if w > 0]
    return sum(terms[1:], terms[0]) if terms else F.lit(0.0)


def final(how: dict) -> Column:
    """The `final` column of an ordering (see the module doc): how = {"kind": ..., params}."""
    kind = how["kind"]
    # Chosen rows score in [2, 3], the rest below 1 in fused order.
    rest = F.lit(1.0) / (1 + F.col("fused_rank"))
    if kind == "learned":
        chosen = F.lit(2.0) + F.lit(1.0) / (1 + F.exp(-F.col("prediction")))
        return F.when(F.col("fused_rank") <= how["depth"], chosen).otherwise(rest)
    if kind == "fused":
        return fused(how["weights"], how["rrf_k"])
    if kind == "source":
        rank = F.col(f"{how['source']}_rank")
        return F.when(rank.isNotNull(), F.lit(2.0) + F.lit(1.0) / (1 + rank)).otherwise(rest)
    if kind == "blend":
        best = F.max("fused_score").over(Window.partitionBy("user_idx"))
        b = how["blend"]
        chosen = F.lit(2.0) + F.lit(b) * F.col("ce_score") + F.lit(1.0 - b) * F.col("fused_score") / best
        return F.when(F.col("ce_score").isNotNull(), chosen).otherwise(rest)
    raise ValueError(f"unknown ordering {how}")


def label(how: dict) -> str:
    kind = how["kind"]
    return {"learned": lambda: f"learned@{how['depth']}", "fused": lambda: how.get("name", "fused"),
            "source": lambda: f"source:{how['source']}", "blend": lambda: f"blend@{how['blend']:g}"}[kind]()


def top_k(scored: DataFrame, k: int, new_slots: int | Column, per: tuple[str, ...] = ()) -> DataFrame:
    """Each user's k best by `final` (ties: smaller item), where the best `new_slots` new
    items (no one in the history has them) are always among the k; ranked by `final`.
    `per`: more key columns, for several lists per user in one frame (one per ordering)."""
    by_final = [F.col("final").desc(), F.col("item_idx")]
    new = F.col("new_item") > 0
    ranked = top_per(scored.withColumn("_new", new), [*per, "user_idx", "_new"], None, *by_final, rank="_n")
    reserved = F.col("_new") & (F.col("_n") <= new_slots)
    chosen = top_per(ranked.withColumn("_p", F.when(reserved, 0).otherwise(1)), [*per, "user_idx"], k, "_p",
                     *by_final, rank="_c")
    return top_per(chosen, [*per, "user_idx"], None, *by_final).drop("_new", "_n", "_p", "_c")


def _lists(frame: DataFrame, orderings: list[dict], k: int, slots: tuple[int, ...] = (0,)) -> DataFrame:
    """(model, user_idx, item_idx, rank) of every ordering with each count of new-item
    slots (model: the ordering's label, then "+<n>" for n > 0 slots). Orderings with the
    same label (the fusion, untuned, is also its own tuned version) are listed once.

    One frame for them all: each candidate once per (ordering, slots), ranked by one set
    of window sorts keyed by the model, not one set (and a dozen small jobs) per ordering."""
    ways = list({label(h): h for h in orderings}.values())
    variants = frame.sparkSession.createDataFrame(
        [(i, n, label(h) + (f"+{n}" if n else "")) for i, h in enumerate(ways) for n in slots],
        "_way int, _slots int, model string")
    by_way = F.when(F.col("_way") == 0, final(ways[0]))
    for i, how in enumerate(ways[1:], 1):
        by_way = by_way.when(F.col("_way") == i, final(how))
    scored = frame.crossJoin(F.broadcast(variants)).withColumn("final", by_way)
    return top_k(scored, k, F.col("_slots"), per=("model",)).select("model", "user_idx", "item_idx", "rank")


def _figures(lists: DataFrame, truth: DataFrame, k: int, metric: str) -> dict[str, float]:
    rows = metrics.ranking(lists, truth, [k]).where(F.col("metric") == metric).collect()
    return {r["model"]: r["value"] for r in rows}


def ndcg(frame: DataFrame, truth: DataFrame, orderings: list[dict], k: int) -> dict[str, float]:
    """nDCG@k of each ordering over the users of `truth` (their relevant pairs)."""
    return _figures(_lists(frame, orderings, k), truth, k, "ndcg")


def weight_trials(cfg: Config) -> list[dict[str, float]]:
    """The configured weights and ranker.fusion_trials seeded random vectors (not all zero)."""
    rng = random.Random(cfg.ranker.seed)
    sources = list(CANDIDATE_SOURCES)
    trials = [dict(cfg.candidates.weights)]
    # the grid holds this many vectors besides all-zero and (perhaps) the configured one
    wanted = min(cfg.ranker.fusion_trials, len(WEIGHT_LEVELS) ** len(sources) - 2)
    while len(trials) < wanted + 1:
        w = {s: rng.choice(WEIGHT_LEVELS) for s in sources}
        if any(w.values()) and w not in trials:
            trials.append(w)
    return trials


def new_item_slots(frame: DataFrame, truth: DataFrame, cold: DataFrame, how: dict,
                   cfg: Config) -> tuple[int, dict, float]:
    """The new-item slots for an ordering (see the module doc), each count's figures, and
    the profile source's cold recall (the text-only bar)."""
    k = cfg.recommend.k
    cold_users = cold.select("user_idx").distinct().count()
    floor = cfg.ranker.cold_item_floor if cold_users else 0.0  # no cold pair: nothing to hold to
    text_only = {"kind": "source", "source": "profile"}
    name = {n: label(how) + (f"+{n}" if n else "") for n in SLOTS}
    with CacheScope() as cached:
        lists = cached(_lists(frame, [how, text_only], k, SLOTS))
        nd, rec = _figures(lists, truth, k, "ndcg"), _figures(lists, truth, k, "recall")
        cold_rec = _figures(lists, cold, k, "recall") if floor else {}
    profile = cold_rec.get(label(text_only), 0.0) if cfg.candidates.weights.get("profile", 0) > 0 else 0.0
    figures = {n: {"ndcg": nd[name[n]], "recall": rec[name[n]], "cold_recall": cold_rec.get(name[n])}
               for n in SLOTS}
    fair = [n for n in SLOTS if not floor or (
        figures[n]["cold_recall"] >= profile
        and lower_bound(figures[n]["cold_recall"], cold_users) >= floor * figures[n]["recall"])]
    # None clears the bar: the count that finds most cold pairs, and if slots find none
    # (new items are rarely relevant, as on MovieLens), the best by nDCG.
    best = max(fair, key=lambda n: (figures[n]["ndcg"], -n)) if fair else \
        max(SLOTS, key=lambda n: (figures[n]["cold_recall"] or 0.0, figures[n]["ndcg"], -n))
    return best, figures, profile


def lower_bound(share: float, n: int, z: float = 1.645) -> float:
    """The Wilson score interval's lower end (one-sided 95%) for a share seen on n users:
    cold validation pairs are few (dozens on the demo), so the floor must hold with
    confidence, not by a hair (a count that meets it by one user often misses on test)."""
    centre, spread = share + z * z / (2 * n), z * (share * (1 - share) / n + z * z / (4 * n * n)) ** 0.5
    return (centre - spread) / (1 + z * z / n)


def choose(spark: SparkSession, cfg: Config, fit: DataFrame, holdout: DataFrame, truth_fit: DataFrame,
           truth_holdout: DataFrame, cold_holdout: DataFrame, with_ce: bool) -> dict:
    """The ordering to serve and its knobs, with the validation nDCG of every candidate way.

    fit / holdout: feature frames (with `prediction` on holdout) of the users that fit the
    ranker and of the held-out ones; truth_*: their relevant validation pairs; cold_holdout:
    those of the held-out users' pairs whose item is new as of the validation cut."""
    conf, k, rrf_k = cfg.ranker, cfg.recommend.k, cfg.candidates.rrf_k
    configured = {"kind": "fused", "weights": dict(cfg.candidates.weights), "rrf_k": rrf_k, "name": "fused"}
    tuned = configured
    if conf.tune and conf.fusion_trials:
        trials = [{"kind": "fused", "weights": w, "rrf_k": rrf_k, "name": f"fused#{i}"}
                  for i, w in enumerate(weight_trials(cfg))]
        scores = ndcg(fit, truth_fit, trials, k)
        best = max(trials, key=lambda t: (scores.get(t["name"], 0.0), -int(t["name"][6:])))
        tuned = dict(best, name="fused:tuned")
    ways = [configured, tuned, *[{"kind": "source", "source": s} for s in CANDIDATE_SOURCES
                                 if cfg.candidates.weights.get(s, 0) > 0]]
    ways += [{"kind": "learned", "depth": d} for d in (conf.depths if conf.tune else [conf.pool])]
    if with_ce:
        ways += [{"kind": "blend", "blend": b} for b in (BLENDS if conf.tune else [cfg.recommend.blend])]
    val_ndcg = ndcg(holdout, truth_holdout, ways, k)
    by_label = {label(w): w for w in ways}

    def best_of(kind: str) -> dict | None:
        mine = [w for w in ways if w["kind"] == kind]
        return max(mine, key=lambda w: val_ndcg.get(label(w), 0.0)) if mine else None

    learned, blend = best_of("learned"), best_of("blend")
    singles = [w for w in ways if w["kind"] in ("fused", "source")]
    best_single = max(singles, key=lambda w: val_ndcg.get(label(w), 0.0))
    use = learned if val_ndcg.get(label(learned), 0.0) >= val_ndcg.get(label(best_single), 0.0) else best_single
    slots, by_slots, profile_cold = cfg.recommend.new_item_slots, {}, None
    if conf.tune:
        slots, by_slots, profile_cold = new_item_slots(holdout, truth_holdout, cold_holdout, use, cfg)
    return {"use": use, "use_label": label(use), "learned": learned, "blend": blend, "best_single": best_single,
            "fusion_weights": tuned["weights"], "new_item_slots": slots, "k": k,
            "val_ndcg": dict(sorted(val_ndcg.items())), "val_by_new_item_slots": by_slots,
            "val_profile_cold_recall": profile_cold,
            "ways": sorted(by_label)}
