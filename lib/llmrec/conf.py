"""Typed configuration: one YAML per environment plus ``--set a.b=c`` overrides.

Every key is declared here with its type and default; loading validates the whole tree
and fails with one line naming the offending key, before any Spark work starts.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key."""


@dataclass
class SparkConf:
    # None: use the master spark-submit (or Databricks) gave us.
    master: Optional[str] = None
    app_name: str = "llmrec"
    # local: attach Delta jars from .jars/; cluster: Delta arrives via --packages;
    # databricks: use the running session as it is.
    mode: Literal["local", "cluster", "databricks"] = "local"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    # Extra spark.* settings passed through unchanged.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class StorageConf:
    # Root of every table: a local path, hdfs://, s3a://, dbfs:/ or a UC volume path.
    root: str = "./data"
    # Where raw input files live; defaults to <root>/raw.
    raw: Optional[str] = None


@dataclass
class SyntheticConf:
    seed: int = 42
    users: int = 2000
    items: int = 500
    days: int = 60
    # Target number of events; the generator lands within a few percent of it.
    events: int = 100_000
    start_date: str = "2024-01-01"
    # Fraction of items launched in the last fifth of the period (cold start).
    cold_item_fraction: float = 0.1
    # Fraction of users whose first session is in the last fifth of the period.
    cold_user_fraction: float = 0.05
    # Fraction of raw rows that are corrupted (nulls, unknown ids, bad timestamps, ...).
    bad_row_rate: float = 0.01
    reviews_per_purchase: float = 0.3
    # Number of raw files written per day and entity.
    files_per_day: int = 1


@dataclass
class SourceConf:
    # synthetic | amazon | retailrocket | movielens
    kind: Literal["synthetic", "amazon", "retailrocket", "movielens"] = "synthetic"
    # Input files or folders of the real-data adapters (see lib/llmrec/data/adapters.py).
    paths: dict[str, str] = field(default_factory=dict)
    # Date partition the adapter's rows land in (real dumps are one batch).
    batch_date: str = "2024-01-01"


@dataclass
class SplitConf:
    # global: cutoff days before the last event; leave_last: last N items of each user.
    method: Literal["global", "leave_last"] = "leave_last"
    val_days: int = 7
    test_days: int = 7
    val_n: int = 1
    test_n: int = 1
    # Users with fewer interacted items than this stay wholly in train.
    min_user_items: int = 3


@dataclass
class InteractionsConf:
    event_weights: dict[str, float] = field(
        default_factory=lambda: {"view": 1.0, "cart": 3.0, "purchase": 5.0})
    # Weight of a review by its star rating (keys 1..5).
    review_weights: dict[str, float] = field(
        default_factory=lambda: {"1": -2.0, "2": -1.0, "3": 1.0, "4": 3.0, "5": 5.0})
    # Half-life of the exponential time decay, in days; 0 disables decay.
    half_life_days: float = 30.0
    split: SplitConf = field(default_factory=SplitConf)
    # Users per sparse CSR block in the .npz export.
    csr_block_rows: int = 100_000


@dataclass
class Config:
    spark: SparkConf = field(default_factory=SparkConf)
    storage: StorageConf = field(default_factory=StorageConf)
    source: SourceConf = field(default_factory=SourceConf)
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)
    interactions: InteractionsConf = field(default_factory=InteractionsConf)

    @property
    def raw_root(self) -> str:
        return self.storage.raw or join(self.storage.root, "raw")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def join(root: str, *parts: str) -> str:
    """Joins path parts onto a root that may be a URI (s3a://, dbfs:/) or a local path."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Loads a YAML file (or the defaults), applies ``a.b=c`` overrides and validates."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        apply_override(raw, item)
    return _build(Config, raw, "")


def apply_override(tree: dict[str, Any], item: str) -> None:
    """Applies one ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[leaf] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or 'config'}' must be a section "
                          f"(mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    obj = cls(**kwargs)
    _check_ranges(obj, prefix)
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce([a for a in args if a is not type(None)][0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        kt, vt = args
        return {_coerce(kt, str(k), f"{key}.{k}"): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


_POSITIVE = {
    "SyntheticConf": ("users", "items", "days", "events", "files_per_day"),
    "SparkConf": ("shuffle_partitions",),
    "InteractionsConf": ("csr_block_rows",),
    "SplitConf": ("val_n", "test_n", "val_days", "test_days"),
}
_FRACTIONS = {
    "SyntheticConf": ("cold_item_fraction", "cold_user_fraction", "bad_row_rate", "reviews_per_purchase"),
}


def _check_ranges(obj: Any, prefix: str) -> None:
    name = type(obj).__name__
    for key in _POSITIVE.get(name, ()):
        if getattr(obj, key) <= 0:
            raise ConfigError(f"config key '{prefix}{key}' must be > 0, got {getattr(obj, key)}")
    for key in _FRACTIONS.get(name, ()):
        if not 0.0 <= getattr(obj, key) <= 1.0:
            raise ConfigError(f"config key '{prefix}{key}' must be in [0, 1], got {getattr(obj, key)}")
    if name == "SyntheticConf":
        _parse_date(obj.start_date, f"{prefix}start_date")
    if name == "SourceConf":
        _parse_date(obj.batch_date, f"{prefix}batch_date")
    if name == "InteractionsConf" and obj.half_life_days < 0:
        raise ConfigError(f"config key '{prefix}half_life_days' must be >= 0")


def _parse_date(value: str, key: str) -> None:
    import datetime as dt

    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"config key '{key}' must be a date YYYY-MM-DD, got {value!r}") from None


def _cli(argv: list[str] | None = None) -> int:
    """``python -m llmrec.conf FILE [--set k=v]... [--get a.b]``: validate, print a value."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m llmrec.conf")
    parser.add_argument("file")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--get", default=None)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.file, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.get:
        value: Any = cfg.to_dict()
        for part in args.get.split("."):
            value = value[part]
        print("" if value is None else value)
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
