"""The pipeline's stages: each stage's body and its one declaration in `STAGES`.

A body takes (spark, cfg, args) and returns a JSON-able summary of what it did. A
declaration says everything else the project needs to know about the stage: its
command-line arguments, the config sections and the tables or folders its outputs depend
on, what it writes, which sources it runs for and whether it wants a GPU. The pipeline's
order, resume's fingerprints (llmrec.runs), the jobs of the CLI and the console script
(llmrec.cli), the notebooks and the Databricks bundle's tasks (llmrec.bundle) are all
derived from `STAGES`; nothing else lists the stages.
"""
from __future__ import annotations

import dataclasses
import json
import os
from argparse import ArgumentParser, Namespace
from typing import Callable, Literal

from llmrec import storage
from llmrec.args import add_dates, add_force
from llmrec.conf import Config, join
from llmrec.progress import log, timed
from llmrec.tables.schemas import (
    BRONZE, CANDIDATES, EVAL_METRICS, EXAMPLES, INTERACTIONS, ITEM_EMBEDDINGS, ITEM_INDEX, ITEM_NEIGHBORS,
    POPULAR_ITEMS, RECOMMENDATIONS, SEARCH_RESULTS, SILVER, SILVER_EVENTS, SILVER_ITEMS, SILVER_REVIEWS,
    USER_EMBEDDINGS, USER_EMBEDDINGS_VAL, USER_INDEX, Table,
)


def generate(spark, cfg: Config, args: Namespace) -> dict:
    """Writes the synthetic shop's raw files (source.kind must be synthetic)."""
    from llmrec.data import synthetic

    if cfg.source.kind != "synthetic":
        raise ValueError(f"generate makes the synthetic shop; source.kind is {cfg.source.kind!r}")
    with timed("generate", spark) as st:
        folders, written = synthetic.generate(spark, cfg)
        if written:
            st.count(users=cfg.synthetic.users, items=cfg.synthetic.items)
        else:
            log.info("generate: the shop is already written with these settings; kept")
    return {"raw": folders, "written": written}


def _batches(results) -> dict:
    return {c.entity: {"days": len(c.days), "rows_in": c.rows_in, "rows_out": c.rows_out,
                       "quarantined": c.quarantined, "duplicates": c.duplicates,
                       "reasons": c.reasons} for c in results}


def ingest(spark, cfg: Config, args: Namespace) -> dict:
    """Raw files -> bronze tables (new days only, or --dates again)."""
    from llmrec.data import ingest as ingest_mod

    return _batches(ingest_mod.run(spark, cfg, getattr(args, "dates", None)))


def clean(spark, cfg: Config, args: Namespace) -> dict:
    """Bronze -> silver: typed, checked (bad rows to quarantine), deduplicated."""
    from llmrec.data import clean as clean_mod

    return _batches(clean_mod.run(spark, cfg, getattr(args, "dates", None)))


def interactions(spark, cfg: Config, args: Namespace) -> dict:
    """Silver -> gold indexes and interaction matrix, its CSR export and stats."""
    from llmrec import storage
    from llmrec.features import csr, interactions as inter

    with timed("interactions", spark) as st:
        stats = inter.build(spark, cfg)
        st.count(users=stats["users"], items=stats["items"], nnz=stats["nnz"])
    with timed("interactions.csr_export", spark) as st:
        manifest = csr.export(spark, cfg)
        st.count(blocks=sum(len(s["blocks"]) for s in manifest["splits"].values()))
    storage.write_text(spark, join(cfg.storage.root, "export", "interactions_stats.json"),
                       json.dumps(stats, indent=2))
    log.info("interactions: %s users, %s items, nnz %s, density %.5f; %s", f"{stats['users']:,}",
             f"{stats['items']:,}", f"{stats['nnz']:,}", stats["density"],
             ", ".join(f"{k} {v['nnz']:,}" for k, v in sorted(stats["splits"].items())))
    return stats


def examples(spark, cfg: Config, args: Namespace) -> dict:
    """Gold -> gold.examples: (user history text, item text, label) pairs with negatives."""
    from llmrec.features import examples as examples_mod

    with timed("examples", spark) as st:
        counts = examples_mod.build(spark, cfg)
        st.count(rows=sum(s["rows"] for s in counts.values()))
    log.info("examples: %s", "; ".join(
        f"{split} {c['rows']:,} rows ({c['positives']:,} positive)" for split, c in sorted(counts.items())))
    return counts


def tokenize(spark, cfg: Config, args: Namespace) -> dict:
    """gold.examples -> tokenized Parquet shards + manifest.json."""
    from llmrec.features import tokens

    with timed("tokenize", spark) as st:
        manifest = tokens.build(spark, cfg, force=getattr(args, "force", False))
        st.count(rows=sum(s["rows"] for s in manifest["splits"].values()))
    stats = manifest["stats"]
    log.info("tokenize: build %s, %s tokens at %s tokens/s (%s rows/s)", manifest["build"],
             f"{stats['tokens']:,}", f"{stats['tokens_per_s']:,.0f}", f"{stats['rows_per_s']:,.0f}")
    return {"build": manifest["build"], "rows": {k: v["rows"] for k, v in manifest["splits"].items()},
            "tokens_per_s": round(stats["tokens_per_s"])}


def train(spark, cfg: Config, args: Namespace) -> dict:
    """Shards -> fine-tuned cross-encoder (Horovod or TorchDistributor), metrics.json."""
    from llmrec.train import launch

    with timed("train"):  # no Spark heartbeat: the training processes log their own progress
        result = launch.run(spark, cfg, force=getattr(args, "force", False))
    best, test = result["best"], result.get("test") or {}
    log.info("train: best epoch %d, val AUC %.4f, test AUC %s; model in %s", best["epoch"],
             best["val_auc"], f"{test['auc']:.4f}" if test else "n/a", result["model_dir"])
    return {"model_dir": result["model_dir"], "backend": result["backend"], "best": best,
            "test_auc": test.get("auc"), "epochs": len(result["epochs"])}


def embed(spark, cfg: Config, args: Namespace) -> dict:
    """Catalog and user embeddings, incremental (new or changed texts only) and resumable."""
    from llmrec.infer import backfill

    with timed("embed", spark) as st:
        result = backfill.run(spark, cfg)
        st.count(rows_in=sum(r["embedded"] for r in result.values()))
    return result


def candidates(spark, cfg: Config, args: Namespace) -> dict:
    """ALS, co-occurrence, content and profile neighbours, popularity -> gold.candidates."""
    from llmrec.infer import candidates as cands

    with timed("candidates", spark) as st:
        result = cands.build(spark, cfg)
        st.count(rows=result["rows"])
    return result


def ranker(spark, cfg: Config, args: Namespace) -> dict:
    """Learns the second stage on the validation cut (LambdaMART) and chooses what to serve."""
    from llmrec.ranker import learn

    with timed("ranker", spark):
        return learn.run(spark, cfg)


def recommend(spark, cfg: Config, args: Namespace) -> dict:
    """The candidates in the second stage's order -> top-K per user in gold.recommendations."""
    from llmrec.infer import rank

    with timed("recommend", spark) as st:
        result = rank.recommend(spark, cfg)
        st.count(rows=result["rows"])
    return result


def search(spark, cfg: Config, args: Namespace) -> dict:
    """Query texts (optionally with a user) -> top-K items, into gold.search_results."""
    from llmrec.infer import search as search_mod

    query = getattr(args, "query", None)
    if query:
        queries = [{"query_id": "1", "query": query, "user_id": getattr(args, "user", None)}]
        batch = getattr(args, "batch", None) or "adhoc"
    else:
        path = getattr(args, "queries", None) or cfg.search.queries
        queries = search_mod.read_queries(path)
        batch = getattr(args, "batch", None) or os.path.splitext(os.path.basename(path))[0]
    with timed("search", spark) as st:
        result = search_mod.search(spark, cfg, queries, batch)
        st.count(rows_in=len(queries))
    return result


def explain(spark, cfg: Config, args: Namespace) -> dict:
    """Why each recommendation: the history items and words behind it, into gold.recommendations.

    The history items most like the recommended one, the words that drove the
    cross-encoder's score, and a readable reason."""
    from llmrec.evaluate import explain as explain_mod

    with timed("explain", spark) as st:
        result = explain_mod.run(spark, cfg, user_id=getattr(args, "user", None))
        st.count(rows=result["rows"])
    return result


def explain_args(parser: ArgumentParser) -> None:
    parser.add_argument("--user", help="explain (and print) only this user's recommendations")


def evaluate(spark, cfg: Config, args: Namespace) -> dict:
    """Baselines and the hybrid on the same split: metrics table, plots, reports/<run>/."""
    from llmrec.evaluate import compare

    with timed("evaluate", spark) as st:
        result = compare.run(spark, cfg)
        st.count(users=result["users"])
    print(compare.headline(result), flush=True)
    return result


def search_args(parser: ArgumentParser) -> None:
    parser.add_argument("--query", help="one query text (instead of the search.queries file)")
    parser.add_argument("--user", help="with --query: the user id to personalise for")
    parser.add_argument("--queries", help="JSON-lines file of queries (default: search.queries)")
    parser.add_argument("--batch", help="name of this batch in gold.search_results "
                                        "(default: the file's name, or 'adhoc')")


# --- the registry ----------------------------------------------------------------------

def _no_files(cfg: Config) -> list[str]:
    return []


def _raw(cfg: Config) -> list[str]:
    if cfg.source.kind == "synthetic":
        return [cfg.raw_root]
    return sorted(v for v in (cfg.source.paths or {}).values() if v)


def _shards(cfg: Config) -> list[str]:
    return [join(storage.absolute(cfg.storage.root), "shards")]


def _export(cfg: Config) -> list[str]:
    return [join(cfg.storage.root, "export")]


def _model(cfg: Config) -> list[str]:
    from llmrec.train.launch import output_dir

    return [output_dir(cfg)]


def _queries(cfg: Config) -> list[str]:
    return [cfg.search.queries]


def _ranker(cfg: Config) -> list[str]:
    from llmrec.ranker.saved import output_dir

    return [output_dir(cfg)]


def _models(cfg: Config) -> list[str]:
    """The cross-encoder and, when recommend serves its choice, the ranker."""
    return _model(cfg) + (_ranker(cfg) if cfg.recommend.ranker == "learned" else [])


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage. Its fingerprint (what resume compares) is made of the config
    `sections` (a section, or one key of it: "train.loss"), its arguments, the versions
    of its `inputs` and the file listings of its `input_files`; it is done when its
    `outputs` and `output_files` are as it left them."""
    name: str
    body: Callable[..., dict]
    sections: tuple[str, ...]
    inputs: tuple[Table, ...] = ()
    outputs: tuple[Table, ...] = ()
    input_files: Callable[[Config], list[str]] = _no_files
    output_files: Callable[[Config], list[str]] = _no_files
    add_args: Callable[[ArgumentParser], None] | None = None
    # The source kinds (source.kind) the stage runs for; empty: every source.
    sources: tuple[str, ...] = ()
    # Where it runs on a cluster with both (the Databricks bundle's job clusters).
    compute: Literal["cpu", "gpu"] = "cpu"

    @property
    def doc(self) -> str:
        """The first line of the body's docstring: what the stage does, in one line."""
        return (self.body.__doc__ or self.name).strip().splitlines()[0]

    def runs_for(self, cfg: Config) -> bool:
        return not self.sources or cfg.source.kind in self.sources


_BRONZE, _SILVER = tuple(BRONZE.values()), tuple(SILVER.values())
_ENCODE = ("model", "tokenize", "infer", "embed", "examples")
_EMBEDDINGS = (ITEM_EMBEDDINGS, USER_EMBEDDINGS, USER_EMBEDDINGS_VAL)
_TEXTS = (SILVER_ITEMS, SILVER_EVENTS, SILVER_REVIEWS)  # what user and item texts are made of
# What the first stage and the features learn from, and which pairs are relevant.
_CUTS = ("candidates", "interactions", "infer.history_splits", "evaluate.relevant_min_weight")

# Pipeline order.
STAGES: tuple[Stage, ...] = (
    Stage("generate", generate, ("source", "synthetic"), output_files=_raw, sources=("synthetic",)),
    Stage("ingest", ingest, ("source",), outputs=_BRONZE, input_files=_raw, add_args=add_dates),
    Stage("clean", clean, ("source", "interactions"), _BRONZE, _SILVER, add_args=add_dates),
    Stage("interactions", interactions, ("interactions",), _SILVER, (USER_INDEX, ITEM_INDEX, INTERACTIONS),
          output_files=_export),
    Stage("embed", embed, (*_ENCODE, "evaluate.relevant_min_weight"),
          (*_TEXTS, ITEM_INDEX, INTERACTIONS, USER_INDEX), _EMBEDDINGS, compute="gpu"),
    Stage("candidates", candidates, (*_CUTS, "recommend"), (INTERACTIONS, ITEM_INDEX, *_EMBEDDINGS),
          (ITEM_NEIGHBORS, POPULAR_ITEMS, CANDIDATES)),
    Stage("examples", examples, ("interactions", "examples", "train.loss", "candidates"),
          (INTERACTIONS, *_TEXTS, ITEM_INDEX, CANDIDATES), (EXAMPLES,)),
    Stage("tokenize", tokenize, ("examples", "tokenize", "model", "train.loss"), (EXAMPLES,), output_files=_shards,
          add_args=add_force),
    Stage("train", train, ("model", "tokenize", "train"), input_files=_shards, output_files=_model,
          add_args=add_force, compute="gpu"),
    Stage("ranker", ranker, ("ranker", "recommend", *_CUTS, *_ENCODE),
          (CANDIDATES, INTERACTIONS, *_TEXTS, ITEM_INDEX, *_EMBEDDINGS), input_files=_model,
          output_files=_ranker, compute="gpu"),
    Stage("recommend", recommend, ("recommend", "ranker", *_CUTS, *_ENCODE),
          (CANDIDATES, INTERACTIONS, *_TEXTS, ITEM_INDEX, *_EMBEDDINGS), (RECOMMENDATIONS,), input_files=_models,
          compute="gpu"),
    Stage("search", search, ("search", "candidates", *_ENCODE), (*_EMBEDDINGS, ITEM_INDEX), (SEARCH_RESULTS,),
          input_files=_queries, add_args=search_args),
    Stage("explain", explain, ("explain", "recommend", *_ENCODE), (ITEM_EMBEDDINGS, INTERACTIONS),
          (RECOMMENDATIONS,), input_files=_model, add_args=explain_args, compute="gpu"),
    Stage("evaluate", evaluate, ("evaluate", "ranker", "recommend", *_CUTS, *_ENCODE),
          (INTERACTIONS, CANDIDATES, RECOMMENDATIONS, EXAMPLES, ITEM_EMBEDDINGS), (EVAL_METRICS,),
          input_files=_models),
)
BY_NAME = {s.name: s for s in STAGES}
NAMES = tuple(BY_NAME)
