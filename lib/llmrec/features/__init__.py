"""Features built from the tables: the interaction matrix, training examples, shards."""
