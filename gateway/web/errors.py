"""The one place errors become responses: the core's GatewayError, werkzeug's own errors under
/v1, and a database behind the schema, each in the API's shape {"error": {"code", "message"}}
(SPEC §5). The voice webhooks answer their own failures with TwiML (gateway/web/voice.py)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.voice.call_records import DATABASE_ERRORS
from gateway.errors import GatewayError
from gateway.storage.schema import DatabaseBehind

log = logging.getLogger(__name__)

API_PREFIX = "/v1/"


def error_response(status: int, code: str, message: str, **details):
    return jsonify({"error": {"code": code, "message": message, **details}}), status


def handle_gateway_error(error: GatewayError):
    return error_response(error.status, error.code, error.message, **error.details)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def handle_http_error(error: HTTPException):
    """Werkzeug's own errors (unknown path, wrong method, body too large) in the same shape under
    /v1; elsewhere (the console, the webhooks) they stay werkzeug's pages."""
    if not request.path.startswith(API_PREFIX):
        return error
    code = _HTTP_CODES.get(error.code or 500, "http_error")
    response, status = error_response(error.code or 500, code, error.description or error.name)
    for name, value in error.get_headers():  # a 405's Allow (RFC 9110 requires it); not its Content-Type
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


def handle_database_behind(error: DatabaseBehind):
    """503 naming the command to run; the API in its JSON shape. (The webhooks fail open instead.)"""
    if request.path.startswith(API_PREFIX):
        return error_response(503, "database_behind", str(error))
    return str(error), 503, {"Content-Type": "text/plain; charset=utf-8"}


def handle_database_unavailable(error: Exception):
    """503 in the SPEC's shape, not a bare 500: the integrator can retry. (The webhooks fail open
    and the console shows its own page; both register their own handlers.)"""
    log.error("database unavailable on %s (%s: %s)", request.path, type(error).__name__, error)
    if request.path.startswith(API_PREFIX):
        return error_response(503, "database_unavailable", "The database is not answering; try again in a moment.")
    return "The database is not answering; try again in a moment.\n", 503, {"Content-Type": "text/plain; charset=utf-8"}


def init_app(app: Flask) -> None:
    app.register_error_handler(GatewayError, handle_gateway_error)
    app.register_error_handler(HTTPException, handle_http_error)
    for database_error in DATABASE_ERRORS:
        app.register_error_handler(database_error, handle_database_unavailable)
    app.register_error_handler(DatabaseBehind, handle_database_behind)
