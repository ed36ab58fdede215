"""Every stage in order, on the configured source."""
from llmrec.cli import run

if __name__ == "__main__":
    run("pipeline")
