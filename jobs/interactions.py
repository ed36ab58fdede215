"""Silver -> gold indexes and interaction matrix, its CSR export and stats."""
from llmrec.cli import run

if __name__ == "__main__":
    run("interactions")
