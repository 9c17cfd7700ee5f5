"""Flask's JSON output, held to strict JSON: no response ever carries NaN or Infinity."""
from __future__ import annotations

from flask.json.provider import DefaultJSONProvider

from gateway.infra import strict_json


class StrictJSONProvider(DefaultJSONProvider):
    """Writes standard JSON only. Input is refused at the edge (`api.json_body`); a value that got
    in some other way (a row stored before that check) is sent as null rather than as a token
    strict parsers reject."""

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("allow_nan", False)
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(strict_json.finite(obj), **kwargs)
