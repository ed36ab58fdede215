"""Catalog and user embeddings into gold.item_embeddings / user_embeddings (incremental, resumable)."""
from llmrec.cli import run

if __name__ == "__main__":
    run("embed")
