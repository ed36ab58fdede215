"""Features built from the tables: the interaction matrix, training examples, shards."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def map_lookup(mapping: dict, key: Column) -> Column:
    """mapping[key] as a Spark column (null for keys not in it); keys compared as strings."""
    pairs = [x for k, v in mapping.items() for x in (F.lit(str(k)), F.lit(v))]
    return F.element_at(F.create_map(*pairs), key.cast("string"))


def sample_users(df: DataFrame, seed: int, fraction: float) -> DataFrame:
    """The rows of a seeded-hash `fraction` of users (the same users on any partitioning)."""
    if fraction >= 1.0:
        return df
    bucket = F.pmod(F.xxhash64(F.lit(seed), F.col("user_idx")), F.lit(1_000_000))
    return df.where(bucket < int(fraction * 1_000_000))
