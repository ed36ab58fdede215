"""ALS, co-occurrence, content, profile and popular candidates per user -> gold.candidates."""
from llmrec.cli import run

if __name__ == "__main__":
    run("candidates")
