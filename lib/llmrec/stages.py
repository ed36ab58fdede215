"""The bodies of the jobs, in pipeline order; jobs/*.py only bind them to the CLI.

Each takes (spark, cfg, args) and returns a JSON-able summary of what it did.
"""
from __future__ import annotations

import json
from argparse import ArgumentParser, Namespace

from llmrec.cli import parse_dates
from llmrec.conf import Config, join
from llmrec.progress import log, stage


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


def date_args(parser: ArgumentParser) -> None:
    parser.add_argument("--dates", type=parse_dates, default=None,
                        help="process these days again (YYYY-MM-DD,...); default: days not yet done")


# Pipeline order. generate runs only for the synthetic source.
PIPELINE = (("generate", generate), ("ingest", ingest), ("clean", clean),
            ("interactions", interactions))


def pipeline(spark, cfg: Config, args: Namespace) -> dict:
    """Every stage in order, on the configured source."""
    results = {}
    for name, body in PIPELINE:
        if name == "generate" and cfg.source.kind != "synthetic":
            continue
        results[name] = body(spark, cfg, args)
    return results
