"""Inference at scale: the model-in-a-UDF engine, backfills of embeddings, candidate
sources, hybrid ranking with the cross-encoder, cold start and semantic search."""
