"""Evaluation: baselines and the hybrid ranker on the same split -> metrics, reports/<run>/."""
from llmrec.cli import run

if __name__ == "__main__":
    run("evaluate")
