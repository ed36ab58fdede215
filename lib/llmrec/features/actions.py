"""What a user did to an item: the strongest of the pair's events, as an Action."""
from __future__ import annotations

import enum

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from llmrec import tables
from llmrec.conf import Config
from llmrec.frames import map_lookup
from llmrec.tables.schemas import ITEM_INDEX, SILVER_EVENTS, USER_INDEX


class Action(enum.Enum):
    """What a user did to an item: the strongest of the pair's event types (a pair with
    only a review is REVIEW), its phrase in user texts and its sentence in reasons."""
    REVIEW = ("review", 0, "reviewed", "reviewed {item}")
    VIEW = ("view", 1, "viewed", "viewed {item}")
    CART = ("cart", 2, "added to cart", "added {item} to your cart")
    PURCHASE = ("purchase", 3, "bought", "bought {item}")

    def __init__(self, event_type: str, strength: int, phrase: str, sentence: str):
        self.event_type, self.strength, self.phrase, self.sentence = event_type, strength, phrase, sentence


def action_phrase(event_type: Column) -> Column:
    """The phrase of the Action of an event type column (null: REVIEW's)."""
    return F.coalesce(map_lookup({a.event_type: a.phrase for a in Action}, event_type),
                      F.lit(Action.REVIEW.phrase))


def actions(spark: SparkSession, cfg: Config) -> DataFrame:
    """(user_idx, item_idx, event_type): the strongest event type of each pair with events."""
    strength = map_lookup({a.event_type: a.strength for a in Action}, F.col("event_type"))
    events = tables.read(spark, cfg, SILVER_EVENTS) \
        .join(tables.read(spark, cfg, USER_INDEX).select("user_id", "user_idx"), "user_id") \
        .join(tables.read(spark, cfg, ITEM_INDEX).select("item_id", "item_idx"), "item_id")
    best = events.groupBy("user_idx", "item_idx").agg(F.max(strength).alias("strength"))
    event_type = map_lookup({a.strength: a.event_type for a in Action}, F.col("strength"))
    return best.select("user_idx", "item_idx", event_type.alias("event_type"))
