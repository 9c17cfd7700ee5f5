"""JSON as RFC 8259 defines it: no NaN, Infinity or -Infinity.

Python's json reads and writes those tokens by default, but JavaScript's JSON.parse,
PostgreSQL's json type and most other parsers refuse them, so a document holding one would be
stored on SQLite and then break every client that reads it back.
"""
from __future__ import annotations

import json
import math


class NonStandardJson(ValueError):
    """A NaN, Infinity or -Infinity token: valid JavaScript, not JSON."""


def _refuse(token: str):
    raise NonStandardJson(f"{token} is not a JSON number; send null or a finite number")


def loads(text: str | bytes):
    """Parse JSON, refusing NaN, Infinity and -Infinity (NonStandardJson, a ValueError)."""
    return json.loads(text, parse_constant=_refuse)


def finite(value):
    """The same value with every NaN or infinite float replaced by null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value
