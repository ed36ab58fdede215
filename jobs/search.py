"""Semantic search: query texts (+ user) -> top-K items, reranked, into gold.search_results."""
from llmrec.cli import run

if __name__ == "__main__":
    run("search")
