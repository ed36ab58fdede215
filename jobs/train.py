"""Shards -> fine-tuned BERT cross-encoder (Horovod or TorchDistributor), with metrics."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("train", stages.train, stages.force_arg)
