"""Shared fixtures: one real local[2] SparkSession with Delta for the whole test run."""
from __future__ import annotations

import os
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

from helpers import SHOP, make_config, save_tiny_model, tiny

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every test is marked by its folder (select with -m, e.g. -m "not integration"):
# unit needs nothing; spark starts the shared local[2] session; train starts training
# processes (Horovod, TorchDistributor); integration a standalone cluster on 127.0.0.1.
FOLDER_MARKS = {"spark": "spark", "train": "train", "integration": "integration"}


def pytest_collection_modifyitems(items):
    for item in items:
        mark = FOLDER_MARKS.get(Path(str(item.fspath)).parent.name)
        if mark:
            item.add_marker(mark)


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
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def shop(spark, tmp_path_factory, tiny_dir):
    """A small synthetic shop up to gold.interactions, shared read-only; tests that write
    copy it first (`fresh`)."""
    from llmrec import runs

    root = tmp_path_factory.mktemp("shop") / "root"
    cfg = make_config(root, *SHOP)
    runs.pipeline(spark, cfg, Namespace(stages=["generate", "ingest", "clean", "interactions"]))
    return root


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
