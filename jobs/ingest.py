"""Raw files -> bronze tables (new days only, or --dates again)."""
from llmrec.cli import run

if __name__ == "__main__":
    run("ingest")
