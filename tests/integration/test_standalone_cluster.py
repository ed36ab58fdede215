"""End to end through submit.sh against a real Spark standalone master and worker on
127.0.0.1 (started here from the pip package, stopped at the end), plus the
submit.sh failure paths a user meets first."""
import json
import re
import subprocess

import pytest
from pyspark.sql import functions as F

from helpers import PINNED, ROOT, make_config
from standalone import submit
from llmrec import tables
from llmrec.tables.schemas import (
    EXAMPLES, INTERACTIONS, ITEM_EMBEDDINGS, ITEM_INDEX, QUARANTINE, RECOMMENDATIONS, SEARCH_RESULTS,
    SILVER_EVENTS, USER_INDEX,
)

SHOP = ["synthetic.users=200", "synthetic.items=80", "synthetic.days=20", "synthetic.events=5000",
        "synthetic.bad_row_rate=0.03", "spark.shuffle_partitions=4"]


@pytest.fixture(scope="module")
def cluster(master):
    """The shared master with one worker (2 cores, 3g)."""
    master.add_worker(2, "3g")
    yield master
    master.remove_workers()


@pytest.mark.timeout(1500)  # every stage but train, on a 2-core machine
def test_pipeline_stages_on_standalone_cluster(spark, cluster, tmp_path, tiny_dir):
    root = tmp_path / "root"
    models = [f"embed.model={tiny_dir}", f"recommend.cross_encoder={tiny_dir}", "embed.max_length=32",
              "recommend.k=5", "recommend.rerank_top=10", "recommend.user_sample=1.0",
              "candidates.als.iterations=3", "ranker.n_estimators=20", "ranker.pool=20", "ranker.pool_depths=10,20",
              "ranker.fusion_trials=2"]
    sets = [x for s in (*PINNED, *SHOP, *models, f"storage.root={root}") for x in ("--set", s)]
    evaluate = ["--set", "evaluate.ks=1,5", "--set", f"evaluate.reports_dir={tmp_path / 'reports'}",
                "--set", "evaluate.run=cluster", "--set", "evaluate.models=popular,item_item,fused,hybrid"]
    # Every stage but train in one application (each submit costs a JVM, an app start and
    # cold executors: ~1 minute): tokenize and the inference UDFs on the executors, the
    # ranker as SparkXGBRanker's barrier-mode training on the cluster's two task slots.
    # (`explain --user` through the job's command line: tests/spark/test_explain.py.)
    stages = "generate,ingest,clean,interactions,examples,tokenize,embed,candidates,ranker,recommend,search," \
        "explain,evaluate"
    apps_before = {app["id"] for app in cluster.state()["completedapps"]}
    served = submit("pipeline", "--stages", stages, *sets, *evaluate, master=cluster.url, timeout=1500)
    assert served.returncode == 0, f"pipeline failed:\n{served.output[-3000:]}"
    assert "stage tokenize: done" in served.output and "stage train" not in served.output
    assert "job pipeline finished" in served.output and "ranker: serving" in served.output
    # the driver got spark.driver_memory (4g), which only the command line can give it
    heap = float(re.search(r"job pipeline on spark://\S+, driver heap ([\d.]+) GiB", served.output)[1])
    assert 3.0 < heap <= 4.0, heap
    report = tmp_path / "reports" / "cluster" / "report.html"
    assert f"Report: {report}" in served.output and report.is_file()
    # the stages really ran on the cluster: the master lists one more application, finished
    finished = [app for app in cluster.state()["completedapps"] if app["id"] not in apps_before]
    assert [app["state"] for app in finished] == ["FINISHED"]

    cfg = make_config(root, *SHOP)
    events = tables.read(spark, cfg, SILVER_EVENTS)
    assert events.count() > 4000
    assert events.groupBy("event_id").count().where("count > 1").count() == 0
    assert tables.read(spark, cfg, QUARANTINE).count() > 0
    inter = tables.read(spark, cfg, INTERACTIONS)
    assert {r.split for r in inter.select("split").distinct().collect()} == {"train", "val", "test"}
    assert inter.agg(F.max("user_idx")).first()[0] < tables.read(spark, cfg, USER_INDEX).count()
    assert tables.read(spark, cfg, ITEM_INDEX).count() == 80
    manifest = json.loads((root / "export" / "csr" / "manifest.json").read_text())
    assert sum(s["nnz"] for s in manifest["splits"].values()) == inter.count()
    stats = json.loads((root / "export" / "interactions_stats.json").read_text())
    assert stats["nnz"] == inter.count()
    # tokenized on the cluster's executors: every example is in exactly one shard row
    examples = tables.read(spark, cfg, EXAMPLES)
    shards = json.loads((root / "shards" / "manifest.json").read_text())
    assert {k: v["rows"] for k, v in shards["splits"].items()} == \
        {r.split: r["count"] for r in examples.groupBy("split").count().collect()}
    # inference on the cluster's executors: every item embedded, top-5 for every user
    assert tables.read(spark, cfg, ITEM_EMBEDDINGS).count() == 80
    recs = tables.read(spark, cfg, RECOMMENDATIONS)
    assert recs.select("user_idx").distinct().count() == tables.read(spark, cfg, USER_INDEX).count()
    assert recs.groupBy("user_idx").agg(F.max("rank").alias("k")).where("k != 5").count() == 0
    assert tables.read(spark, cfg, SEARCH_RESULTS).select("query_id").distinct().count() == 6
    assert recs.where(F.col("reason").isNull()).count() == 0  # every recommendation explained


def test_submit_help_and_clear_failures(tmp_path):
    helped = subprocess.run([str(ROOT / "submit.sh"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for job in ("generate", "ingest", "clean", "interactions", "explain", "evaluate", "pipeline"):
        assert f"  {job} " in helped.stdout
    unknown = submit("nosuchjob")
    assert unknown.returncode == 2 and "unknown job 'nosuchjob'" in unknown.output
    bad_conf = submit("ingest", "--set", "synthetic.users=lots")
    assert bad_conf.returncode == 2
    assert bad_conf.output.strip().splitlines()[-1] == \
        "config error: config key 'synthetic.users' must be an integer, got 'lots'"
    # a job with nothing to read fails with one line naming the missing table
    empty = submit("interactions", "--set", f"storage.root={tmp_path}", "--set", "spark.master=local[1]")
    assert empty.returncode == 1
    last = empty.output.strip().splitlines()[-1]
    assert last.startswith("llmrec interactions failed: FileNotFoundError: table silver.events not found")
