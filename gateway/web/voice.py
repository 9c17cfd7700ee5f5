"""Twilio's voice webhooks (SPEC §4). Each view checks the signature, then calls the core."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from gateway import calls
from gateway.twiml import UNKNOWN_NUMBER_APOLOGY, Links
from gateway.web import current_gateway, db
from gateway.web.signature import public_base_url, twilio_signed

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")


def twiml_response(body: str) -> Response:
    return Response(body, 200, mimetype="text/xml")


def links() -> Links:
    return Links(public_base_url())


@bp.post("/call")
@twilio_signed
def call() -> Response:
    """An inbound call: route it by the number that was called."""
    gateway = current_gateway()
    form = request.form
    to_number = form.get("To", "")
    route = gateway.config.route_for(to_number)
    if route is None:
        log.warning("call %s to %r: that number is not in the config; apologising", form.get("CallSid"), to_number)
        return twiml_response(gateway.renderer.apology(UNKNOWN_NUMBER_APOLOGY))
    call_sid = form.get("CallSid", "")
    if not call_sid:
        log.warning("voice webhook without CallSid for %s; apologising", to_number)
        return twiml_response(gateway.renderer.apology(UNKNOWN_NUMBER_APOLOGY))
    inbound = calls.InboundCall(
        call_sid=call_sid,
        from_number=form.get("From"),
        to_number=to_number,
        shared_id=form.get("SipHeader_X-Shared-Id") or None,
    )
    return twiml_response(calls.answer_call(db(), route, inbound, gateway.renderer, links()))
