"""Cross-encoder reranking of the candidates -> top-K per user in gold.recommendations."""
from llmrec.cli import run

if __name__ == "__main__":
    run("recommend")
