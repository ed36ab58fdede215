"""Shards -> fine-tuned BERT cross-encoder (Horovod or TorchDistributor), with metrics."""
from llmrec.cli import run

if __name__ == "__main__":
    run("train")
