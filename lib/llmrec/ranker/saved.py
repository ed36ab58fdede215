"""Where the ranker stage keeps its model and choice: <ranker.output_dir>/model (the
Spark ML model) and ranker.json (features, versions, parameters, the choice made on
validation and its figures)."""
from __future__ import annotations

import json
import os

from pyspark.sql import SparkSession

from llmrec import storage
from llmrec.conf import Config

FORMAT = 1


def output_dir(cfg: Config) -> str:
    out = cfg.ranker.output_dir
    if os.path.isabs(out) or "://" in out:
        return out
    return os.path.join(storage.absolute(cfg.storage.root), out)


def load_summary(spark: SparkSession, cfg: Config) -> dict:
    """ranker.json."""
    out = output_dir(cfg)
    text = storage.read_text(spark, os.path.join(out, "ranker.json"))
    if text is None:
        raise FileNotFoundError(f"no ranker at {out}: run the ranker stage first (or set recommend.ranker "
                                "to blend or none)")
    return json.loads(text)


def load(spark: SparkSession, cfg: Config) -> tuple[dict, object]:
    """ranker.json and the fitted model (None when the choice is not the learned ranker)."""
    out = output_dir(cfg)
    summary = load_summary(spark, cfg)
    if summary["choice"]["use"]["kind"] != "learned":
        return summary, None
    from xgboost.spark import SparkXGBRankerModel

    return summary, SparkXGBRankerModel.load(os.path.join(out, "model"))
