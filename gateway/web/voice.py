"""Twilio's voice webhooks (SPEC §4). Each view checks the signature, then calls the core.

Whatever goes wrong, a call-related webhook answers valid TwiML: Twilio gives the caller a
generic error on anything else. With the database down or locked, /voice/call and
/voice/dial-status fail open (gateway/failopen.py): the config's TwiML, the rest spooled.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from gateway import calls, failopen, store
from gateway.safe_text import xml_legal
from gateway.twiml import NO_AGENT_APOLOGY, UNKNOWN_NUMBER_APOLOGY
from gateway.web import current_gateway, db
from gateway.web.callbacks import call_flow
from gateway.web.signature import twilio_fields, twilio_signed

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")

#: How long a webhook waits for another worker's spool replay before going on without it.
REPLAY_WAIT_SECONDS = 2.0


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


def _replay_spool() -> None:
    """Write what an outage spooled before handling a new event of the same calls, in order."""
    gateway = current_gateway()
    if gateway.spool.pending():
        gateway.ensure_schema()
        replayed = failopen.replay(gateway.spool, gateway.engine, config=gateway.config, wait_seconds=REPLAY_WAIT_SECONDS)
        if replayed is None:  # another worker's replay outlasted the wait: answer from the config
            raise failopen.ReplayBusy("another process is still replaying the spool")


def _discard_session(error: Exception) -> None:
    log.error("database unavailable or behind (%s: %s); failing open on %s", type(error).__name__, error, request.path)
    try:
        db().rollback()
    except failopen.DATABASE_ERRORS:
        pass  # the connection is already gone; teardown closes the session


def _inbound_call() -> calls.InboundCall:
    """The call as we keep it: what a caller's SIP trunk put in From or a header is theirs to
    choose, so characters no database or TwiML can carry are dropped here."""
    form = request.form
    return calls.InboundCall(
        call_sid=form.get("CallSid", ""),
        from_number=xml_legal(form.get("From", "")) or None,
        to_number=calls.called_number(xml_legal(form.get("To", ""))),
        shared_id=xml_legal(form.get("SipHeader_X-Shared-Id", "")) or None,
    )


@bp.post("/call")
@twilio_signed
@twilio_fields("CallSid", "AccountSid", "From", "To")
def call() -> Response:
    """An inbound call: route it by the number that was called."""
    inbound = _inbound_call()
    route = current_gateway().config.route_for(inbound.to_number)
    if route is None or not inbound.call_sid:
        log.warning("call %s to %r: that number is not in the config; apologising", inbound.call_sid, inbound.to_number)
        return _apology(UNKNOWN_NUMBER_APOLOGY)
    try:
        _replay_spool()
        return twiml_response(calls.answer_call(db(), route, inbound, call_flow()))
    except failopen.FAIL_OPEN_ERRORS as error:
        _discard_session(error)
        return _call_without_database()


@bp.post("/dial-status")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def dial_status() -> Response:
    """The <Dial>/<Refer> action: record the outcome; on failure, retry or fall back."""
    try:
        _replay_spool()
        conversation, project = _conversation_and_project()
        if conversation is None:
            return _apology()
        attempt = request.args.get("attempt", type=int) or conversation.attempts
        result = calls.dial_result_from_twilio(request.form, attempt)
        route = current_gateway().config.route_for(conversation.to_number or "")
        return twiml_response(
            calls.record_transfer_result(db(), conversation.id, route, project, result, call_flow())
        )
    except failopen.FAIL_OPEN_ERRORS as error:
        _discard_session(error)
        return _dial_result_without_database()


def _call_without_database() -> Response:
    """The number's configured TwiML, the call spooled for when the database is back."""
    inbound = _inbound_call()
    route = current_gateway().config.route_for(inbound.to_number)
    return twiml_response(failopen.answer_call(current_gateway().spool, route, inbound, call_flow()))


def _dial_result_without_database() -> Response:
    """The next attempt the config's chain gives, the result spooled."""
    inbound = _inbound_call()
    result = calls.dial_result_from_twilio(request.form, request.args.get("attempt", 1, type=int))
    return twiml_response(
        failopen.record_transfer_result(
            current_gateway().spool,
            current_gateway().config.route_for(inbound.to_number),
            request.args.get("conversation_id", ""),
            inbound,
            result,
            call_flow(),
        )
    )


@bp.post("/stream-ended")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def stream_ended() -> Response:
    """The <Connect> action: the assistant's stream is over."""
    try:
        _replay_spool()
        conversation, project = _conversation_and_project()
        if conversation is None:
            return _apology()
        return twiml_response(calls.stream_ended(db(), conversation, project, call_flow()))
    except failopen.FAIL_OPEN_ERRORS as error:
        _discard_session(error)
        return _stream_ended_without_database()


def _stream_ended_without_database() -> Response:
    """The project's default destination, from the config, the handoff spooled."""
    inbound = _inbound_call()
    route = current_gateway().config.route_for(inbound.to_number)
    if route is None:
        return _apology()
    conversation_id = request.args.get("conversation_id", "")
    return twiml_response(failopen.stream_ended(current_gateway().spool, route, conversation_id, inbound, call_flow()))


@bp.post("/status")
@twilio_signed
@twilio_fields("CallSid", "AccountSid", "CallStatus")
def status() -> Response:
    """Call status callbacks: record how and when the call ended."""
    form = request.form
    update = calls.CallStatus(
        status=form.get("CallStatus", ""),
        duration_seconds=form.get("CallDuration", type=int),
        sequence=form.get("SequenceNumber", type=int),
    )
    try:
        _replay_spool()
        conversation = store.conversation_by_call_sid(db(), form["CallSid"])
        if conversation is None:
            log.info("status callback for unknown call %s", form["CallSid"])
        else:
            project = current_gateway().config.project_by_key(conversation.project_key)
            calls.record_call_status(db(), conversation, update, project)
    except failopen.FAIL_OPEN_ERRORS as error:
        _discard_session(error)
        failopen.record_call_status(current_gateway().spool, form["CallSid"], update)
    return Response(status=204)


@bp.post("/whisper")
@twilio_signed
@twilio_fields("CallSid", "AccountSid")
def whisper() -> Response:
    """Spoken to the answering agent before the bridge: why this caller is coming."""
    conversation, _project = _conversation_and_project()
    return twiml_response(current_gateway().renderer.whisper(calls.whisper_text(conversation)))


def _database_unavailable(error: Exception) -> Response:
    """The other voice webhooks, with the database down: still an answer Twilio can use."""
    _discard_session(error)
    return _plain_answer()


def _plain_answer() -> Response:
    if request.endpoint == "voice.status":
        return Response(status=204)
    if request.endpoint == "voice.whisper":
        return twiml_response(current_gateway().renderer.whisper(calls.whisper_text(None)))
    return _apology()


def _unexpected_error(error: Exception):
    """A bug must not cost a caller the call: log it and answer as the fail-open path does."""
    if isinstance(error, HTTPException):
        return error
    log.exception("unexpected error on %s; answering from the config", request.path)
    try:
        db().rollback()
        if request.endpoint == "voice.call" and current_gateway().config.route_for(_inbound_call().to_number):
            return _call_without_database()
        if request.endpoint == "voice.dial_status":
            return _dial_result_without_database()
        if request.endpoint == "voice.stream_ended":
            return _stream_ended_without_database()
    except Exception:  # the fallback failed too: the plain answer below needs nothing
        log.exception("the fail-open answer failed as well on %s", request.path)
    return _plain_answer()


for _error in failopen.FAIL_OPEN_ERRORS:
    bp.register_error_handler(_error, _database_unavailable)
bp.register_error_handler(Exception, _unexpected_error)
