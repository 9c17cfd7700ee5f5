"""Structured logs: one JSON object per line, with secrets blanked out. No Flask here.

The web layer adds what it knows of the request (CallSid, conversation id, the request's API
key to redact) through a filter; see gateway/web/logcontext.py.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import datetime, timezone

REDACTED = "[redacted]"

#: Shorter "secrets" (an empty or one-letter x-api-key header) would blank out ordinary words.
MIN_SECRET_LENGTH = 8

#: Record attributes the web layer may set, copied into the JSON line when present.
CONTEXT_FIELDS = ("call_sid", "conversation_id", "method", "path")


_bound: ContextVar[dict[str, str]] = ContextVar("gateway_log_context", default={})


def bind(**fields: str) -> None:
    """Stamp every later line of this request (or task) with these fields, e.g. conversation_id."""
    _bound.set({**_bound.get(), **fields})


def clear() -> None:
    """Forget what `bind` added: a new request starts with nothing."""
    _bound.set({})


def bound_context() -> dict[str, str]:
    return _bound.get()


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the request context when known, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value:
                line[field] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Blank out every secret `secrets()` names from the message and traceback of each record.

    Attach it to handlers: handler filters also see records propagated from child loggers.
    """

    def __init__(self, secrets: Callable[[], Iterable[str | None]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [s for s in self._secrets() if s and len(s) >= MIN_SECRET_LENGTH]
        if not secrets:
            return True
        record.msg, record.args = redact(record.getMessage(), secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        return True
