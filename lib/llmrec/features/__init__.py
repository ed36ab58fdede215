"""Features built from the tables: the interaction matrix, training examples, shards."""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def map_lookup(mapping: dict, key: Column) -> Column:
    """mapping[key] as a Spark column (null for keys not in it); keys compared as strings."""
    pairs = [x for k, v in mapping.items() for x in (F.lit(str(k)), F.lit(v))]
    return F.element_at(F.create_map(*pairs), key.cast("string"))
