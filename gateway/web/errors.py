"""The API's one error shape: {"error": {"code", "message"}} (SPEC §5)."""
from __future__ import annotations

from flask import jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.schema import DatabaseBehind


class ApiError(Exception):
    """Raise anywhere under /v1 to answer with this status, code and message."""

    def __init__(self, status: int, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Extra fields beside code and message (e.g. Twilio's own error code).
        self.details = details


def error_response(status: int, code: str, message: str, **details):
    return jsonify({"error": {"code": code, "message": message, **details}}), status


def handle_api_error(error: ApiError):
    return error_response(error.status, error.code, error.message, **error.details)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def handle_http_error(error: HTTPException):
    """Werkzeug's own errors (unknown path, wrong method, body too large) in the same shape."""
    code = _HTTP_CODES.get(error.code or 500, "http_error")
    return error_response(error.code or 500, code, error.description or error.name)


def handle_database_behind(error: DatabaseBehind):
    """503 naming the command to run; the API in its JSON shape. (The webhooks fail open instead.)"""
    if request.path.startswith("/v1/"):
        return error_response(503, "database_behind", str(error))
    return str(error), 503, {"Content-Type": "text/plain; charset=utf-8"}
