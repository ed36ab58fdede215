"""The explain job on the served synthetic shop (real Spark, Delta and the tiny
cross-encoder): history items against a numpy recomputation, token attributions against
plain PyTorch, integrated gradients' completeness, reruns, and `explain --user`."""
import re
import shutil
from argparse import Namespace

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from helpers import SHOP, job_args, make_config, tiny
from llmrec import cli, tables
from llmrec.evaluate import explain
from llmrec.features import examples as ex
from llmrec.infer import backfill, candidates, rank
from llmrec.tables.schemas import ITEM_EMBEDDINGS, ITEM_INDEX, RECOMMENDATIONS, SILVER_ITEMS

TOP_TOKENS = 5


def table_rows(spark, cfg) -> dict:
    return {(r.user_idx, r.rank): r.asDict(recursive=True)
            for r in tables.read(spark, cfg, RECOMMENDATIONS).collect()}


@pytest.fixture(scope="module")
def explained(spark, served, tiny_dir, tmp_path_factory):
    """A copy of the served shop, explained once with tokens for each user's best item."""
    root = tmp_path_factory.mktemp("explain") / "root"
    shutil.copytree(served.storage.root, root)
    cfg = make_config(root, *SHOP, *tiny(tiny_dir), "explain.token_ranks=1")
    version = tables.version(spark, cfg, RECOMMENDATIONS)
    result = explain.run(spark, cfg)
    return Namespace(cfg=cfg, result=result, version=version, rows=table_rows(spark, cfg))


@pytest.fixture(scope="module")
def pairs(spark, explained):
    """The (user text, item text) of three attributed recommendations, as recommend scored them."""
    cfg = explained.cfg
    keys = sorted(k for k, r in explained.rows.items() if r["tokens"])[:3]
    users = {r.user_idx: r.text for r in backfill.user_texts(spark, cfg)
             .where(F.col("user_idx").isin([u for u, _ in keys])).collect()}
    items = {r.item_idx: r.text for r in backfill.item_texts(spark, cfg)
             .where(F.col("item_idx").isin([explained.rows[k]["item_idx"] for k in keys])).collect()}
    return [(k, users.get(k[0], ex.NO_HISTORY), items[explained.rows[k]["item_idx"]]) for k in keys]


def torch_words(model, tok, first, second, max_length, truncation):
    """(side, word, gradient x input) with plain PyTorch: pieces merged, [CLS]/[SEP] dropped."""
    enc = tok(first, second, max_length=max_length, truncation=truncation, return_tensors="pt")
    x = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
    model(inputs_embeds=x, attention_mask=enc["attention_mask"],
          token_type_ids=enc["token_type_ids"]).logits[0, 0].backward()
    values = (x.grad * x).sum(-1)[0].tolist()
    out = []
    for piece, side, value in zip(tok.convert_ids_to_tokens(enc["input_ids"][0]),
                                  enc["token_type_ids"][0].tolist(), values):
        if piece in (tok.cls_token, tok.sep_token):
            continue
        if piece.startswith("##"):
            out[-1] = (out[-1][0], out[-1][1] + piece[2:], out[-1][2] + value)
        else:
            out.append(("user" if side == 0 else "item", piece, value))
    return out


def expected_reason(row: dict, items: dict, history: dict) -> str:
    """The reason by its rules: the top two history items, then brand, else top-level
    category shared with the history, else the item word with the highest attribution."""
    did = lambda h: (f"added {h['title']} to your cart" if h["action"] == "added to cart"  # noqa: E731
                     else f"{h['action']} {h['title']}")
    top = row["top_history"]
    text = "Because you " + " and ".join(did(h) for h in top[:2]) if top else \
        f"Popular with shoppers like you (source: {row['source']})"
    segment = lambda i: items[i].category.split(">")[0].strip()  # noqa: E731
    item_words = [t for t in row["tokens"] or [] if t["side"] == "item" and t["attribution"] > 0]
    if items[row["item_idx"]].brand in {items[h].brand for h in history}:
        text += f"; matches brand {items[row['item_idx']].brand}"
    elif segment(row["item_idx"]) in {segment(h) for h in history}:
        text += f"; matches category {segment(row['item_idx'])}"
    elif item_words:
        text += f'; matches "{max(item_words, key=lambda t: t["attribution"])["token"]}"'
    return text + "."


def test_history_items_come_from_the_users_history(spark, explained):
    cfg, rows = explained.cfg, explained.rows
    hist = {}
    for r in candidates.history(spark, cfg).where("weight > 0").collect():
        hist.setdefault(r.user_idx, {})[r.item_idx] = r.purchased
    vectors = {r.item_idx: np.asarray(r.vector, dtype=np.float64)
               for r in tables.read(spark, cfg, ITEM_EMBEDDINGS).collect()}
    items = {r.item_idx: r for r in tables.read(spark, cfg, SILVER_ITEMS).join(
        tables.read(spark, cfg, ITEM_INDEX), "item_id").collect()}

    assert len(rows) == tables.read(spark, cfg, RECOMMENDATIONS).select("user_idx", "rank").distinct().count()
    assert explained.result["rows"] == len(rows) == 600 and explained.result["users"] == 120
    # one MERGE commit; tokens exactly on each user's best recommendation (token_ranks=1)
    assert tables.version(spark, cfg, RECOMMENDATIONS) == explained.version + 1
    assert {k for k, r in rows.items() if r["tokens"] is not None} == {k for k in rows if k[1] == 1}
    assert explained.result["with_tokens"] == 120 and explained.result["method"] == "grad_input"

    explained_some = 0
    for (user, _), r in rows.items():
        top, rec = r["top_history"], r["item_idx"]
        sims = {h: float(vectors[rec] @ vectors[h]) for h in hist.get(user, {}) if h != rec and h in vectors}
        want = sorted(sims, key=lambda h: (-sims[h], h))[:3]
        assert [h["item_idx"] for h in top] == want, (user, rec)
        assert [h["similarity"] for h in top] == pytest.approx([sims[h] for h in want], abs=1e-9)
        assert all(a["similarity"] >= b["similarity"] for a, b in zip(top, top[1:]))
        for h in top:
            assert h["title"] == items[h["item_idx"]].title and h["item_id"] == items[h["item_idx"]].item_id
            assert h["action"] == "bought" if hist[user][h["item_idx"]] else h["action"] in (
                "viewed", "added to cart", "reviewed")
        if top:
            explained_some += 1
            assert r["reason"].startswith("Because you ") and top[0]["title"] in r["reason"]
        assert r["reason"] == expected_reason(r, items, hist.get(user, {}))
    assert explained_some > 500
    clauses = [re.search(r"; matches (brand|category|\")", r["reason"]) for r in rows.values()]
    assert {m.group(1) for m in clauses if m} == {"brand", "category", '"'}  # every kind occurs


def test_no_history_or_no_embedding_gives_an_empty_explanation(spark, explained):
    cfg = explained.cfg
    item = explained.rows[min(explained.rows)]["item_idx"]
    user = min(explained.rows)[0]
    recs = spark.createDataFrame([(10**9, 1, item, "popular"), (user, 1, 10**9, "als")],
                                 "user_idx long, rank int, item_idx long, source string")
    got = {r.user_idx: r for r in explain.explain(spark, cfg, recs, token_ranks=0).collect()}
    assert got[10**9].top_history == [] and got[user].top_history == []
    assert got[10**9].reason == "Popular with shoppers like you (source: popular)."
    assert got[user].reason == "Popular with shoppers like you (source: als)."
    assert got[10**9].tokens is None and got[user].tokens is None


def test_token_attributions_match_plain_pytorch(spark, explained, pairs, tiny_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ref = rank.score_ref(explained.cfg, tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir).eval()
    for key, first, second in pairs:
        words = [w for w in torch_words(model, tok, first, second, ref.max_length, ref.truncation)
                 if re.search(r"[a-z0-9]", w[1])]
        want = [w for side in ("user", "item")
                for w in sorted((w for w in words if w[0] == side), key=lambda w: -abs(w[2]))[:TOP_TOKENS]]
        got = explained.rows[key]["tokens"]
        assert [(t["side"], t["token"]) for t in got] == [(s, w) for s, w, _ in want]
        scale = max(abs(v) for _, _, v in words)
        np.testing.assert_allclose([t["attribution"] for t in got], [v for _, _, v in want],
                                   rtol=0, atol=1e-3 * scale)

    # every attributed word is a word of its own side's text
    texts = {r.user_idx: r.text for r in backfill.user_texts(spark, explained.cfg).collect()}
    items = {r.item_idx: r.text for r in backfill.item_texts(spark, explained.cfg).collect()}
    for (user, _), r in explained.rows.items():
        if r["tokens"] is None:
            continue
        words = {"user": set(re.findall(r"[a-z0-9]+", texts.get(user, ex.NO_HISTORY).lower())),
                 "item": set(re.findall(r"[a-z0-9]+", items[r["item_idx"]].lower()))}
        assert {t["side"] for t in r["tokens"]} == {"user", "item"}
        for t in r["tokens"]:  # only_first truncation may cut the user text's last word after a piece
            assert t["token"] in words[t["side"]] or t["side"] == "user" and any(
                w.startswith(t["token"]) for w in words["user"]), t


def test_integrated_gradients_are_complete(explained, pairs, tiny_dir):
    """The attributions sum to logit(input) - logit(all-[PAD] baseline)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ref = rank.score_ref(explained.cfg, tiny_dir)
    firsts, seconds = [p[1] for p in pairs], [p[2] for p in pairs]
    got = explain.attribute(ref, firsts, seconds, "integrated_gradients", 64)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir).eval()
    for first, second, a in zip(firsts, seconds, got):
        enc = tok(first, second, max_length=ref.max_length, truncation=ref.truncation, return_tensors="pt")
        ids = enc["input_ids"]
        kept = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
        baseline = model.get_input_embeddings()(torch.where(kept, ids, torch.full_like(ids, tok.pad_token_id)))
        with torch.no_grad():
            logit = model(**enc).logits[0, 0].item()
            base = model(inputs_embeds=baseline, attention_mask=enc["attention_mask"],
                         token_type_ids=enc["token_type_ids"]).logits[0, 0].item()
        assert a.pieces == tok.convert_ids_to_tokens(ids[0])
        assert abs(logit - base) > 1e-7
        assert a.values.sum() == pytest.approx(logit - base, rel=0.03)
        # [CLS]/[SEP] are the baseline's too: nothing to attribute to them
        assert np.all(a.values[np.asarray(a.special)] == 0) and sum(a.special) == 3


def test_rerun_gives_the_same_rows(spark, explained):
    cfg = explained.cfg
    before = table_rows(spark, cfg)
    result = explain.run(spark, cfg)
    after = table_rows(spark, cfg)
    assert result["rows"] == len(after) == len(before) == tables.read(spark, cfg, RECOMMENDATIONS).count()
    assert after.keys() == before.keys()
    for key, row in before.items():
        again = after[key]
        assert {k: again[k] for k in row if k != "tokens"} == {k: v for k, v in row.items() if k != "tokens"}
        if row["tokens"] is None:
            assert again["tokens"] is None
            continue
        assert [(t["side"], t["token"]) for t in again["tokens"]] == [(t["side"], t["token"]) for t in row["tokens"]]
        np.testing.assert_allclose([t["attribution"] for t in again["tokens"]],
                                   [t["attribution"] for t in row["tokens"]], rtol=1e-4)


def test_explain_one_user(spark, explained, tiny_dir, capsys):
    """`explain --user` through the job's own command line (cli.invoke: its parser, config
    and stage, in this process)."""
    settings = (*SHOP, *tiny(tiny_dir), "explain.token_ranks=1", "explain.method=integrated_gradients",
                "explain.ig_steps=8")
    cfg = make_config(explained.cfg.storage.root, *settings)
    before = table_rows(spark, cfg)
    user_idx = min(u for (u, _), r in before.items() if r["top_history"])
    user_id = before[(user_idx, 1)]["user_id"]
    version = tables.version(spark, cfg, RECOMMENDATIONS)

    result = cli.invoke("explain", ["--user", user_id, *job_args(explained.cfg.storage.root, *settings)])
    out = capsys.readouterr().out
    after = table_rows(spark, cfg)
    mine = sorted(k for k in before if k[0] == user_idx)
    assert result["rows"] == result["with_tokens"] == len(mine) == 5 and result["users"] == 1
    assert result["method"] == "integrated_gradients"
    assert tables.version(spark, cfg, RECOMMENDATIONS) == version + 1
    assert {k: v for k, v in after.items() if k[0] != user_idx} == \
        {k: v for k, v in before.items() if k[0] != user_idx}
    for key in mine:  # every rank now has tokens; the history is what it was
        assert after[key]["tokens"] and after[key]["top_history"] == before[key]["top_history"]
        assert after[key]["tokens"] != before[key]["tokens"]

    assert out.startswith(f"Recommendations for {user_id} (token attributions: integrated_gradients)")
    blocks = re.split(r"^#\d+ ", out, flags=re.M)[1:]
    assert len(blocks) == len(mine)
    for key, block in zip(mine, blocks):
        row = after[key]
        assert block.startswith(f" {row['item_id']} ") and f"score {row['score']:.4f}" in block
        assert row["reason"] in block
        assert all(f"{h['title']} ({h['item_id']}, {h['action']}, similarity {h['similarity']:.3f})" in block
                   for h in row["top_history"])
        for side in ("user", "item"):
            line = re.search(rf"^    {side} words: (.*)$", block, re.M).group(1)
            assert [w.rsplit(" ", 1)[0] for w in line.split(", ")] == \
                [t["token"] for t in row["tokens"] if t["side"] == side]

    with pytest.raises(ValueError, match="unknown user 'no-such-user'"):
        cli.invoke("explain", ["--user", "no-such-user", *job_args(explained.cfg.storage.root, *settings)])
    assert tables.version(spark, cfg, RECOMMENDATIONS) == version + 1
