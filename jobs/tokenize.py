"""gold.examples -> tokenized Parquet shards (train/val/test) + manifest.json."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("tokenize", stages.tokenize, stages.force_arg)
