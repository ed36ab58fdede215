"""Inference at scale on real Spark, Delta and (tiny or bundled) BERT models: the UDFs
against plain PyTorch, one model load per worker, the incremental and resumable
backfill, exact top-K, candidates, ranking, cold start and search."""
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import time
from argparse import Namespace

import numpy as np
import pytest
from pyspark.sql import functions as F

from helpers import PINNED, ROOT, SHOP, fresh, make_config, tiny
from llmrec import stages, tables
from llmrec.ranker import cuts
from llmrec.infer import backfill, candidates, engine, rank, search
from llmrec.infer.api import Recommender
from llmrec.infer.topk import topk
from llmrec.tables.schemas import (
    CANDIDATES, ITEM_EMBEDDINGS, ITEM_INDEX, POPULAR_ITEMS, RECOMMENDATIONS, SEARCH_RESULTS,
    SILVER_ITEMS, USER_EMBEDDINGS, USER_INDEX,
)

def test_udfs_equal_plain_pytorch(spark, tiny_dir, tmp_path):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    texts = ["", "a", "Trail running shoes, waterproof", "word " * 60,
             *[f"Item {i}: {'long ' * (i % 7)}description" for i in range(40)]]
    cfg = make_config(tmp_path, f"embed.model={tiny_dir}", "embed.max_length=32", "infer.batch_size=4")
    ref = engine.embed_ref(cfg)
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, t string").repartition(3)
    got = {r.i: np.array(r.v) for r in df.select("i", engine.embed_udf(ref)("t").alias("v")).collect()}

    tok, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModel.from_pretrained(tiny_dir).eval()
    enc = tok(texts, max_length=32, truncation=True, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert len(got) == len(texts)
    for i in range(len(texts)):
        np.testing.assert_allclose(got[i], want[i], atol=2e-5)

    sref = engine.score_ref(cfg, tiny_dir, 48, "only_first")
    # the item text (second) fits in 48 tokens except in row 3, which must fall back to
    # longest_first instead of failing the batch
    pairs = [(i, f"Recent activity: {'viewed thing; ' * (i % 9)}", t) for i, t in enumerate(texts)]
    pdf = spark.createDataFrame(pairs, "i long, a string, b string").repartition(2)
    scores = {r.i: r.s for r in pdf.select("i", engine.score_udf(sref)("a", "b").alias("s")).collect()}
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_dir).eval()
    fits = [p for p in pairs if p[0] != 3]
    enc = tok([p[1] for p in fits], [p[2] for p in fits], max_length=48, truncation="only_first",
              padding="max_length", return_tensors="pt")
    long_row = tok(pairs[3][1], pairs[3][2], max_length=48, truncation="longest_first",
                   padding="max_length", return_tensors="pt")
    with torch.no_grad():
        want = dict(zip([p[0] for p in fits], clf(**enc).logits[:, 0].tolist()))
        want[3] = clf(**long_row).logits[0, 0].item()
    np.testing.assert_allclose([scores[i] for i in range(len(pairs))], [want[i] for i in range(len(pairs))],
                               atol=2e-5)


def test_model_loaded_once_per_worker(spark, tiny_dir, tmp_path):
    log_file = tmp_path / "loads.log"
    cfg = make_config(tmp_path, f"embed.model={tiny_dir}", "embed.max_length=24")
    ref = engine.embed_ref(cfg, load_log=str(log_file))
    df = spark.range(600).select(F.concat(F.lit("text "), F.col("id").cast("string")).alias("t")).repartition(12)
    dims = df.select(F.size(engine.embed_udf(ref)("t")).alias("d")).groupBy("d").count().collect()
    assert [(r.d, r["count"]) for r in dims] == [(32, 600)]
    pids = [line.split()[0] for line in log_file.read_text().splitlines()]
    assert pids, "the UDF never loaded the model"
    assert len(pids) == len(set(pids)), f"a worker loaded the model twice: {pids}"
    assert len(pids) < 12  # 12 partitions, far fewer loads: workers reuse the model


@pytest.mark.parametrize("n_queries", [70, 10])  # 5 query blocks; 1 (the corpus spread over partitions)
def test_topk_exact_blockwise_matches_numpy(spark, n_queries):
    rng = np.random.default_rng(3)
    q = rng.normal(size=(70, 8)).astype(np.float32)
    c = rng.normal(size=(90, 8)).astype(np.float32)
    c[10] = c[20] = c[30]  # exact ties: the smaller id must come first
    c_ids = np.arange(1000, 1090)
    exclude = {int(i): [int(c_ids[(i * 7) % 90]), int(c_ids[(i * 11) % 90])] for i in range(0, 70, 3)}
    queries = spark.createDataFrame([(int(i), q[i].tolist(), exclude.get(i)) for i in range(n_queries)],
                                    "qid long, vector array<float>, seen array<long>")
    corpus = spark.createDataFrame([(int(c_ids[j]), c[j].tolist()) for j in range(90)],
                                   "cid long, vector array<float>")
    got = {}
    for r in topk(queries, corpus, 7, block_rows=16, exclude="seen").orderBy("qid", "rank").collect():
        got.setdefault(r.qid, []).append((r.cid, r.rank))
    assert sorted(got) == list(range(n_queries))
    for i in range(n_queries):  # plain numpy: full sort by (-score, id)
        s = c @ q[i]
        order = sorted((j for j in range(90) if int(c_ids[j]) not in exclude.get(i, [])),
                       key=lambda j: (-s[j], c_ids[j]))[:7]
        assert [cid for cid, _ in got[i]] == [int(c_ids[j]) for j in order], i
        assert [rank for _, rank in got[i]] == list(range(1, 8))


def test_topk_faiss_option_recall(spark):
    rng = np.random.default_rng(5)
    q = rng.normal(size=(60, 16)).astype(np.float32)
    c = rng.normal(size=(300, 16)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    seen = {i: [int(j) for j in np.argsort(-(c @ q[i]))[:3]] for i in range(60)}  # drop the 3 best
    queries = spark.createDataFrame([(i, q[i].tolist(), seen[i]) for i in range(60)],
                                    "qid long, vector array<float>, seen array<long>")
    corpus = spark.createDataFrame([(j, c[j].tolist()) for j in range(300)], "cid long, vector array<float>")
    got = {}
    for r in topk(queries, corpus, 10, block_rows=20, exclude="seen", index="faiss", graph_rows=100).collect():
        got.setdefault(r.qid, set()).add(r.cid)
    hits = 0
    for i in range(60):
        exact = [j for j in np.argsort(-(c @ q[i])) if j not in seen[i]][:10]
        assert not got[i] & set(seen[i]) and len(got[i]) == 10
        hits += len(got[i] & set(exact))
    assert hits / 600 >= 0.95  # approximate, but close


def test_backfill_incremental_and_idempotent(spark, shop, tiny_dir, tmp_path):
    cfg = fresh(shop, tmp_path, *tiny(tiny_dir))
    items = lambda: backfill.backfill(spark, cfg, ITEM_EMBEDDINGS, backfill.item_texts(spark, cfg))  # noqa: E731
    first = items()
    n_items = tables.read(spark, cfg, ITEM_INDEX).count()
    assert first["embedded"] == n_items == 40 and first["chunks"] == 1
    emb = tables.read(spark, cfg, ITEM_EMBEDDINGS)
    assert emb.count() == n_items and emb.select("item_idx").distinct().count() == n_items
    assert {len(r.vector) for r in emb.select("vector").collect()} == {32}
    version = tables.version(spark, cfg, ITEM_EMBEDDINGS)

    again = items()  # nothing changed: nothing embedded, no commit
    assert again["embedded"] == 0 and again["up_to_date"] == 40
    assert tables.version(spark, cfg, ITEM_EMBEDDINGS) == version

    # one title changes, one item is new: exactly those two are embedded
    catalog = tables.read(spark, cfg, SILVER_ITEMS)
    changed_id = catalog.orderBy("item_id").first().item_id
    new = catalog.where(F.col("item_id") == changed_id).withColumn("item_id", F.lit("NEW0001")) \
        .withColumn("price", F.lit(None).cast("double"))
    edited = catalog.withColumn("title", F.when(F.col("item_id") == changed_id, F.lit("A renamed thing"))
                              .otherwise(F.col("title")))
    tables.overwrite(edited.unionByName(new), cfg, SILVER_ITEMS)
    stages.interactions(spark, cfg, Namespace())  # indexes the new item
    before = {r.item_idx: r.updated_at for r in tables.read(spark, cfg, ITEM_EMBEDDINGS).collect()}
    assert items()["embedded"] == 2
    after = tables.read(spark, cfg, ITEM_EMBEDDINGS).collect()
    redone = {r.item_idx for r in after if before.get(r.item_idx) != r.updated_at}
    index = {r.item_id: r.item_idx for r in tables.read(spark, cfg, ITEM_INDEX).collect()}
    assert redone == {index[changed_id], index["NEW0001"]}
    assert len(after) == 41
    assert [r.text for r in after if r.item_idx == index[changed_id]][0].startswith("A renamed thing")
    # another model (here: another max length) makes every stored vector stale
    cfg = make_config(cfg.storage.root, *SHOP, *tiny(tiny_dir), "embed.max_length=24")
    assert items()["embedded"] == 41


def test_backfill_resumes_after_kill(spark, shop, tiny_dir, tmp_path):
    cfg = fresh(shop, tmp_path, *tiny(tiny_dir), "embed.chunk_rows=5")
    sets = [x for s in (*PINNED, *SHOP, *tiny(tiny_dir), "embed.chunk_rows=5", f"storage.root={cfg.storage.root}",
                        "spark.master=local[2]") for x in ("--set", s)]
    proc = subprocess.Popen([str(ROOT / "submit.sh"), "embed", *sets], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # kill right after the third chunk's commit
        seen.append(line)
        if "gold.item_embeddings: chunk 3/" in line or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(30)
    done = [re.search(r"chunk \d+/8: (\d+) rows", line) for line in seen]
    done = [int(m.group(1)) for m in done if m]
    assert len(done) == 3, "".join(seen[-20:])
    committed = tables.read(spark, cfg, ITEM_EMBEDDINGS).count()
    assert committed == sum(done) < 40  # the finished chunks, not the whole catalog

    # the rest in one chunk here (each chunk is a MERGE: seconds)
    cfg = make_config(cfg.storage.root, *SHOP, *tiny(tiny_dir), "embed.chunk_rows=40")
    resumed = backfill.backfill(spark, cfg, ITEM_EMBEDDINGS, backfill.item_texts(spark, cfg))
    assert resumed["up_to_date"] == committed  # finished chunks are not redone
    assert resumed["embedded"] == 40 - committed
    emb = tables.read(spark, cfg, ITEM_EMBEDDINGS)
    assert emb.count() == 40 and emb.select("item_idx").distinct().count() == 40


def test_candidates_merge_sources_without_history_items(spark, served):
    cfg = served
    cands = candidates.serving(spark, cfg)
    hist = candidates.history(spark, cfg)
    assert cands.groupBy("user_idx", "item_idx").count().where("count > 1").count() == 0
    assert cands.join(hist, ["user_idx", "item_idx"]).count() == 0  # nothing the user already has
    per_user = [r["count"] for r in cands.groupBy("user_idx").count().collect()]
    assert max(per_user) <= 25 and len(per_user) == tables.read(spark, cfg, USER_INDEX).count()
    proposed = {r.s for r in cands.select(F.explode(F.map_keys("source_ranks")).alias("s")).distinct().collect()}
    assert proposed == {"als", "cooc", "content", "profile", "popular"}
    # the fused score is the reciprocal-rank sum of the ranks kept in source_ranks
    w = cfg.candidates.weights
    for r in cands.limit(50).collect():
        assert r.score == pytest.approx(sum(w[s] / (60 + k) for s, k in r.source_ranks.items()))
        assert r.source_ranks[r.source] == min(r.source_ranks.values())
        assert set(r.source_scores) == set(r.source_ranks)
    # as of validation: the users with a validation pair, from train alone, so their
    # validation items are still candidates (and their train items are not)
    val = tables.read(spark, cfg, CANDIDATES).where("cut = 'val'")
    labelled = {r.user_idx for r in cuts.labelled_users(spark, cfg, cuts.val(cfg)).collect()}
    assert {r.user_idx for r in val.select("user_idx").distinct().collect()} == labelled
    assert val.join(cuts.history(spark, cfg, cuts.val(cfg)), ["user_idx", "item_idx"]).count() == 0
    assert val.join(cuts.relevant(spark, cfg, "val"), ["user_idx", "item_idx"]).count() > 0
    pop = tables.read(spark, cfg, POPULAR_ITEMS)
    assert "*" in {r.segment for r in pop.select("segment").distinct().collect()}


def test_recommendations_topk_deterministic(spark, served):
    cfg = served
    recs = tables.read(spark, cfg, RECOMMENDATIONS)
    rows = recs.orderBy("user_idx", "rank").collect()
    by_user = {}
    for r in rows:
        by_user.setdefault(r.user_idx, []).append(r)
    assert len(by_user) > 100
    for rs in by_user.values():
        assert [r.rank for r in rs] == list(range(1, len(rs) + 1)) and len(rs) <= 5
        assert all(a.score >= b.score for a, b in zip(rs, rs[1:]))
        assert all(0 < r.ce_score < 1 and 0 < r.cand_score <= 1 for r in rs)
        assert all(r.score == pytest.approx(0.7 * r.ce_score + 0.3 * r.cand_score) for r in rs)
    assert recs.join(candidates.history(spark, cfg), ["user_idx", "item_idx"]).count() == 0
    rank.recommend(spark, cfg)  # rerun: the same table, no duplicates
    again = tables.read(spark, cfg, RECOMMENDATIONS).orderBy("user_idx", "rank").collect()
    key = lambda r: (r.user_idx, r.rank, r.item_idx, round(r.score, 6))  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in rows]


def test_new_items_reach_users(spark, served, tmp_path):
    """Items nobody has touched yet, whose text is like items users liked, are proposed
    by the content neighbours and recommended."""
    root = tmp_path / "root"
    shutil.copytree(served.storage.root, root)
    cfg = make_config(root, *SHOP, f"embed.model={served.embed.model}",
                      f"recommend.cross_encoder={served.recommend.cross_encoder}", "embed.max_length=32")
    popular = tables.read(spark, cfg, POPULAR_ITEMS).where("segment = '*'").orderBy("rank").limit(3) \
        .join(tables.read(spark, cfg, ITEM_INDEX), "item_idx").select("item_id").collect()
    items = tables.read(spark, cfg, SILVER_ITEMS)
    copies = items.where(F.col("item_id").isin([r.item_id for r in popular])) \
        .withColumn("item_id", F.concat(F.lit("NEW-"), F.col("item_id"))) \
        .withColumn("launch_ts", F.lit(dt.datetime(2030, 1, 1)))
    old_texts = {r.item_idx: r.text for r in backfill.item_texts(spark, cfg).collect()}
    tables.overwrite(items.unionByName(copies), cfg, SILVER_ITEMS)
    stages.interactions(spark, cfg, Namespace())
    # only the new items, and old items whose text changed (the catalog's price quartiles move)
    changed = sum(old_texts[r.item_idx] != r.text for r in backfill.item_texts(spark, cfg).collect()
                  if r.item_idx in old_texts)
    assert backfill.run(spark, cfg)["items"]["embedded"] == 3 + changed
    candidates.build(spark, cfg)
    rank.recommend(spark, cfg)
    recs = tables.read(spark, cfg, RECOMMENDATIONS).where(F.col("item_id").startswith("NEW-")).collect()
    assert recs, "no new item was recommended"
    # only the embedding-based sources know items without interactions
    assert all(set(r.sources) <= {"content", "profile"} for r in recs)
    assert any("content" in r.sources for r in recs)
    assert len({r.user_idx for r in recs}) >= 5


def test_search_job_and_api(spark, served, tmp_path):
    """Search with the bundled MiniLM (real semantics): the batch job and the notebook API
    agree, a query finds its category, reruns replace the batch, cold start works."""
    root = tmp_path / "root"
    shutil.copytree(served.storage.root, root)
    cfg = make_config(root, *SHOP, "embed.model=default", "embed.max_length=64",
                      f"recommend.cross_encoder={served.recommend.cross_encoder}")
    backfill.backfill(spark, cfg, ITEM_EMBEDDINGS, backfill.item_texts(spark, cfg))
    backfill.backfill(spark, cfg, USER_EMBEDDINGS, backfill.user_texts(spark, cfg))
    user = tables.read(spark, cfg, USER_EMBEDDINGS).orderBy("user_idx").first().user_id
    queries = [{"query_id": "pan", "query": "cast iron skillet for searing steaks", "user_id": None},
               {"query_id": "run", "query": "trail running shoes", "user_id": user},
               {"query_id": "nobody", "query": "headphones", "user_id": "no-such-user"}]
    out = search.search(spark, cfg, queries, "t1")
    assert out["queries"] == 3
    res = tables.read(spark, cfg, SEARCH_RESULTS).where("batch = 't1'")
    assert res.count() == 15
    texts = {r.item_idx: r.text for r in tables.read(spark, cfg, ITEM_EMBEDDINGS).collect()}
    top = {r.query_id: r for r in res.where("rank = 1").collect()}
    assert "Cookware" in texts[top["pan"].item_idx]
    assert "Running" in texts[top["run"].item_idx]
    search.search(spark, cfg, queries, "t1")  # rerun: replaced, not appended
    assert tables.read(spark, cfg, SEARCH_RESULTS).count() == 15

    rec = Recommender.load(cfg, spark)
    hits = rec.search("cast iron skillet for searing steaks", k=5)
    stored = res.where("query_id = 'pan'").orderBy("rank").collect()
    assert hits["item_id"].tolist() == [r.item_id for r in stored]
    np.testing.assert_allclose(hits["score"], [r.score for r in stored], atol=1e-4)
    similar = rec.similar_items(top["pan"].item_id, k=3)
    assert top["pan"].item_id not in similar["item_id"].tolist() and len(similar) == 3
    cold = rec.for_new_user(segment="Kitchen", k=4)
    pop = tables.read(spark, cfg, POPULAR_ITEMS).where("segment = 'Kitchen'").orderBy("rank").limit(4) \
        .join(tables.read(spark, cfg, ITEM_INDEX), "item_idx").orderBy("rank").collect()
    assert cold["item_id"].tolist() == [r.item_id for r in pop] and len(pop) == 4
    assert rec.for_new_user(segment="no such segment", k=3)["segment"].tolist() == ["*"] * 3
    intent = rec.for_new_user(intent="noise cancelling headphones", k=3)
    assert any("Headphones" in t for t in intent["title"])
