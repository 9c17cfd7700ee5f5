"""Twilio's voice webhooks (SPEC §4). Each view checks the signature, then calls the core.

Whatever goes wrong, a call-related webhook answers valid TwiML: Twilio gives the caller a
generic error on anything else.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from gateway import calls, store
from gateway.twiml import NO_AGENT_APOLOGY, UNKNOWN_NUMBER_APOLOGY
from gateway.web import current_gateway, db
from gateway.web.callbacks import call_flow
from gateway.web.signature import twilio_signed

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")


def twiml_response(body: str) -> Response:
    return Response(body, 200, mimetype="text/xml")


def _apology(message: str = NO_AGENT_APOLOGY) -> Response:
    return twiml_response(current_gateway().renderer.apology(message))


def _conversation_and_project():
    """The conversation named in the callback URL and its project, or (None, None)."""
    conversation_id = request.args.get("conversation_id", "")
    conversation = store.find_by_id(db(), conversation_id) if conversation_id else None
    if conversation is None:
        log.warning("%s for unknown conversation %r", request.path, conversation_id)
        return None, None
    project = current_gateway().config.project_by_key(conversation.project_key)
    if project is None:
        log.error("conversation %s belongs to project %s, no longer configured", conversation.id, conversation.project_key)
        return None, None
    return conversation, project


@bp.post("/call")
@twilio_signed
def call() -> Response:
    """An inbound call: route it by the number that was called."""
    form = request.form
    to_number = form.get("To", "")
    route = current_gateway().config.route_for(to_number)
    call_sid = form.get("CallSid", "")
    if route is None or not call_sid:
        log.warning("call %s to %r: that number is not in the config; apologising", call_sid, to_number)
        return _apology(UNKNOWN_NUMBER_APOLOGY)
    inbound = calls.InboundCall(
        call_sid=call_sid,
        from_number=form.get("From"),
        to_number=to_number,
        shared_id=form.get("SipHeader_X-Shared-Id") or None,
    )
    return twiml_response(calls.answer_call(db(), route, inbound, call_flow()))


@bp.post("/dial-status")
@twilio_signed
def dial_status() -> Response:
    """The <Dial>/<Refer> action: record the outcome; on failure, retry or fall back."""
    conversation, project = _conversation_and_project()
    if conversation is None:
        return _apology()
    attempt = request.args.get("attempt", type=int) or conversation.attempts
    result = calls.dial_result_from_twilio(request.form, attempt)
    route = current_gateway().config.route_for(conversation.to_number or "")
    return twiml_response(
        calls.record_transfer_result(db(), conversation.id, route, project, result, call_flow())
    )


@bp.post("/stream-ended")
@twilio_signed
def stream_ended() -> Response:
    """The <Connect> action: the assistant's stream is over."""
    conversation, project = _conversation_and_project()
    if conversation is None:
        return _apology()
    return twiml_response(calls.stream_ended(db(), conversation, project, call_flow()))


@bp.post("/status")
@twilio_signed
def status() -> Response:
    """Call status callbacks: record how and when the call ended."""
    form = request.form
    conversation = store.conversation_by_call_sid(db(), form.get("CallSid", ""))
    if conversation is None:
        log.info("status callback for unknown call %s", form.get("CallSid"))
        return Response(status=204)
    update = calls.CallStatus(
        status=form.get("CallStatus", ""),
        duration_seconds=form.get("CallDuration", type=int),
        sequence=form.get("SequenceNumber", type=int),
    )
    calls.record_call_status(db(), conversation, update)
    return Response(status=204)


@bp.post("/whisper")
@twilio_signed
def whisper() -> Response:
    """Spoken to the answering agent before the bridge: why this caller is coming."""
    conversation, _project = _conversation_and_project()
    return twiml_response(current_gateway().renderer.whisper(calls.whisper_text(conversation)))
