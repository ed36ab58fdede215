"""Writes the synthetic shop's raw files (source.kind must be synthetic)."""
from llmrec.cli import run

if __name__ == "__main__":
    run("generate")
