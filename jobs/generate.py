"""Writes the synthetic shop's raw files (source.kind must be synthetic)."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("generate", stages.generate)
