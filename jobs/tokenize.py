"""gold.examples -> tokenized Parquet shards (train/val/test) + manifest.json."""
from llmrec.cli import run

if __name__ == "__main__":
    run("tokenize")
