"""Twilio's voice webhooks (SPEC §4). Each view checks the signature, then runs a use case.

Whatever goes wrong, a call-related webhook answers valid TwiML: Twilio gives the caller a
generic error on anything else. Each use case (gateway/voice/calls.py) runs on the database; with
the database down, locked or still replaying, the same use case runs on the spool: the state
is assumed from the callback URL and the config, and the records wait for replay.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from gateway.storage import store
from gateway.voice import call_records, calls
from gateway.voice.callflow import CALL_FIELDS, CallStatus, InboundCall
from gateway.voice.twiml import NO_AGENT_APOLOGY, UNKNOWN_NUMBER_APOLOGY
from gateway.web import current_gateway, db
from gateway.web.callbacks import call_flow
from gateway.web.signature import twilio_fields, twilio_signed

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")

def twiml_response(body: str) -> Response:
    return Response(body, 200, mimetype="text/xml")


def _apology(message: str = NO_AGENT_APOLOGY) -> Response:
    return twiml_response(current_gateway().renderer.apology(message))


def _on_database_else_spool(use_case):
    return calls.on_database_else_spool(current_gateway(), use_case)


def _discard_session(error: Exception) -> None:
    log.error("database unavailable (%s: %s) on %s", type(error).__name__, error, request.path)
    try:
        db().rollback()
    except call_records.DATABASE_ERRORS:
        pass  # the connection is already gone; teardown closes the session


def _inbound_call() -> InboundCall:
    return InboundCall.from_twilio(request.form)


@bp.post("/call")
@twilio_signed
@twilio_fields(*CALL_FIELDS)
def call() -> Response:
    """An inbound call: route it by the number that was called (usually answered by
    gateway/web/inbound_call.py before Flask; this view answers what that leaves to Flask)."""
    inbound = _inbound_call()
    route = current_gateway().config.route_for(inbound.to_number)
    if route is None or not inbound.call_sid:
        log.warning("call %s to %r: that number is not in the config; apologising", inbound.call_sid, inbound.to_number)
        return _apology(UNKNOWN_NUMBER_APOLOGY)
    flow = call_flow()
    return twiml_response(calls.take_call(current_gateway(), route, inbound, flow))


@bp.post("/dial-status")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def dial_status() -> Response:
    """The <Dial>/<Refer> action: record the outcome; on failure, retry or fall back."""
    conversation_id = request.args.get("conversation_id", "")
    attempt = request.args.get("attempt", type=int)
    inbound, form, flow = _inbound_call(), request.form, call_flow()
    twiml = _on_database_else_spool(
        lambda storage: calls.settle_transfer(storage, conversation_id, inbound, form, attempt, flow)
    )
    return twiml_response(twiml) if twiml is not None else _unknown_conversation()


@bp.post("/stream-ended")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def stream_ended() -> Response:
    """The <Connect> action: the assistant's stream is over."""
    conversation_id = request.args.get("conversation_id", "")
    inbound, flow = _inbound_call(), call_flow()
    twiml = _on_database_else_spool(lambda storage: calls.end_stream(storage, conversation_id, inbound, flow))
    return twiml_response(twiml) if twiml is not None else _unknown_conversation()


def _unknown_conversation() -> Response:
    log.warning("%s for unknown conversation %r (or its project is no longer configured)", request.path, request.args.get("conversation_id"))
    return _apology()


@bp.post("/status")
@twilio_signed
@twilio_fields("CallSid", "AccountSid", "CallStatus")
def status() -> Response:
    """Call status callbacks: record how and when the call ended."""
    form = request.form
    update = CallStatus(
        status=form.get("CallStatus", ""),
        duration_seconds=form.get("CallDuration", type=int),
        sequence=form.get("SequenceNumber", type=int),
    )
    _on_database_else_spool(lambda storage: calls.report_status(storage, form["CallSid"], update))
    return Response(status=204)


@bp.post("/whisper")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def whisper() -> Response:
    """Spoken to the answering agent before the bridge: why this caller is coming."""
    conversation_id = request.args.get("conversation_id", "")
    conversation = store.find_by_id(db(), conversation_id) if conversation_id else None
    return twiml_response(current_gateway().renderer.whisper(calls.whisper_text(conversation)))


def _database_unavailable(error: Exception) -> Response:
    """The whisper, with the database down: still an answer Twilio can use."""
    _discard_session(error)
    return _plain_answer()


def _plain_answer() -> Response:
    if request.endpoint == "voice.status":
        return Response(status=204)
    if request.endpoint == "voice.whisper":
        return twiml_response(current_gateway().renderer.whisper(calls.whisper_text(None)))
    return _apology()


def _unexpected_error(error: Exception):
    """Even the fail-open answer failed (or a bug outside a use case): an answer that needs nothing."""
    if isinstance(error, HTTPException):
        return error
    log.exception("unexpected error on %s; answering plainly", request.path)
    return _plain_answer()


for _error in call_records.FAIL_OPEN_ERRORS:
    bp.register_error_handler(_error, _database_unavailable)
bp.register_error_handler(Exception, _unexpected_error)
