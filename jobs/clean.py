"""Bronze -> silver: typed, checked (bad rows to quarantine), deduplicated."""
from llmrec.cli import run

if __name__ == "__main__":
    run("clean")
