"""Semantic search: query texts (+ user) -> top-K items, reranked, into gold.search_results."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("search", stages.search, stages.search_args)
