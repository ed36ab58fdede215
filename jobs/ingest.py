"""Raw files -> bronze tables (new days only, or --dates again)."""
from llmrec import stages
from llmrec.cli import run

if __name__ == "__main__":
    run("ingest", stages.ingest, stages.date_args)
