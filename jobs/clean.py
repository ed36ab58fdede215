"""Bronze -> silver: typed, checked (bad rows to quarantine), deduplicated."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("clean", stages.clean, stages.date_args)
