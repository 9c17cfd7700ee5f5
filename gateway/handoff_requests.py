"""An assistant or integrator asks for a handoff (SPEC §5 `POST /conversations/{id}/handoff`).

Validate, record `handoff_initiated` with the context; on a live call redirect it through
Twilio's REST API, end a web chat, and text an SMS thread's agent. If Twilio refuses or does not answer, `handoff_failed` is recorded and the
call simply stays where it was: it is never dropped.
"""
from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field
from requests import RequestException
from sqlmodel import Session
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from gateway.handoffs import catalog, handoff
from gateway.storage import message_store, store
from gateway.texting import chat, messaging
from gateway.voice import calls
from gateway.config.file import ProjectConfig
from gateway.errors import GatewayError
from gateway.storage.models import Conversation
from gateway.infra.safe_text import NO_NUL, NOT_BLANK

log = logging.getLogger(__name__)


class HandoffRequest(BaseModel):
    """The request body; every field optional, the destination defaulting to the project's."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    destination: str | None = Field(
        None, max_length=100, pattern=NOT_BLANK, description="Defaults to the project's default_destination."
    )
    reason: str | None = Field(None, max_length=200, pattern=NO_NUL)
    utterance: str | None = Field(None, max_length=1000, pattern=NO_NUL)
    data: dict | None = Field(None, description="Free-form; no string in it may hold NUL.")
    topic: handoff.Topic | None = None
    shared_id: str | None = Field(None, max_length=200, pattern=NOT_BLANK)


def request_handoff(
    session: Session,
    project: ProjectConfig,
    conversation_id: str,
    request: HandoffRequest,
    *,
    twilio: Client | None,
    flow: calls.CallFlow,
    outbox: messaging.Outbox,
) -> Conversation:
    """Record the handoff, then move a live call; raises GatewayError with what went wrong."""
    conversation = store.conversation_for_update(session, conversation_id)
    if conversation is None or conversation.project_key != project.key:
        raise GatewayError(404, "conversation_not_found", f"No conversation {conversation_id!r} in this project.")
    name = request.destination or project.default_destination
    entry = catalog.find(session, project, name)
    if entry is None:
        raise GatewayError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    if conversation.channel == "voice" and conversation.ended_at is not None:
        raise GatewayError(409, "call_ended", "The call has already ended; there is nobody to hand off.")
    if conversation.channel in chat.CHAT_CHANNELS and conversation.ended_at is not None and conversation.state is None:
        raise GatewayError(
            409, "conversation_closed", f"The {conversation.channel} conversation is closed; there is nobody to hand off."
        )
    if not handoff.can_initiate(conversation):
        raise GatewayError(
            409,
            "handoff_in_progress",
            f"This conversation is already {conversation.state} to {conversation.destination!r}; "
            "a new handoff can start after it fails.",
        )
    if request.shared_id is not None:
        conversation.shared_id = request.shared_id
    if request.data:
        conversation.data = {**(conversation.data or {}), **request.data}
    if request.topic:
        handoff.set_topic(session, conversation, request.topic)
    utterance = request.utterance if request.utterance is not None else entry.destination.utterance
    # The attempt's dedupe key makes a racing handoff (another API call, a dial result's retry,
    # the assistant's stream ending) insert nothing: SQLite has no row lock to serialise them.
    started = handoff.initiate(
        session,
        conversation,
        destination=entry.destination.name,
        reason=request.reason or entry.destination.reason,
        utterance=utterance,
        dedupe_key=f"attempt:{conversation.attempts + 1}",
    )
    if not started:
        session.rollback()
        raise GatewayError(409, "handoff_in_progress", "Another handoff of this conversation started just now.")
    chat.end_on_handoff(conversation)
    session.commit()
    if conversation.channel == "voice":
        _redirect_live_call(session, project, conversation, twilio, flow)
    elif conversation.channel == "sms":
        _tell_the_agent_by_text(session, outbox, project, conversation, entry.destination)
    return conversation


def _tell_the_agent_by_text(
    session: Session, outbox: messaging.Outbox, project: ProjectConfig, conversation: Conversation, destination
) -> None:
    """An SMS thread handed off by the API: its agent is texted the same note as after a keyword
    or assistant handoff, or nobody would know the customer is waiting."""
    messaging.notify_destination(
        session, outbox, project, conversation, destination,
        sender=conversation.to_number or "",
        last_message=message_store.last_customer_text(session, conversation.id) or "",
    )


def _redirect_live_call(
    session: Session, project: ProjectConfig, conversation: Conversation, twilio: Client | None, flow: calls.CallFlow
) -> None:
    attempt = conversation.attempts
    if twilio is None:
        _fail(session, conversation, attempt, "Twilio credentials are not configured")
        raise GatewayError(
            503, "twilio_not_configured", "Set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to move live calls."
        )
    twiml = calls.transfer_twiml(session, conversation, project, flow)
    try:
        twilio.calls(conversation.call_sid).update(twiml=twiml)
    except TwilioRestException as error:
        _fail(session, conversation, attempt, f"Twilio refused the redirect: {error.code} {error.msg}")
        raise GatewayError(
            502,
            "twilio_error",
            f"Twilio refused to redirect the call (error {error.code}: {error.msg}); the caller stays where they were.",
        ) from None
    except RequestException as error:
        _fail(session, conversation, attempt, f"Twilio did not answer: {type(error).__name__}")
        raise GatewayError(
            502,
            "twilio_unreachable",
            "Twilio did not answer in time; the caller stays where they were. Try again.",
        ) from None


def _fail(session: Session, conversation: Conversation, attempt: int, detail: str) -> None:
    """Record the API's attempt as failed, unless a callback moved the call on meanwhile.

    A redirect that timed out may still have been applied: its <Dial> result can arrive (and
    start the next attempt, or complete) before Twilio's answer to us gives up. That attempt's
    outcome is then Twilio's word, not ours.
    """
    current = store.conversation_for_update(session, conversation.id)
    if current is None or current.attempts != attempt or current.state != handoff.INITIATED:
        log.warning(
            "conversation %s: redirect for attempt %s failed (%s), but the call has moved on; not recorded",
            conversation.id, attempt, detail,
        )
        session.rollback()
        return
    log.warning("conversation %s: handoff failed: %s", conversation.id, detail)
    handoff.transition(session, current, handoff.FAILED, detail=detail, dedupe_key=f"result:{attempt}")
    session.commit()
