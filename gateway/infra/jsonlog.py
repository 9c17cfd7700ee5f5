"""Structured logs: one JSON object per line, with secrets blanked out. No Flask here.

The web layer adds what it knows of the request (CallSid, conversation id, the request's API
key to redact) through a filter; see gateway/web/logcontext.py.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import datetime, timezone

REDACTED = "[redacted]"

#: Shorter "secrets" (an empty or one-letter x-api-key header) would blank out ordinary words.
MIN_SECRET_LENGTH = 8

#: Record attributes the web layer may set, copied into the JSON line when present.
CONTEXT_FIELDS = ("call_sid", "conversation_id", "method", "path")


#: Every character that ends, rewrites or hides a line when printed: Unicode's Cc (C0 and C1
#: controls: CR, LF, ESC, CSI; and DEL), Cf (bidi overrides, zero-width and tag characters), Zl
#: and Zp, as of Unicode 14 (tests/test_log_text.py checks it against unicodedata).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def printable(text: str) -> str:
    """`text` with each unsafe character written as its escape (`\\u202e`), so a value a client
    sent can neither start a forged log line nor hide the text around it."""
    return _UNSAFE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _json_escaped(match: re.Match) -> str:
    """A JSON \\u escape (a surrogate pair above the BMP): the same text for a JSON reader."""
    return json.dumps(match.group(), ensure_ascii=True)[1:-1]


def install_printable_arguments() -> None:
    """Make every log record escape unsafe characters in its text arguments, whatever the handler.

    Values from requests (a path, a Host or X-Forwarded-For header) are always passed as
    arguments, never formatted into the message, so this covers gunicorn's and pytest's text
    handlers as well as ours. Installed once per process.
    """
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "escapes_arguments", False):
        return

    def printable_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if isinstance(record.args, tuple):
            record.args = tuple(printable(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: printable(arg) if isinstance(arg, str) else arg for key, arg in record.args.items()}
        return record

    printable_record.escapes_arguments = True
    logging.setLogRecordFactory(printable_record)


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
        # Readable UTF-8, but nothing a terminal or log viewer would act on (ESC, bidi overrides).
        return _UNSAFE.sub(_json_escaped, json.dumps(line, ensure_ascii=False, default=str))


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
