"""What a log line knows of its request: CallSid, conversation id, and which secrets to blank out."""
from __future__ import annotations

import logging
import sys
from typing import TextIO

from flask import current_app, g, has_app_context, has_request_context, request
from werkzeug.exceptions import HTTPException

from gateway.infra import jsonlog

FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _form_value(name: str) -> str | None:
    """A field of a Twilio webhook's form; never the cause of a 413 of its own."""
    if request.mimetype not in FORM_MIMETYPES:
        return None
    try:
        return request.form.get(name)
    except HTTPException:
        return None


class RequestContextFilter(logging.Filter):
    """Stamp each record with the request it was logged in (when it was logged in one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = jsonlog.bound_context()
        for field, value in bound.items():
            setattr(record, field, value)
        if not has_request_context():
            return True
        record.method = request.method
        record.path = request.path
        record.call_sid = g.get("call_sid") or _form_value("CallSid") or request.args.get("CallSid")
        record.conversation_id = (
            g.get("conversation_id")
            or bound.get("conversation_id")
            or request.args.get("conversation_id")
            or (request.view_args or {}).get("conversation_id")
        )
        return True


def _request_secrets() -> list[str | None]:
    """The auth token of the app serving this record, and the request's API key."""
    secrets: list[str | None] = []
    if has_app_context() and "gateway" in current_app.extensions:
        secrets.append(current_app.extensions["gateway"].settings.auth_token)
    if has_request_context():
        secrets.append(request.headers.get("x-api-key"))
    return secrets


def _make_json(handler: logging.Handler, auth_token: str | None) -> logging.Handler:
    handler.setFormatter(jsonlog.JsonFormatter())
    handler.addFilter(RequestContextFilter())
    handler.addFilter(jsonlog.RedactingFilter(lambda: [auth_token, *_request_secrets()]))
    return handler


def json_handler(auth_token: str | None, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing JSON lines, stamped with the request and with secrets redacted."""
    return _make_json(logging.StreamHandler(stream or sys.stderr), auth_token)


#: gunicorn's own loggers, which do not propagate to the root.
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


def configure_logging(auth_token: str | None) -> None:
    """Send every log line to stderr as JSON, unless logging is already set up; in any case,
    escape what could forge or hide log text in the values logged.

    The app factory calls this before anything else, so its start-up lines are JSON too.
    gunicorn's own handlers write JSON from then on: with `--preload` (the Procfile) that is
    from gunicorn's first line. pytest (and gunicorn --log-config) put handlers on the root
    logger first; we leave those be, as logging.basicConfig does.
    """
    jsonlog.install_printable_arguments()
    root = logging.getLogger()
    if root.handlers:
        return
    root.addHandler(json_handler(auth_token))
    root.setLevel(logging.INFO)
    for name in GUNICORN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            _make_json(handler, auth_token)
