"""Gold -> gold.examples: user history text + candidate item text pairs, with negatives."""
from llmrec.cli import run

if __name__ == "__main__":
    run("examples")
