"""Cross-encoder fine-tuning: model, shard readers, the train loop and its two backends."""
