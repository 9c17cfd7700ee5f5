"""Twilio's SMS webhooks (SPEC §4): inbound texts and delivery callbacks, both signed."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from gateway.storage import message_store
from gateway.texting import messaging
from gateway.voice import call_records
from gateway.infra.safe_text import whole_number, xml_legal
from gateway.web import current_gateway, db
from gateway.web.outbox import outbox
from gateway.web.signature import twilio_signed

log = logging.getLogger(__name__)

bp = Blueprint("sms", __name__, url_prefix="/sms")

#: Twilio takes at most 10 attachments on one MMS; a larger NumMedia is not one of its webhooks.
MAX_MEDIA = 10


def twiml(texts: list[str]) -> Response:
    return Response(current_gateway().renderer.messages(texts), 200, mimetype="text/xml")


@bp.post("/inbound")
@twilio_signed
def inbound() -> Response:
    """A text to one of our numbers: keywords, then a turn of the sender's thread."""
    form = request.form
    to_number, sid = form.get("To", ""), form.get("MessageSid", "")
    route = current_gateway().config.route_for(to_number)
    if route is None:
        log.warning("SMS %s to %r: that number is not in the config; answering nothing", sid, to_number)
        return twiml([])
    if not sid or not form.get("From"):
        log.warning("SMS webhook for %s without MessageSid or From; answering nothing", to_number)
        return twiml([])
    # Text is the sender's to choose: what no database or TwiML can carry is dropped.
    sms = messaging.InboundSms(
        sid=sid,
        from_number=xml_legal(form["From"]),
        to_number=to_number,
        body=xml_legal(form.get("Body", "")),
        media=_media(form),
    )
    try:
        return twiml(messaging.handle_inbound(db(), outbox(), route, sms).replies)
    except call_records.DATABASE_ERRORS as error:
        _database_unavailable(error, f"SMS {sid} from {sms.from_number} was not handled")
        return twiml([])


def _media(form) -> tuple[messaging.Media, ...]:
    """The attachments of an MMS, as Twilio lists them (NumMedia, then MediaUrl0, MediaContentType0, ...)."""
    indexes = range(min(whole_number(form.get("NumMedia", "")) or 0, MAX_MEDIA))
    return tuple(
        messaging.Media(url=xml_legal(url), content_type=xml_legal(form.get(f"MediaContentType{index}", "")))
        for index in indexes
        if (url := form.get(f"MediaUrl{index}"))
    )


@bp.post("/status")
@twilio_signed
def status() -> Response:
    """A delivery callback: kept as sent, applied to the message only if it moves it forward."""
    form = request.form
    sid, state = form.get("MessageSid", ""), form.get("MessageStatus") or form.get("SmsStatus", "")
    if not sid or not state:
        log.warning("SMS status callback without MessageSid or MessageStatus; ignored")
        return Response(status=204)
    error_code = whole_number(form.get("ErrorCode", ""))
    try:
        if message_store.record_status(db(), sid=sid, status=state.lower(), error_code=error_code) is None:
            log.info("status %s for SMS %s, which we have not stored (yet); kept for when it is", state, sid)
        db().commit()
    except call_records.DATABASE_ERRORS as error:
        _database_unavailable(error, f"status {state} (error {error_code or 'none'}) of SMS {sid} was not recorded")
    return Response(status=204)


def _database_unavailable(error: Exception, lost: str) -> None:
    """Answer Twilio anyway: it does not retry a failed SMS webhook, so a 500 would save nothing.

    A STOP lost this way still holds: Twilio keeps its own opt-out list, and a later send to
    that number fails with 21610, which records the opt-out here.
    """
    log.error("database unavailable (%s: %s): %s", type(error).__name__, error, lost)
    try:
        db().rollback()
    except call_records.DATABASE_ERRORS:
        pass  # the connection is already gone; teardown closes the session
