"""Shared fixtures: one real local[2] SparkSession with Delta for the whole test run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil  # noqa: E402
from argparse import Namespace  # noqa: E402

from llmrec import conf as conf_mod  # noqa: E402


def make_config(root: Path, *overrides: str) -> conf_mod.Config:
    """Config for tests: local[2], tables under `root`, a small synthetic shop."""
    return conf_mod.load(ROOT / "conf" / "local.yaml", [
        "spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=2g",
        f"storage.root={root}", *overrides])


def write_silver(spark, cfg, events, reviews, items, day):
    """Writes silver tables from short tuples: events (user, item, type, ts), reviews
    (user, item, rating, ts), items (id, title, description, category, brand, price, launch)."""
    from llmrec import tables
    from llmrec.tables.schemas import SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS

    tables.overwrite(spark.createDataFrame(
        [(f"e{k}", u, i, t, ts, "test", day) for k, (u, i, t, ts) in enumerate(events)],
        SILVER_EVENTS.schema), cfg, SILVER_EVENTS)
    tables.overwrite(spark.createDataFrame(
        [(f"r{k}", u, i, r, None, None, ts, "test", day) for k, (u, i, r, ts) in enumerate(reviews)],
        SILVER_REVIEWS.schema), cfg, SILVER_REVIEWS)
    tables.overwrite(spark.createDataFrame(
        [(i, title, desc, cat, brand, price, None, launch, "test", day)
         for i, title, desc, cat, brand, price, launch in items], SILVER_ITEMS.schema), cfg, SILVER_ITEMS)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from llmrec.spark import get_session

    cfg = make_config(tmp_path_factory.mktemp("spark-root"))
    session = get_session(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path):
    """A fresh config whose storage root is a new temporary folder."""
    return make_config(tmp_path / "root")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random BERT cross-encoder saved as the train job saves one (inference tests
    also use it as the embedding model: AutoModel loads its encoder)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from llmrec.train.model import TINY, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("default")
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=1,
                                                     max_position_embeddings=128, **TINY))
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


# A small synthetic shop, served by the tiny model: shared by the inference, explain and
# evaluate tests (read-only; a test that writes copies it first).
SHOP = ("synthetic.users=120", "synthetic.items=40", "synthetic.days=20", "synthetic.events=3000",
        "synthetic.bad_row_rate=0.0", "synthetic.cold_item_fraction=0.0",
        "candidates.per_source=10", "candidates.per_user=25", "candidates.neighbors=8",
        "candidates.block_rows=16", "candidates.als.iterations=3", "candidates.als.rank=8",
        "recommend.k=5", "recommend.rerank_top=10", "recommend.user_sample=1.0", "search.k=5",
        "search.retrieve=10",
        "infer.batch_size=8", "infer.arrow_batch_rows=32")


@pytest.fixture(scope="session")
def shop(spark, tmp_path_factory, tiny_dir):
    """A small synthetic shop up to gold.interactions, shared read-only; tests that write
    copy it first (`fresh`)."""
    from llmrec import stages

    root = tmp_path_factory.mktemp("shop") / "root"
    cfg = make_config(root, *SHOP)
    stages.pipeline(spark, cfg, Namespace(stages=["generate", "ingest", "clean", "interactions"]))
    return root


def fresh(shop, tmp_path, *overrides):
    root = tmp_path / "root"
    shutil.copytree(shop, root)
    return make_config(root, *SHOP, *overrides)


def tiny(tiny_dir):
    return (f"embed.model={tiny_dir}", f"recommend.cross_encoder={tiny_dir}", "embed.max_length=32")


@pytest.fixture(scope="session")
def served(spark, shop, tiny_dir, tmp_path_factory):
    """The shop with embeddings, candidates and recommendations from the tiny models."""
    from llmrec.infer import backfill, candidates, rank

    root = tmp_path_factory.mktemp("served") / "root"
    shutil.copytree(shop, root)
    cfg = make_config(root, *SHOP, *tiny(tiny_dir))
    backfill.run(spark, cfg)
    candidates.build(spark, cfg)
    rank.recommend(spark, cfg)
    return cfg
