"""Twilio webhook authentication: every Twilio-facing view is wrapped in `twilio_signed`."""
from __future__ import annotations

import hmac
import logging
import re
import uuid
from functools import lru_cache, wraps

from flask import Response, request
from werkzeug.wsgi import get_host

from gateway.infra import metrics
from gateway.runtime import Gateway
from gateway.web import current_gateway

log = logging.getLogger(__name__)


def base_url_of(gateway: Gateway, environ: dict) -> str:
    """The scheme and host Twilio uses: GATEWAY_PUBLIC_URL, or the request's own (after
    ProxyFix), host exactly as sent, as Twilio signed it. One definition for the Flask views
    and the /voice/call endpoint: `request.host_url` lower-cases the host and turns punycode
    into Unicode, and the two once disagreed on which requests were genuine."""
    return gateway.settings.public_url or f"{environ['wsgi.url_scheme']}://{get_host(environ)}"


def public_base_url() -> str:
    """`base_url_of` the current Flask request."""
    return base_url_of(current_gateway(), request.environ)


def webhook_url() -> str:
    """The exact URL Twilio signed: the public base, our path, and the query string as sent."""
    query = request.query_string.decode("latin-1")
    return public_base_url() + request.path + (f"?{query}" if query else "")


def signature_refusal(gateway: Gateway, url: str, form, signature: str) -> str | None:
    """Why a form with this X-Twilio-Signature is not one Twilio sent this gateway, or None.

    One HMAC for the usual request, over the URL as we see it; twilio's own check, which tries
    the URL with and without its port, only when that does not match.
    """
    validator = gateway.validator
    if not signature or not (
        hmac.compare_digest(validator.compute_signature(url, form).encode(), signature.encode())
        or validator.validate(url, form, signature)
    ):
        return f"X-Twilio-Signature does not verify for {url}"
    return _shifted_field(form, gateway.settings.twilio_account_sid)


def missing_fields(form, names: tuple[str, ...]) -> str | None:
    """Why a signed form lacks fields Twilio always sends to this webhook, or None."""
    missing = [name for name in names if not form.get(name)]
    return f"missing {', '.join(missing)}, which Twilio always sends" if missing else None


def twilio_signed(view):
    """Refuse (403) any request whose X-Twilio-Signature does not verify; 503 with no token."""

    @wraps(view)
    def checked(*args, **kwargs):
        gateway = current_gateway()
        if gateway.validator is None:
            log.error(
                "TWILIO_AUTH_TOKEN is not set: refusing Twilio webhook %s with 503 until it is",
                request.path,
            )
            return Response("Twilio webhooks are not configured.\n", 503, mimetype="text/plain")
        problem = signature_refusal(gateway, webhook_url(), request.form, request.headers.get("X-Twilio-Signature", ""))
        if problem:
            return _refuse(problem)
        return view(*args, **kwargs)

    return checked


def twilio_fields(*names: str):
    """Refuse (403) a signed form without fields Twilio always sends to this webhook.

    Twilio's signature covers names and values joined with nothing between them, so a
    captured request can be re-cut: a field's value can swallow the next field whole
    (CallSid=CA…CallStatusringing). Such a form lacks a field Twilio never leaves out.
    """

    def decorate(view):
        @wraps(view)
        def checked(*args, **kwargs):
            problem = missing_fields(request.form, names)
            if problem:
                return _refuse(problem)
            return view(*args, **kwargs)

        return checked

    return decorate


#: How Twilio passes a SIP call's custom X- headers: one form field each, named after the header.
CUSTOM_SIP_HEADER = "SipHeader_"

#: Every Twilio SID: two capital letters and 32 hex digits.
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")

#: Twilio's field names: PascalCase words and digits (`MediaUrl0`), or a SIP header passed on
#: (`SipHeader_X-Shared-Id`, `DialSipHeader_X-…` on a <Dial> action).
_FIELD_NAME = re.compile(r"^(?:[A-Z][A-Za-z0-9]*|(?:Dial|Refer)?SipHeader_[A-Za-z][A-Za-z0-9\-_.]*)$")

#: Fields Twilio sends under two names with one value. Voice webhooks always carry both of each
#: pair; no caller-controlled field sorts before `Called` or `Caller`, so a re-cut that moves
#: `To` or `From` leaves its twin behind.
_VOICE_TWINS = (("To", "Called"), ("From", "Caller"))
#: SMS webhooks' twins, compared when both are sent with a value.
_SMS_TWINS = (("MessageSid", "SmsMessageSid"), ("MessageSid", "SmsSid"), ("MessageStatus", "SmsStatus"))

#: Fields whose values the caller or texter writes: they may hold any text at all.
_CALLERS_OWN = ("Body", "CallerName", "From", "Caller", "ForwardedFrom")

#: A Twilio field with its SID value, as it appears inside the text of a re-cut form.
_SID_FIELD_INSIDE = re.compile(r"Sid[A-Z]{2}[0-9a-fA-F]{32}")


#: How `_shifted_field` checks a field's value, by what its name says of it.
_CALLERS_TEXT, _A_SID, _TWILIOS_TEXT = "caller's text", "a SID", "Twilio's text"


@lru_cache(maxsize=1024)
def _field_kind(name: str) -> str | None:
    """What a field of this name holds; None for a name Twilio never uses. Kept per name: a
    gateway sees a few dozen names, and every signed form asks for each of them."""
    if not _FIELD_NAME.match(name):
        return None
    if name in _CALLERS_OWN or CUSTOM_SIP_HEADER in name:
        return _CALLERS_TEXT
    return _A_SID if name.endswith("Sid") else _TWILIOS_TEXT


def _shifted_field(form, account_sid: str | None) -> str | None:
    """Why a form with a valid signature is still not Twilio's, or None.

    A re-cut (see `twilio_fields`) moves the boundaries between names and values, anywhere in
    the text, including inside a value the caller wrote (a `Body`, a `CallerName`, a SIP
    header). It shows as a name Twilio never uses, a name sent twice, a SID with something
    glued to it, an AccountSid that is not ours, a field that no longer equals its twin, or
    Twilio's own fields swallowed into the value of another.

    A name sent twice: the signature covers each name's values sorted, while the gateway reads
    a name's first value, so text a caller wrote (a SIP From) could be re-cut into repeated
    `To` and `Called` fields that sign the same and route the call elsewhere. Twilio sends each
    field once.
    """
    seen = set()
    for name, value in form.items(multi=True):
        if name in seen:
            return f"{name} is sent more than once; Twilio sends each field once"
        seen.add(name)
        kind = _field_kind(name)
        if kind is None:
            return f"{name!r} is not a field name Twilio uses"
        if kind is _CALLERS_TEXT:
            continue
        if kind is _A_SID and value and not _SID.match(value):
            return f"{name} is not a Twilio SID"
        if _SID_FIELD_INSIDE.search(value):
            return f"{name} holds another Twilio field"
    if account_sid and form.get("AccountSid") != account_sid:
        return "AccountSid is not this gateway's TWILIO_ACCOUNT_SID"
    if "CallSid" in form:
        for name, twin in _VOICE_TWINS:
            if (name in form or twin in form) and form.getlist(name) != form.getlist(twin):
                return f"{name} and {twin} differ; Twilio sends them equal"
    for name, twin in _SMS_TWINS:
        if form.get(name) and form.get(twin) and form.getlist(name) != form.getlist(twin):
            return f"{name} and {twin} differ; Twilio sends them equal"
    return None


def simulated_call_form(*, account_sid: str | None, from_number: str, to_number: str) -> dict[str, str]:
    """A new inbound call's /voice/call form as Twilio sends it, for the route test and the CLI."""
    return {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": account_sid or "AC" + "0" * 32,
        "From": from_number,
        "Caller": from_number,
        "To": to_number,
        "Called": to_number,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }


def _refuse(reason: str) -> Response:
    log.warning("refused %s: %s", request.path, reason)
    metrics.signature_failed(request.url_rule.rule)
    return Response("Invalid Twilio signature.\n", 403, mimetype="text/plain")
