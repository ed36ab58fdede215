"""Runs one llmrec job: spark-submit jobs/run.py JOB [--conf FILE] [--set k=v]... (what submit.sh does)."""
from llmrec.cli import console

if __name__ == "__main__":
    console()
