"""Explanations: history items, cross-encoder token attributions and a reason per recommendation."""
from llmrec.cli import run

if __name__ == "__main__":
    run("explain")
