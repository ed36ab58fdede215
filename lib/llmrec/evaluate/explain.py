"""Why each recommendation: the history items behind it, the words that drove the
cross-encoder's score, and a short readable reason, written into gold.recommendations.

History attribution (Spark SQL, any number of users): each recommendation is joined with
the user's serving history (positively weighted items of infer.history_splits) and each
pair scored by the cosine of their gold.item_embeddings vectors (L2-normalised, so a dot
product, computed with higher-order functions: no Python UDF). The best
`explain.history_items` per recommendation (ties: the smaller item index) become
`top_history`, with the title and the user's strongest action on the item.

Token attribution (a pandas UDF over the cross-encoder, loaded once per Python worker by
the engine's cache): the same texts and tokenization `recommend` scored, fed as word
embeddings (`inputs_embeds`; BERT adds positions and segments itself) so the logit can
be differentiated per input token:
  grad_input            gradient x input embedding, summed over the hidden dimension
  integrated_gradients  (x - x') . mean gradient along the straight path from x', the
                        input with every text token replaced by [PAD] ([CLS]/[SEP],
                        positions, segments and mask kept), `ig_steps` midpoint steps;
                        the attributions sum to logit(x) - logit(x') (completeness)
WordPiece continuations (##) are joined to their word with their attributions summed;
per side (user text, item text) the `top_tokens` words by |attribution| are kept. Only
each user's best `token_ranks` recommendations get tokens (a backward pass each, or
ig_steps of them); `--user` attributes all of that user's.

The reason ("Because you bought X and viewed Y; matches brand Z.") names the top two
history items and what the user did with them; "matches" names the item's brand if a
history item has it, else its top-level category if one has that, else the item word
the cross-encoder attributed most (when tokens were computed). Without history items:
"Popular with shoppers like you (source: <candidate source>)". All in Spark SQL.

Everything explained is staged to Parquet first (the model runs once, whatever the
MERGE reads twice), then MERGEd into gold.recommendations in one commit, updating
reason, top_history and tokens of the rows still holding the explained item.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator, Optional

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from llmrec import storage, tables
from llmrec.conf import Config
from llmrec.evaluate.metrics import dot
from llmrec.features.actions import Action, action_phrase, actions
from llmrec.frames import map_lookup, top_level_category, top_per
from llmrec.infer import engine, rank
from llmrec.infer.candidates import history
from llmrec.progress import fmt_duration, log
from llmrec.tables.schemas import (
    ITEM_EMBEDDINGS, ITEM_INDEX, RECOMMENDATIONS, SILVER_ITEMS, TOKEN_ATTRIBUTION, USER_INDEX,
)
from llmrec.train import model as model_mod

# Rows per attribution task: a backward pass per row (ig_steps of them for IG).
TASK_ROWS = 500
SIDES = ("user", "item")  # token_type_ids 0 and 1: the first text and the second
EXPLAINED = ("reason", "top_history", "tokens")
TOP_HISTORY_TYPE = RECOMMENDATIONS.schema["top_history"].dataType
TOKENS_TYPE = RECOMMENDATIONS.schema["tokens"].dataType


# --- history attribution -------------------------------------------------------------

def catalog(spark: SparkSession, cfg: Config) -> DataFrame:
    """(item_idx, item_id, title, brand, segment): segment is the top-level category."""
    return tables.read(spark, cfg, SILVER_ITEMS) \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id") \
        .select("item_idx", "item_id", "title", "brand",
                top_level_category("category").alias("segment"))


def positive_history(spark: SparkSession, cfg: Config) -> DataFrame:
    """(user_idx, item_idx, action): the serving history's positively weighted items and
    the user's strongest action on each ("reviewed" when only a review weighs)."""
    return history(spark, cfg).where(F.col("weight") > 0) \
        .join(actions(spark, cfg), ["user_idx", "item_idx"], "left") \
        .select("user_idx", "item_idx", action_phrase(F.col("event_type")).alias("action"))


def top_history(recs: DataFrame, hist: DataFrame, vectors: DataFrame, items: DataFrame,
                n: int) -> DataFrame:
    """(user_idx, rank, top_history): per recommendation the n history items (not the item
    itself) most similar to it, best first. Rows without any are absent."""
    past = hist.select("user_idx", F.col("item_idx").alias("h_idx"), "action") \
        .join(vectors.select(F.col("item_idx").alias("h_idx"), F.col("vector").alias("h_vec")), "h_idx")
    pairs = recs.select("user_idx", "rank", "item_idx") \
        .join(vectors.select("item_idx", F.col("vector").alias("r_vec")), "item_idx") \
        .join(past, "user_idx").where(F.col("h_idx") != F.col("item_idx")) \
        .select("user_idx", "rank", "h_idx", "action", dot("r_vec", "h_vec").alias("similarity"))
    # A window, not a collect of every pair: it spills for users with long histories.
    kept = top_per(pairs, ["user_idx", "rank"], n, F.col("similarity").desc(), "h_idx", rank="_r") \
        .join(items.select(F.col("item_idx").alias("h_idx"), F.col("item_id").alias("h_id"),
                           F.col("title").alias("h_title")), "h_idx")  # titles for the kept few only
    entry = F.struct(F.col("h_idx").alias("item_idx"), F.col("h_id").alias("item_id"),
                     F.col("h_title").alias("title"), "action", "similarity")
    return kept.groupBy("user_idx", "rank").agg(F.transform(
        F.array_sort(F.collect_list(F.struct("_r", entry.alias("e")))), lambda x: x["e"]).alias("top_history"))


def tastes(hist: DataFrame, items: DataFrame) -> DataFrame:
    """(user_idx, brands, segments): the brands and top-level categories of the history."""
    return hist.join(items, "item_idx").groupBy("user_idx").agg(
        F.collect_set("brand").alias("brands"), F.collect_set("segment").alias("segments"))


# --- token attribution ---------------------------------------------------------------

@dataclasses.dataclass
class Attribution:
    """One pair's attribution per input token ([CLS]/[SEP] included, padding not)."""
    pieces: list[str]
    sides: list[int]  # 0: the first text (user), 1: the second (item)
    special: list[bool]  # [CLS] and [SEP]: part of neither text
    values: np.ndarray  # float64, one per piece


def _gradient(model, embeds, enc):
    """d logit / d inputs_embeds for each row (rows do not interact: eval mode)."""
    import torch

    embeds = embeds.detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"],
                   token_type_ids=enc["token_type_ids"]).logits[:, 0]
    return torch.autograd.grad(logits.sum(), embeds)[0]


def _grad_input(model, enc):
    import torch

    with torch.no_grad():
        x = model.get_input_embeddings()(enc["input_ids"])
    return (_gradient(model, x, enc) * x).sum(-1)


def _integrated_gradients(model, enc, keep_ids, pad_id: int, steps: int):
    import torch

    ids = enc["input_ids"]
    pad = torch.full_like(ids, pad_id)
    with torch.no_grad():
        x = model.get_input_embeddings()(ids)
        base = model.get_input_embeddings()(torch.where(torch.isin(ids, keep_ids), ids, pad))
    total = torch.zeros_like(x)
    for k in range(steps):  # Riemann midpoints of the straight path base -> x
        total += _gradient(model, base + (k + 0.5) / steps * (x - base), enc)
    return ((x - base) * total / steps).sum(-1)


def attribute(ref: engine.ModelRef, first: list[str], second: list[str],
              method: str = "grad_input", steps: int = 32) -> list[Attribution]:
    """Per-token attributions of the cross-encoder's logit for each (first, second) pair,
    tokenized as `engine.run` scores them; micro-batches of ref.batch_size, by length."""
    import torch

    m = engine.load(ref)
    keep_ids = torch.tensor([m.tokenizer.cls_token_id, m.tokenizer.sep_token_id], device=m.device)
    order = np.argsort([len(a) + len(b) for a, b in zip(first, second)], kind="stable")
    out: list[Optional[Attribution]] = [None] * len(first)
    # Gradients even inside a caller's no_grad; no autocast: bf16 is too coarse for them.
    with torch.enable_grad():
        for start in range(0, len(first), ref.batch_size):
            idx = order[start:start + ref.batch_size]
            enc = model_mod.tokenize_pairs(m.tokenizer, [first[i] for i in idx], [second[i] for i in idx],
                                           ref.max_length, ref.truncation, "longest", "pt").to(m.device)
            if method == "integrated_gradients":
                values = _integrated_gradients(m.model, enc, keep_ids, m.tokenizer.pad_token_id, steps)
            else:
                values = _grad_input(m.model, enc)
            for row, i in enumerate(idx):
                real = enc["attention_mask"][row].bool()
                ids = enc["input_ids"][row][real]
                out[i] = Attribution(m.tokenizer.convert_ids_to_tokens(ids.tolist()),
                                     enc["token_type_ids"][row][real].tolist(),
                                     torch.isin(ids, keep_ids).tolist(),
                                     values[row][real].detach().cpu().double().numpy())
    return out


def words(a: Attribution) -> list[tuple[str, str, float]]:
    """(side, word, attribution) in text order: WordPiece continuations (##) joined to
    their word with the attributions summed, [CLS]/[SEP] dropped."""
    out: list[tuple[str, str, float]] = []
    for piece, side, special, value in zip(a.pieces, a.sides, a.special, a.values.tolist()):
        if special:
            continue
        if piece.startswith("##") and out and out[-1][0] == SIDES[side]:
            s, word, total = out[-1]
            out[-1] = (s, word + piece[2:], total + value)
        else:
            out.append((SIDES[side], piece, value))
    return out


def top_words(a: Attribution, n: int) -> list[dict]:
    """Per side the n words by |attribution| (ties: the earlier word), user side first;
    punctuation is left out: it explains nothing to a reader."""
    merged = [(pos, *w) for pos, w in enumerate(words(a)) if any(c.isalnum() for c in w[1])]
    kept = []
    for side in SIDES:
        ranked = sorted((w for w in merged if w[1] == side), key=lambda w: (-abs(w[3]), w[0]))
        kept += [{"side": side, "token": word, "attribution": value} for _, _, word, value in ranked[:n]]
    return kept


def tokens_udf(ref: engine.ModelRef, method: str, steps: int, n: int):
    """pandas UDF: (user text, item text) -> array<struct<side, token, attribution>>."""

    @F.pandas_udf(T.ArrayType(TOKEN_ATTRIBUTION))
    def tokens(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        engine.load(ref)  # once per worker: the engine's cache outlives this task
        for first, second in batches:
            attributions = attribute(ref, first.fillna("").tolist(), second.fillna("").tolist(), method, steps)
            yield pd.Series([top_words(a, n) for a in attributions])

    return tokens


def token_rows(spark: SparkSession, cfg: Config, recs: DataFrame) -> Optional[DataFrame]:
    """(user_idx, rank, tokens) for `recs`, scored on the texts `recommend` scored; None
    without a cross-encoder (recommend.cross_encoder=none)."""
    path = rank.cross_encoder(cfg)
    if path is None:
        return None
    conf = cfg.explain
    engine.arrow_batch(spark, cfg)
    pairs = rank.scoring_pairs(spark, cfg, recs.select("user_idx", "rank", "item_idx"))
    udf = tokens_udf(rank.score_ref(cfg, path), conf.method, conf.ig_steps, conf.top_tokens)
    return pairs.repartition(rank.task_partitions(spark, recs.count(), TASK_ROWS)) \
        .select("user_idx", "rank", udf("first", "second").alias("tokens"))


# --- reasons -------------------------------------------------------------------------

def _did(h: Column) -> Column:
    """'bought X', 'viewed X', 'added X to your cart', 'reviewed X'."""
    sentence = map_lookup({a.phrase: a.sentence for a in Action}, h["action"])
    return F.replace(sentence, F.lit("{item}"), F.coalesce(h["title"], h["item_id"]))


def reason() -> Column:
    """The reason from top_history, source, tokens and the brand/segment columns of the
    item and of the user's history (brands, segments)."""
    h1, h2 = F.try_element_at("top_history", F.lit(1)), F.try_element_at("top_history", F.lit(2))
    because = F.concat(F.lit("Because you "), _did(h1),
                       F.when(h2.isNotNull(), F.concat(F.lit(" and "), _did(h2))).otherwise(F.lit("")))
    popular = F.concat(F.lit("Popular with shoppers like you (source: "), F.col("source"), F.lit(")"))
    # tokens are sorted by |attribution| per side: the first positive item word is the most attributed
    word = F.try_element_at(F.filter("tokens", lambda t: (t["side"] == "item") & (t["attribution"] > 0)),
                            F.lit(1))["token"]
    matches = F.when(F.array_contains("brands", F.col("brand")), F.concat(F.lit("; matches brand "), "brand")) \
        .when(F.array_contains("segments", F.col("segment")), F.concat(F.lit("; matches category "), "segment")) \
        .when(word.isNotNull(), F.concat(F.lit('; matches "'), word, F.lit('"'))) \
        .otherwise(F.lit(""))
    return F.concat(F.when(F.size("top_history") > 0, because).otherwise(popular), matches, F.lit("."))


# --- the job -------------------------------------------------------------------------

def explain(spark: SparkSession, cfg: Config, recs: DataFrame, token_ranks: Optional[int]) -> DataFrame:
    """(user_idx, rank, item_idx, reason, top_history, tokens) for every row of `recs`;
    tokens for ranks <= token_ranks (None: all), null elsewhere."""
    items = catalog(spark, cfg)
    hist = positive_history(spark, cfg)
    vectors = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "vector")
    top = top_history(recs, hist, vectors, items, cfg.explain.history_items)
    chosen = recs if token_ranks is None else recs.where(F.col("rank") <= token_ranks)
    toks = token_rows(spark, cfg, chosen) if token_ranks != 0 else None
    if toks is None:
        toks = recs.select("user_idx", "rank", F.lit(None).cast(TOKENS_TYPE).alias("tokens")).limit(0)
    return recs.select("user_idx", "rank", "item_idx", "source") \
        .join(top, ["user_idx", "rank"], "left").join(toks, ["user_idx", "rank"], "left") \
        .join(items.select("item_idx", "brand", "segment"), "item_idx", "left") \
        .join(tastes(hist, items), "user_idx", "left") \
        .withColumn("top_history", F.coalesce("top_history", F.array().cast(TOP_HISTORY_TYPE))) \
        .select("user_idx", "rank", "item_idx", reason().alias("reason"), "top_history", "tokens")


def update(spark: SparkSession, cfg: Config, explained: DataFrame) -> Row:
    """Stages the explanations, MERGEs them into gold.recommendations in one commit (rows
    whose key still holds the explained item) and returns (rows, users, with_tokens)."""
    from delta.tables import DeltaTable

    with storage.staging(cfg.storage.root, "explain") as staging:
        explained.write.parquet(staging)
        staged = spark.read.parquet(staging)
        DeltaTable.forPath(spark, tables.path(cfg, RECOMMENDATIONS)).alias("t") \
            .merge(staged.alias("s"), "t.user_idx = s.user_idx AND t.rank = s.rank AND t.item_idx = s.item_idx") \
            .whenMatchedUpdate(set={c: f"s.{c}" for c in EXPLAINED}).execute()
        return staged.agg(F.count("*").alias("rows"), F.countDistinct("user_idx").alias("users"),
                          F.count("tokens").alias("with_tokens")).first()


def user_index(spark: SparkSession, cfg: Config, user_id: str) -> int:
    row = tables.read(spark, cfg, USER_INDEX).where(F.col("user_id") == user_id).select("user_idx").first()
    if row is None:
        raise ValueError(f"unknown user {user_id!r}: not in gold.user_index")
    return row.user_idx


def render(user_id: str, rows: list[Row], method: str) -> str:
    """The readable block of `explain --user`: one paragraph per recommendation."""
    lines = [f"Recommendations for {user_id} (token attributions: {method})"]
    for r in rows:
        lines.append(f"#{r['rank']}  {r['item_id']}  {r['title']}  score {r['score']:.4f}")
        lines.append(f"    {r['reason']}")
        history_items = ", ".join(f"{h['title']} ({h['item_id']}, {h['action']}, similarity {h['similarity']:.3f})"
                                  for h in r["top_history"] or [])
        lines.append(f"    history: {history_items or 'none'}")
        for side in SIDES:
            toks = ", ".join(f"{t['token']} {t['attribution']:+.3g}" for t in r["tokens"] or [] if t["side"] == side)
            lines.append(f"    {side} words: {toks or 'none'}")
    return "\n".join(lines)


def run(spark: SparkSession, cfg: Config, user_id: Optional[str] = None) -> dict:
    """Explains every recommendation (or only `user_id`'s, all with tokens, and prints them)."""
    started = time.monotonic()
    recs = tables.read(spark, cfg, RECOMMENDATIONS)
    token_ranks: Optional[int] = cfg.explain.token_ranks
    if user_id is not None:
        idx = user_index(spark, cfg, user_id)
        recs = recs.where(F.col("user_idx") == idx)
        if recs.isEmpty():
            raise ValueError(f"user {user_id!r} has no recommendations in gold.recommendations")
        token_ranks = None
    counts = update(spark, cfg, explain(spark, cfg, recs, token_ranks))
    method = cfg.explain.method if counts["with_tokens"] else "none"
    seconds = time.monotonic() - started
    log.info("explain: %s rows of %s users explained, %s with token attributions (%s) in %s, %.1f rows/s",
             f"{counts['rows']:,}", f"{counts['users']:,}", f"{counts['with_tokens']:,}", method,
             fmt_duration(seconds), counts["rows"] / max(seconds, 1e-9))
    if user_id is not None:  # read again: the DataFrame above is the table before the MERGE
        rows = tables.read(spark, cfg, RECOMMENDATIONS).where(F.col("user_idx") == idx) \
            .select("rank", "item_idx", "item_id", "score", *EXPLAINED) \
            .join(catalog(spark, cfg).select("item_idx", "title"), "item_idx", "left").orderBy("rank").collect()
        print(render(user_id, rows, method), flush=True)
    return {"rows": counts["rows"], "users": counts["users"], "with_tokens": counts["with_tokens"],
            "method": method, "seconds": round(seconds, 1)}
