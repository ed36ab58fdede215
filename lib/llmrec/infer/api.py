"""A small Python API for notebooks: one query at a time, answered in the driver.

    from llmrec.infer.api import Recommender
    rec = Recommender.load(cfg, spark)
    rec.search("waterproof trail running shoes", user_id="U0000042")
    rec.for_new_user(segment="Shoes")            # cold start: popular in a segment
    rec.for_new_user(intent="a gift for a runner")  # cold start: semantic search
    rec.similar_items("I0000007")
    rec.recommendations("U0000042")                # what the recommend job stored

It reads the item embeddings into driver memory (about 1.6 KB an item with MiniLM:
fine to a few million items) and runs the same models and formulas as the batch jobs
(llmrec.infer.search); for larger catalogs or many queries use `./submit.sh search`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config
from llmrec.infer import engine, rank, search
from llmrec.infer.candidates import EVERYONE
from llmrec.infer.topk import best_k
from llmrec.tables.schemas import (
    ITEM_EMBEDDINGS, POPULAR_ITEMS, RECOMMENDATIONS, USER_EMBEDDINGS, USER_INDEX,
)


class Recommender:
    def __init__(self, cfg: Config, spark, items: pd.DataFrame):
        self.cfg, self.spark = cfg, spark
        items = items.sort_values("item_idx", kind="stable").reset_index(drop=True)
        self.items = items[["item_idx", "item_id", "text"]]
        self.ids = items["item_idx"].to_numpy(np.int64)
        self.vectors = np.stack(items["vector"].to_numpy()).astype(np.float32)
        self.by_id = {v: i for i, v in enumerate(items["item_id"])}
        self.embed = engine.embed_ref(cfg)
        path = rank.cross_encoder(cfg)
        self.score = rank.score_ref(cfg, path) if path else None

    @classmethod
    def load(cls, cfg: Config, spark) -> "Recommender":
        ref = engine.embed_ref(cfg)
        search.check_item_embeddings(spark, cfg, ref)
        items = tables.read(spark, cfg, ITEM_EMBEDDINGS).select("item_idx", "item_id", "text", "vector").toPandas()
        return cls(cfg, spark, items)

    def _profile(self, user_id: str | None) -> tuple[np.ndarray | None, str | None]:
        if user_id is None:
            return None, None
        rows = tables.read(self.spark, self.cfg, USER_INDEX).where(F.col("user_id") == user_id) \
            .join(tables.read_or_empty(self.spark, self.cfg, USER_EMBEDDINGS), "user_idx") \
            .select("vector", "text").collect()
        if not rows:
            return None, None  # unknown or history-less user: the query alone
        return np.asarray(rows[0]["vector"], dtype=np.float32), rows[0]["text"]

    def _frame(self, idx: np.ndarray, columns: dict) -> pd.DataFrame:
        out = self.items.iloc[idx].reset_index(drop=True).copy()
        out["title"] = out["text"].str.split(". ", n=1, regex=False).str[0]
        for name, values in columns.items():
            out[name] = values
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        return out.drop(columns=["text"])

    def search(self, text: str, user_id: str | None = None, k: int | None = None) -> pd.DataFrame:
        """Top-k items for a query, personalised when the user is known."""
        conf = self.cfg.search
        k = k or conf.k
        profile, user_text = self._profile(user_id)
        q = search.personalise(engine.run(self.embed, [text])[0], profile, conf.profile_weight)
        rows, ids, cos = best_k((q @ self.vectors.T)[None, :], self.ids, conf.retrieve)
        pos = np.searchsorted(self.ids, ids)
        cos01 = (cos + 1.0) / 2.0
        if self.score is not None:
            first = [search.query_text(text, user_text)] * len(pos)
            ce = engine.sigmoid(engine.run(self.score, first, self.items["text"].iloc[pos].tolist()))
            final = conf.blend * ce + (1 - conf.blend) * cos01
        else:
            ce, final = np.full(len(pos), np.nan), cos01
        order = np.lexsort((ids, -final))[:k]
        return self._frame(pos[order], {"score": final[order], "retrieval_score": cos[order],
                                        "ce_score": ce[order]})

    def similar_items(self, item_id: str, k: int = 10) -> pd.DataFrame:
        """Nearest items by embedding (the content neighbours), excluding the item itself."""
        if item_id not in self.by_id:
            raise KeyError(f"unknown item {item_id!r}")
        i = self.by_id[item_id]
        scores = (self.vectors[i] @ self.vectors.T)[None, :]
        scores[0, i] = -np.inf
        _, ids, cos = best_k(scores, self.ids, k)
        return self._frame(np.searchsorted(self.ids, ids), {"score": cos})

    def for_new_user(self, intent: str | None = None, segment: str | None = None,
                     k: int | None = None) -> pd.DataFrame:
        """Cold start: search results for a text of intent, else the segment's popular
        items (everyone's when the segment is unknown or not given)."""
        k = k or self.cfg.recommend.k
        if intent:
            return self.search(intent, k=k)
        pop = tables.read(self.spark, self.cfg, POPULAR_ITEMS)
        known = {r["segment"] for r in pop.select("segment").distinct().collect()}
        seg = segment if segment in known else EVERYONE
        rows = pop.where(F.col("segment") == seg).orderBy("rank").limit(k).toPandas()
        pos = np.searchsorted(self.ids, rows["item_idx"].to_numpy(np.int64))
        return self._frame(pos, {"score": rows["score"].to_numpy(), "segment": seg})

    def recommendations(self, user_id: str) -> pd.DataFrame:
        """The stored top-K of a user (gold.recommendations)."""
        return tables.read(self.spark, self.cfg, RECOMMENDATIONS).where(F.col("user_id") == user_id) \
            .orderBy("rank").toPandas()
