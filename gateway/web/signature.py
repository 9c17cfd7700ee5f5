"""Twilio webhook authentication: every Twilio-facing view is wrapped in `twilio_signed`."""
from __future__ import annotations

import logging
from functools import wraps

from flask import Response, request

from gateway import metrics
from gateway.web import current_gateway

log = logging.getLogger(__name__)


def public_base_url() -> str:
    """The scheme and host Twilio uses: GATEWAY_PUBLIC_URL, or the request's own (after ProxyFix)."""
    configured = current_gateway().settings.public_url
    return configured or request.host_url.rstrip("/")


def webhook_url() -> str:
    """The exact URL Twilio signed: the public base, our path, and the query string as sent."""
    query = request.query_string.decode("latin-1")
    return public_base_url() + request.path + (f"?{query}" if query else "")


def twilio_signed(view):
    """Refuse (403) any request whose X-Twilio-Signature does not verify; 503 with no token."""

    @wraps(view)
    def checked(*args, **kwargs):
        validator = current_gateway().validator
        if validator is None:
            log.error(
                "TWILIO_AUTH_TOKEN is not set: refusing Twilio webhook %s with 503 until it is",
                request.path,
            )
            return Response("Twilio webhooks are not configured.\n", 503, mimetype="text/plain")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(webhook_url(), request.form, signature):
            log.warning("refused %s: X-Twilio-Signature does not verify for %s", request.path, webhook_url())
            metrics.signature_failed(request.url_rule.rule)
            return Response("Invalid Twilio signature.\n", 403, mimetype="text/plain")
        return view(*args, **kwargs)

    return checked
