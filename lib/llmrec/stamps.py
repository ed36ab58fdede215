"""What work is stamped with: the UTC time, content fingerprints, run ids."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

FINGERPRINT_HEX = 16


def utc_now() -> dt.datetime:
    """The current UTC time without a timezone: what Spark's TimestampType stores."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def fingerprint(value: Any) -> str:
    """A short sha256 of `value` as canonical JSON (keys sorted; others as str): equal
    for equal content, whatever the dict order."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_HEX]


def new_run_id() -> str:
    """YYYYmmdd-HHMMSS-<6 hex>: sorts by start time, unique across concurrent runs."""
    return utc_now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
