"""Export of gold.interactions as sparse CSR blocks (scipy .npz) for non-Spark consumers.

Layout under <root>/export/csr/:
  <split>/block-00000.npz   rows user_idx in [row_start, row_end), all item columns
  manifest.json             written last: its presence means the export is complete

Block b of a split holds users [b*B, (b+1)*B); the driver pulls one block at a time,
so memory is bounded by the block size, not the matrix. The interactions table is
written range-clustered by user_idx, so each block's query reads few files.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import scipy.sparse as sp
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config, join
from llmrec.storage import publish_folder
from llmrec.tables.schemas import INTERACTIONS, ITEM_INDEX, USER_INDEX

SPLITS = ("train", "val", "test")


def export(spark: SparkSession, cfg: Config) -> dict:
    """Writes every split's blocks and the manifest; returns the manifest."""
    block_rows = cfg.interactions.csr_block_rows
    inter = tables.read(spark, cfg, INTERACTIONS)
    n_users = tables.read(spark, cfg, USER_INDEX).agg(F.max("user_idx")).first()[0] + 1
    n_items = tables.read(spark, cfg, ITEM_INDEX).agg(F.max("item_idx")).first()[0] + 1
    version = tables.version(spark, cfg, INTERACTIONS)
    manifest = {"format": "scipy.sparse.csr_matrix (.npz, scipy.sparse.save_npz)",
                "rows": "user_idx", "cols": "item_idx", "values": "weight",
                "shape": [n_users, n_items], "block_rows": block_rows,
                "interactions_version": version, "splits": {}}
    staging = tempfile.mkdtemp(prefix="llmrec-csr-")
    try:
        for split in SPLITS:
            part = inter.where(F.col("split") == split).select("user_idx", "item_idx", "weight")
            blocks = []
            for b, row_start in enumerate(range(0, n_users, block_rows)):
                row_end = min(row_start + block_rows, n_users)
                pdf = part.where((F.col("user_idx") >= row_start) & (F.col("user_idx") < row_end)) \
                    .toPandas()
                matrix = sp.csr_matrix(
                    (pdf["weight"].to_numpy(np.float32),
                     (pdf["user_idx"].to_numpy(np.int64) - row_start, pdf["item_idx"].to_numpy(np.int64))),
                    shape=(row_end - row_start, n_items))
                matrix.sort_indices()
                name = f"{split}/block-{b:05d}.npz"
                os.makedirs(os.path.join(staging, split), exist_ok=True)
                sp.save_npz(os.path.join(staging, name), matrix)
                blocks.append({"file": name, "row_start": row_start, "row_end": row_end,
                               "nnz": int(matrix.nnz)})
            manifest["splits"][split] = {"nnz": sum(b["nnz"] for b in blocks), "blocks": blocks}
        with open(os.path.join(staging, "manifest.json"), "w") as fh:
            json.dump(manifest, fh, indent=2)
        publish_folder(spark, staging, join(cfg.storage.root, "export", "csr"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def load(folder: str, split: str) -> sp.csr_matrix:
    """Reads one split back as a single CSR matrix (local folder), checking the manifest."""
    with open(os.path.join(folder, "manifest.json")) as fh:
        manifest = json.load(fh)
    blocks = manifest["splits"][split]["blocks"]
    parts = [sp.load_npz(os.path.join(folder, b["file"])) for b in blocks]
    matrix = sp.vstack(parts, format="csr") if parts else sp.csr_matrix(tuple(manifest["shape"]))
    if matrix.nnz != manifest["splits"][split]["nnz"]:
        raise ValueError(f"{folder}: {split} has {matrix.nnz} entries, manifest says "
                         f"{manifest['splits'][split]['nnz']}")
    return matrix
