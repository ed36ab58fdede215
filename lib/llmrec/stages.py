"""The bodies of the jobs, in pipeline order; jobs/*.py only bind them to the CLI.

Each takes (spark, cfg, args) and returns a JSON-able summary of what it did.
"""
from __future__ import annotations

import json
import os
import time
from argparse import ArgumentParser, ArgumentTypeError, Namespace

from llmrec.cli import describe, parse_dates
from llmrec.conf import Config, join
from llmrec.progress import fmt_duration, log, stage


def generate(spark, cfg: Config, args: Namespace) -> dict:
    """Writes the synthetic shop's raw files (source.kind must be synthetic)."""
    from llmrec.data import synthetic

    if cfg.source.kind != "synthetic":
        raise ValueError(f"generate makes the synthetic shop; source.kind is {cfg.source.kind!r}")
    with stage("generate", spark) as st:
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

    with stage("interactions", spark) as st:
        stats = inter.build(spark, cfg)
        st.count(users=stats["users"], items=stats["items"], nnz=stats["nnz"])
    with stage("interactions.csr_export", spark) as st:
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

    with stage("examples", spark) as st:
        counts = examples_mod.build(spark, cfg)
        st.count(rows=sum(s["rows"] for s in counts.values()))
    log.info("examples: %s", "; ".join(
        f"{split} {c['rows']:,} rows ({c['positives']:,} positive)" for split, c in sorted(counts.items())))
    return counts


def tokenize(spark, cfg: Config, args: Namespace) -> dict:
    """gold.examples -> tokenized Parquet shards + manifest.json."""
    from llmrec.features import tokens

    with stage("tokenize", spark) as st:
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

    with stage("train"):  # no Spark heartbeat: the training processes log their own progress
        result = launch.run(spark, cfg, force=getattr(args, "force", False))
    best, test = result["best"], result.get("test") or {}
    log.info("train: best epoch %d, val AUC %.4f, test AUC %s; model in %s", best["epoch"],
             best["val_auc"], f"{test['auc']:.4f}" if test else "n/a", result["model_dir"])
    return {"model_dir": result["model_dir"], "backend": result["backend"], "best": best,
            "test_auc": test.get("auc"), "epochs": len(result["epochs"])}


def embed(spark, cfg: Config, args: Namespace) -> dict:
    """Catalog and user embeddings, incremental (new or changed texts only) and resumable."""
    from llmrec.infer import backfill

    with stage("embed", spark) as st:
        result = backfill.run(spark, cfg)
        st.count(rows_in=result["items"]["embedded"] + result["users"]["embedded"])
    return result


def candidates(spark, cfg: Config, args: Namespace) -> dict:
    """ALS, co-occurrence, content and profile neighbours, popularity -> gold.candidates."""
    from llmrec.infer import candidates as cands

    with stage("candidates", spark) as st:
        result = cands.build(spark, cfg)
        st.count(rows=result["rows"])
    return result


def recommend(spark, cfg: Config, args: Namespace) -> dict:
    """Cross-encoder reranking of the candidates -> top-K per user in gold.recommendations."""
    from llmrec.infer import rank

    with stage("recommend", spark) as st:
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
    with stage("search", spark) as st:
        result = search_mod.search(spark, cfg, queries, batch)
        st.count(rows_in=len(queries))
    return result


def explain(spark, cfg: Config, args: Namespace) -> dict:
    """Why each recommendation: the history items behind it, the words that drove the
    cross-encoder's score and a readable reason, into gold.recommendations."""
    from llmrec.evaluate import explain as explain_mod

    with stage("explain", spark) as st:
        result = explain_mod.run(spark, cfg, user_id=getattr(args, "user", None))
        st.count(rows=result["rows"])
    return result


def explain_args(parser: ArgumentParser) -> None:
    parser.add_argument("--user", help="explain (and print) only this user's recommendations")


def evaluate(spark, cfg: Config, args: Namespace) -> dict:
    """Baselines and the hybrid on the same split: metrics table, plots, reports/<run>/."""
    from llmrec.evaluate import compare

    with stage("evaluate", spark) as st:
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


def force_arg(parser: ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="redo the work even if the outputs are up to date")


def date_args(parser: ArgumentParser) -> None:
    parser.add_argument("--dates", type=parse_dates, default=None,
                        help="process these days again (YYYY-MM-DD,...); default: days not yet done")


# Pipeline order. generate runs only for the synthetic source.
PIPELINE = (("generate", generate), ("ingest", ingest), ("clean", clean),
            ("interactions", interactions), ("examples", examples), ("tokenize", tokenize),
            ("train", train), ("embed", embed), ("candidates", candidates),
            ("recommend", recommend), ("search", search), ("explain", explain),
            ("evaluate", evaluate))


def pipeline(spark, cfg: Config, args: Namespace) -> dict:
    """Every stage in order (or those of --stages), on the configured source; a stage
    whose outputs are complete for the same inputs and config is skipped (--no-resume
    or --force: run them all). Writes the run summary to <root>/runs/<run>.json."""
    from llmrec import runs, tracking

    wanted = getattr(args, "stages", None) or [name for name, _ in PIPELINE]
    resume = getattr(args, "resume", True) and not getattr(args, "force", False)
    run_id = runs.new_run_id()
    summary = {"run_id": run_id, "status": "running", "resume": resume, "stages": [],
               "config": cfg.to_dict(), "started_at": runs.now().isoformat() + "Z"}
    started = time.monotonic()
    results = {}
    with tracking.pipeline_run(cfg, run_id):
        try:
            for name, body in PIPELINE:
                if name not in wanted or (name == "generate" and cfg.source.kind != "synthetic"):
                    continue
                results[name] = runs.execute(spark, cfg, name, body, args, run_id, resume)
            summary["status"] = "done"
        except BaseException as err:
            summary["status"], summary["error"] = "failed", describe(err)
            raise
        finally:
            summary["seconds"] = round(time.monotonic() - started, 1)
            summary["stages"] = runs.stage_records(spark, cfg, run_id)
            summary["results"] = results
            path = runs.write_summary(spark, cfg, run_id, summary)
            log.info("pipeline %s %s in %s; run summary: %s", run_id, summary["status"],
                     fmt_duration(summary["seconds"]), path)
    return {"run_id": run_id, "summary": path,
            "stages": {r["stage"]: r["status"] for r in summary["stages"]}}


def pipeline_args(parser: ArgumentParser) -> None:
    names = [name for name, _ in PIPELINE]

    def stage_list(text: str) -> list[str]:
        chosen = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in names]
        if unknown or not chosen:
            raise ArgumentTypeError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; "
                                    f"stages: {', '.join(names)}")
        return chosen

    parser.add_argument("--stages", type=stage_list, default=None,
                        help="comma-separated stages to run, in pipeline order (default: all)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="run every chosen stage even if its outputs are up to date")
    force_arg(parser)


# Every job by name with its extra arguments: the jobs/*.py files, the `llmrec` console
# script (wheel installs, Databricks python_wheel_task) and notebooks all dispatch here.
JOBS = {**{name: (body, None) for name, body in PIPELINE},
        "ingest": (ingest, date_args), "clean": (clean, date_args), "tokenize": (tokenize, force_arg),
        "train": (train, force_arg), "search": (search, search_args),
        "explain": (explain, explain_args), "pipeline": (pipeline, pipeline_args)}
