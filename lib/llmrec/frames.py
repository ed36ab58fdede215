"""DataFrame idioms every stage uses, each written once."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

OTHER = "Other"  # the top-level category of an item without one


class CacheScope:
    """The frames a stage caches, all released when the stage ends, failed or not: a
    notebook's session outlives the stage, and must not keep what the stage cached.

        with CacheScope() as cached:
            hist = cached(history(...))
    """

    def __init__(self):
        self._frames: list[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        df = df.cache()
        self._frames.append(df)
        return df

    def __enter__(self) -> CacheScope:
        return self

    def __exit__(self, *exc) -> None:
        for df in self._frames:
            df.unpersist()
        self._frames.clear()


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


def top_per(df: DataFrame, keys: str | list[str], n: int | Column | None, *order: Column | str,
            rank: str = "rank") -> DataFrame:
    """Each key's first n rows by `order` (ties must be broken by the order itself), numbered
    from 1 in column `rank`; n None keeps every row (a numbering only)."""
    by = Window.partitionBy(*([keys] if isinstance(keys, str) else keys)).orderBy(*order)
    numbered = df.withColumn(rank, F.row_number().over(by))
    return numbered if n is None else numbered.where(F.col(rank) <= n)


def best_per(df: DataFrame, key: str, n: int | None, score: str = "score", tie: str = "item_idx",
             rank: str = "rank") -> DataFrame:
    """Each key's n rows of highest `score` (ties: the smaller `tie`), ranked in `rank`."""
    return top_per(df, key, n, F.col(score).desc(), F.col(tie), rank=rank)


def top_level_category(category: Column | str) -> Column:
    """'Shoes > Running' -> 'Shoes'; no category -> OTHER."""
    col = F.col(category) if isinstance(category, str) else category
    return F.trim(F.split(F.coalesce(col, F.lit(OTHER)), ">").getItem(0))


def global_rank(df: DataFrame, *order: Column | str, name: str = "rank") -> DataFrame:
    """df + `name`: each row's 1-based position in one order over the whole frame. A sort
    and zipWithIndex, not a window without a partition (which moves every row to one task)."""
    ranked = df.orderBy(*order).rdd.zipWithIndex().map(lambda row_i: (*row_i[0], row_i[1] + 1))
    return df.sparkSession.createDataFrame(ranked, df.schema.add(name, "long", False))


def running_sum(df: DataFrame, value: str, *order: Column | str, name: str = "running") -> DataFrame:
    """df + `name`: the sum of `value` over the rows before each one in this order (its own
    row excluded). Two passes over the sorted rows: each partition's total, then each row's
    offset; no window over one partition."""
    ordered = df.orderBy(*order).rdd
    at = df.columns.index(value)
    totals = ordered.mapPartitionsWithIndex(lambda i, rows: [(i, sum(r[at] or 0 for r in rows))]).collect()
    offsets, acc = {}, 0
    for i, total in sorted(totals):
        offsets[i], acc = acc, acc + total

    def add(i, rows):
        acc = offsets[i]
        for r in rows:
            yield (*r, acc)
            acc += r[at] or 0

    schema = df.schema.add(name, df.schema[value].dataType, True)
    return df.sparkSession.createDataFrame(ordered.mapPartitionsWithIndex(add), schema)
