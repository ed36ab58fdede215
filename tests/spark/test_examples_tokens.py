"""Training examples (history texts, targets, negatives), tokenized shards and readers,
on a small hand-made shop whose right answers are known."""
import collections
import datetime as dt
import json
import os
import shutil

import numpy as np
import pytest

from helpers import make_config, write_silver
from llmrec import tables
from llmrec.conf import ExamplesConf
from llmrec.features import examples, interactions, tokens
from llmrec.tables.schemas import EXAMPLES, ITEM_INDEX, USER_INDEX
from llmrec.train.model import load_tokenizer
from llmrec.train.readers import ShardError, check_files, open_reader, rank_rows

T0 = dt.datetime(2024, 3, 31, 12, 0)
DAY = dt.date(2024, 3, 1)
CATS = {**{i: "Shoes" for i in "ABCDEF"}, **{i: "Books" for i in "GHIJ"}, **{i: "Garden" for i in "KL"}}


def ago(days):
    return T0 - dt.timedelta(days=days)


EVENTS = [  # (user, item, type, time): first touch order gives the split (leave_last 1/1)
    ("alice", "A", "view", ago(50)), ("alice", "B", "purchase", ago(40)), ("alice", "C", "cart", ago(30)),
    ("alice", "D", "view", ago(20)), ("alice", "E", "purchase", ago(10)),
    ("bob", "A", "view", ago(45)), ("bob", "F", "purchase", ago(35)), ("bob", "G", "view", ago(5)),
    ("carol", "B", "view", ago(44)), ("carol", "C", "view", ago(33)), ("carol", "D", "view", ago(3)),
]
REVIEWS = [("carol", "B", 1, ago(43))]  # a 1-star review: carol's B is not a positive


def write_shop(spark, cfg):
    items = [(i, f"Title {i}", f"About {i}, a fine thing in every way.", c, f"Brand{i}", 10.0 * (k + 1),
              ago(90)) for k, (i, c) in enumerate(sorted(CATS.items()))]
    write_silver(spark, cfg, EVENTS, REVIEWS, items, DAY)
    interactions.build(spark, cfg)


def ids(spark, cfg):
    users = {r.user_idx: r.user_id for r in tables.read(spark, cfg, USER_INDEX).collect()}
    items = {r.item_idx: r.item_id for r in tables.read(spark, cfg, ITEM_INDEX).collect()}
    return users, items


def rows_of(spark, cfg):
    users, items = ids(spark, cfg)
    return [dict(r.asDict(), user=users[r.user_idx], item=items[r.item_idx], target=items[r.target_idx])
            for r in tables.read(spark, cfg, EXAMPLES).collect()]


SETTINGS = ("examples.targets_per_user=2", "examples.neg_ratio=2", "examples.history_len=10",
            "examples.user_sample=1.0", "tokenize.max_length=48", "tokenize.row_group_rows=4",
            "tokenize.rows_per_file=8", "interactions.half_life_days=0")


@pytest.fixture(scope="module")
def shop(spark, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("examples"), "examples.negatives=popularity", *SETTINGS)
    write_shop(spark, cfg)
    examples.build(spark, cfg)
    return cfg, rows_of(spark, cfg)


def test_targets_follow_the_split_and_the_positive_rule(shop):
    _, rows = shop
    targets = {(r["split"], r["user"], r["item"]) for r in rows if r["label"] == 1}
    assert targets == {
        ("train", "alice", "C"), ("train", "alice", "B"),  # last 2 positive train items with history
        ("val", "alice", "D"), ("val", "bob", "F"), ("val", "carol", "C"),
        ("test", "alice", "E"), ("test", "bob", "G"), ("test", "carol", "D"),
    }
    assert all(r["kind"] == "positive" for r in rows if r["label"] == 1)


def test_history_is_what_came_before_newest_first_with_actions(shop):
    _, rows = shop
    text = {(r["split"], r["user"], r["target"]): r["user_text"] for r in rows}
    assert text[("train", "alice", "C")] == \
        "Recent activity: bought Title B (Shoes); viewed Title A (Shoes)"
    assert text[("train", "alice", "B")] == "Recent activity: viewed Title A (Shoes)"
    # val sees the train items; test also sees val's
    assert text[("val", "alice", "D")] == ("Recent activity: added to cart Title C (Shoes); "
                                           "bought Title B (Shoes); viewed Title A (Shoes)")
    assert text[("test", "alice", "E")].startswith("Recent activity: viewed Title D (Shoes); added to cart")
    assert text[("test", "bob", "G")] == ("Recent activity: bought Title F (Shoes); "
                                          "viewed Title A (Shoes)")


def test_item_text_names_title_category_brand_and_price_band(spark, shop):
    cfg, rows = shop
    _, items = ids(spark, cfg)
    text = {items[r.item_idx]: r.item_text for r in examples.item_texts(spark, cfg).collect()}
    assert text["A"] == "Title A. Category: Shoes. Brand: BrandA. Price: budget. About A, a fine thing in every way."
    assert "Price: luxury" in text["L"] and "Price: mid-range" in text["E"]
    assert all(r["item_text"] == text[r["item"]] for r in rows)


def test_negatives_are_unseen_items_and_fill_the_ratio(shop):
    _, rows = shop
    seen = collections.defaultdict(set)
    for u, i, _, _ in EVENTS:
        seen[u].add(i)
    per_target = collections.Counter()
    for r in rows:
        if r["label"] == 0:
            assert r["item"] not in seen[r["user"]], r
            assert r["kind"] in ("popularity", "uniform")
            per_target[(r["split"], r["user"], r["target"])] += 1
    assert set(per_target.values()) == {2} and len(per_target) == 8


def test_hard_negatives_share_the_targets_category(spark, tmp_path):
    cfg = make_config(tmp_path, "examples.negatives=hard", *SETTINGS)
    write_shop(spark, cfg)
    examples.build(spark, cfg)
    rows = rows_of(spark, cfg)
    hard = [r for r in rows if r["kind"] == "hard"]
    assert hard and all(CATS[r["item"]] == CATS[r["target"]] for r in hard)
    # alice has seen A-E: F is the only unseen shoe, the second negative falls back to uniform
    alice_c = sorted((r["item"], r["kind"]) for r in rows if r["target"] == "C" and r["user"] == "alice"
                     and r["label"] == 0)
    assert alice_c[0] == ("F", "hard") and alice_c[1][1] == "uniform"


def test_examples_are_deterministic(spark, shop):
    cfg, rows = shop
    examples.build(spark, cfg)
    key = lambda r: (r["split"], r["user"], r["target"], r["item"], r["kind"], r["user_text"])  # noqa: E731
    assert sorted(map(key, rows_of(spark, cfg))) == sorted(map(key, rows))
    assert tables.read(spark, cfg, EXAMPLES).count() == len(rows)  # rebuilt, not appended


def test_samplers_draw_by_their_rule():
    items = np.arange(100, dtype=np.int64)
    popularity = np.zeros(100)
    popularity[7] = 10_000
    cats = np.repeat(np.arange(10), 10)
    conf = ExamplesConf(negatives={"popularity": 1.0}, neg_ratio=1, seed=3)
    sampler = examples.NegativeSampler(items, popularity, cats, conf)
    drawn = collections.Counter(sampler.sample(u, 0, 0, set())[0][0] for u in range(300))
    assert drawn[7] > 200  # ~ (10001 ** .75) / (that + 99) of the draws
    conf = ExamplesConf(negatives={"uniform": 1.0}, neg_ratio=5, seed=3)
    uniform = examples.NegativeSampler(items, popularity, cats, conf)
    got = uniform.sample(1, 2, 0, seen={0, 1, 2})
    assert len({i for i, _ in got}) == 5 and not {i for i, _ in got} & {0, 1, 2}
    assert got == uniform.sample(1, 2, 0, seen={0, 1, 2})  # a hash of (seed, user, target)
    assert got != uniform.sample(2, 2, 0, seen={0, 1, 2})


# --- tokenize ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(spark, shop):
    cfg, _ = shop
    manifest = tokens.build(spark, cfg)
    return cfg, manifest, os.path.dirname(tokens.manifest_path(cfg))


def direct(cfg, rows):
    tok = load_tokenizer(cfg.model.name_or_path)
    enc = tok([r["user_text"] for r in rows], [r["item_text"] for r in rows], max_length=48,
              truncation="only_first", padding="max_length")
    return enc


def shard_rows(base, manifest, split, kind="pyarrow", rank=0, size=1):
    reader = open_reader(kind, base, manifest, split, rank=rank, size=size, batch_size=5)
    out = []
    for b in reader:
        for k in range(len(b["label"])):
            out.append((int(b["user_idx"][k]), int(b["item_idx"][k]), int(b["label"][k]),
                        tuple(b["input_ids"][k].tolist()), tuple(b["token_type_ids"][k].tolist()),
                        tuple(b["attention_mask"][k].tolist())))
    assert reader.rows_read == reader.expected
    return out


def test_shards_hold_exactly_what_the_tokenizer_gives(shards, shop):
    cfg, manifest, base = shards
    _, rows = shop
    for split in ("train", "val", "test"):
        mine = [r for r in rows if r["split"] == split]
        enc = direct(cfg, mine)
        want = sorted((r["user_idx"], r["item_idx"], r["label"], tuple(enc["input_ids"][k]),
                       tuple(enc["token_type_ids"][k]), tuple(enc["attention_mask"][k]))
                      for k, r in enumerate(mine))
        assert sorted(shard_rows(base, manifest, split)) == want
        assert manifest["splits"][split]["rows"] == len(mine)
        assert manifest["splits"][split]["positives"] == sum(r["label"] for r in mine)
        for f in manifest["splits"][split]["files"]:
            assert sum(f["row_groups"]) == f["rows"] <= 8
            assert all(n == 4 for n in f["row_groups"][:-1])
    assert manifest["max_length"] == 48 and manifest["tokenizer"]["vocab_size"] == 30522
    assert len(manifest["tokenizer"]["vocab_sha256"]) == 64


def test_tokenize_udf_equals_the_tokenizer(spark, shards, shop):
    cfg, _, _ = shards
    _, rows = shop
    mine = sorted(rows, key=lambda r: (r["split"], r["user_idx"], r["target_idx"], r["item_idx"]))[:12]
    df = spark.createDataFrame([(r["user_text"], r["item_text"]) for r in mine], "u string, i string")
    udf = tokens.tokenize_udf("tiny", 48, "only_first")
    got = [r.t for r in df.select(udf("u", "i").alias("t")).collect()]
    enc = direct(cfg, mine)
    assert [list(g.input_ids) for g in got] == [list(x) for x in enc["input_ids"]]
    assert [list(g.token_type_ids) for g in got] == [list(x) for x in enc["token_type_ids"]]


def test_rerun_with_the_same_inputs_keeps_the_shards(spark, shards):
    cfg, manifest, base = shards
    files = sorted(os.listdir(os.path.join(base, manifest["build"], "train")))
    examples.build(spark, cfg)  # a new table version with the same rows
    again = tokens.build(spark, cfg)
    assert again["build"] == manifest["build"] and again["created_at"] == manifest["created_at"]
    assert sorted(os.listdir(os.path.join(base, manifest["build"], "train"))) == files


@pytest.mark.parametrize("kind", ["pyarrow", "petastorm"])
@pytest.mark.parametrize("size", [2, 3])
def test_readers_split_ranks_disjointly_and_cover_every_row(shards, kind, size):
    _, manifest, base = shards
    for split in ("train", "val"):  # train: 2 row groups, so with 3 ranks one reads nothing
        whole = sorted(shard_rows(base, manifest, split))
        parts = [shard_rows(base, manifest, split, kind, rank, size) for rank in range(size)]
        assert [len(p) for p in parts] == [rank_rows(manifest, split, r, size) for r in range(size)]
        assert sorted(sum(parts, [])) == whole  # each row exactly once across ranks
        assert all(parts) == (split == "val" or size == 2)


@pytest.mark.parametrize("kind", ["pyarrow", "petastorm"])
def test_missing_or_corrupt_shard_is_named(shards, tmp_path, kind):
    _, manifest, base = shards
    copy = tmp_path / "shards"
    shutil.copytree(base, copy)
    files = manifest["splits"]["train"]["files"]
    gone = copy / files[0]["path"]
    os.remove(gone)
    with pytest.raises(ShardError, match=f"shard file missing: {gone}"):
        open_reader(kind, str(copy), manifest, "train", rank=0, size=1)
    shutil.copytree(base, copy, dirs_exist_ok=True)
    bad = copy / files[-1]["path"]
    bad.write_bytes(bad.read_bytes()[:-40])  # footer cut off
    with pytest.raises(ShardError, match=f"unreadable: {bad}"):
        open_reader(kind, str(copy), manifest, "train", rank=0, size=1)
    with pytest.raises(ShardError, match=str(bad)):
        check_files(str(copy), manifest, "train")


def test_reader_fails_loudly_when_rows_go_missing(shards):
    _, manifest, base = shards
    lying = json.loads(json.dumps(manifest))
    lying["splits"]["val"]["files"][0]["row_groups"][0] += 1  # manifest promises one more row
    lying["splits"]["val"]["files"][0]["rows"] += 1
    reader = open_reader("pyarrow", base, manifest, "val")
    reader.manifest, reader.expected = lying, reader.expected + 1
    with pytest.raises(ShardError, match="read .* rows of split val, the manifest says"):
        list(reader)
