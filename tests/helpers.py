"""What tests share besides fixtures: the repository root, configs for a temporary
storage root, the small shop's settings and hand-made silver tables."""
from __future__ import annotations

import shutil
from pathlib import Path

from llmrec import conf as conf_mod

ROOT = Path(__file__).resolve().parents[1]


# Settings every test runs with, in process or through submit.sh: each user's last items
# held out (leave_last: what the hand-made histories are written for) and the plain
# cross-encoder recipe (popularity negatives, pointwise, no review text), which needs no
# candidates before examples; the tests of the other samplers, the listwise loss and
# review text set them themselves.
PINNED = ("interactions.split.method=leave_last", "examples.negatives=popularity", "train.loss=pointwise",
          "examples.item_reviews=false", "examples.user_reviews=false")


def config_overrides(root: Path, *overrides: str) -> list[str]:
    """The settings tests run with over conf/local.yaml: local[2], tables under `root`, PINNED."""
    return ["spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=2g", *PINNED,
            f"storage.root={root}", *overrides]


def make_config(root: Path, *overrides: str) -> conf_mod.Config:
    return conf_mod.load(ROOT / "conf" / "local.yaml", config_overrides(root, *overrides))


def job_args(root: Path, *overrides: str) -> list[str]:
    """The same settings as a job's command line (`--set k=v ...`), for cli.invoke."""
    return [arg for s in config_overrides(root, *overrides) for arg in ("--set", s)]


def write_silver(spark, cfg, events, reviews, items, day):
    """Writes silver tables from short tuples: events (user, item, type, ts), reviews
    (user, item, rating, ts[, text]), items (id, title, description, category, brand, price, launch)."""
    from llmrec import tables
    from llmrec.tables.schemas import SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS

    tables.overwrite(spark.createDataFrame(
        [(f"e{k}", u, i, t, ts, "test", day) for k, (u, i, t, ts) in enumerate(events)],
        SILVER_EVENTS.schema), cfg, SILVER_EVENTS)
    tables.overwrite(spark.createDataFrame(
        [(f"r{k}", u, i, r, None, (rest or [None])[0], ts, "test", day)
         for k, (u, i, r, ts, *rest) in enumerate(reviews)],
        SILVER_REVIEWS.schema), cfg, SILVER_REVIEWS)
    tables.overwrite(spark.createDataFrame(
        [(i, title, desc, cat, brand, price, None, launch, "test", day)
         for i, title, desc, cat, brand, price, launch in items], SILVER_ITEMS.schema), cfg, SILVER_ITEMS)


# A small synthetic shop, served by the tiny model: shared by the inference, explain and
# evaluate tests (read-only; a test that writes copies it first).
SHOP = ("synthetic.users=120", "synthetic.items=40", "synthetic.days=20", "synthetic.events=3000",
        "synthetic.bad_row_rate=0.0", "synthetic.cold_item_fraction=0.0",
        "candidates.per_source=10", "candidates.per_user=25", "candidates.neighbors=8",
        "candidates.block_rows=16", "candidates.als.iterations=3", "candidates.als.rank=8",
        "recommend.k=5", "recommend.rerank_top=10", "recommend.user_sample=1.0", "recommend.ranker=blend",
        "search.k=5",
        "search.retrieve=10",
        "infer.batch_size=8", "infer.arrow_batch_rows=32")


def fresh(shop, tmp_path, *overrides):
    root = tmp_path / "root"
    shutil.copytree(shop, root)
    return make_config(root, *SHOP, *overrides)


def tiny(tiny_dir):
    return (f"embed.model={tiny_dir}", f"recommend.cross_encoder={tiny_dir}", "embed.max_length=32")


def save_tiny_model(path: Path) -> str:
    """A tiny random BERT cross-encoder (seeded) saved as the train job saves one, with the
    shipped tokenizer; inference also loads it as the embedding model (AutoModel)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from llmrec.train.model import TINY, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("default")
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), num_labels=1,
                                                     max_position_embeddings=128, **TINY))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
