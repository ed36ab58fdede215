"""Evaluation: baselines and the hybrid ranker on the same split -> metrics, reports/<run>/."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("evaluate", stages.evaluate)
