"""What happens on a call: answering it and building the TwiML for its current handoff.

Called by the voice blueprint with plain values; knows nothing of Flask or signatures.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session

from gateway import catalog, handoff, store
from gateway.config import NumberRoute, ProjectConfig
from gateway.models import Conversation
from gateway.routing import CallContext, plan_transfer
from gateway.twiml import NO_AGENT_APOLOGY, Links, TwimlRenderer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundCall:
    """The fields of Twilio's voice webhook that the gateway keeps."""

    call_sid: str
    from_number: str | None
    to_number: str | None
    shared_id: str | None = None


def context_of(conversation: Conversation) -> CallContext:
    return CallContext(
        conversation_id=conversation.id,
        shared_id=conversation.shared_id,
        caller_id=conversation.from_number,
        called_number=conversation.to_number,
        call_sid=conversation.call_sid,
        reason=conversation.reason,
        topic=conversation.topic,
        data=conversation.data or {},
    )


def answer_call(
    session: Session, route: NumberRoute, call: InboundCall, renderer: TwimlRenderer, links: Links
) -> str:
    """Hand a new call to its number's destination; a repeated webhook gets the same TwiML."""
    conversation, created = store.get_or_create_call(
        session,
        call_sid=call.call_sid,
        project_key=route.project.key,
        from_number=call.from_number,
        to_number=call.to_number,
        shared_id=call.shared_id,
    )
    if created:
        destination = route.project.destination(route.number.destination)
        handoff.initiate(
            session,
            conversation,
            destination=destination.name,
            reason=destination.reason,
            utterance=destination.utterance,
            dedupe_key="call:first-attempt",
        )
    # A racing twin of this webhook may not have recorded its attempt yet: same number, same place.
    name = conversation.destination or route.number.destination
    return transfer_twiml(session, conversation, route.project, renderer, links, destination_name=name)


def transfer_twiml(
    session: Session,
    conversation: Conversation,
    project: ProjectConfig,
    renderer: TwimlRenderer,
    links: Links,
    *,
    destination_name: str | None = None,
) -> str:
    """The TwiML that carries the conversation to its current (or the named) destination."""
    name = destination_name or conversation.destination or project.default_destination
    entry = catalog.find(session, project, name)
    if entry is None:
        log.error(
            "conversation %s: destination %r no longer exists; apologising",
            conversation.id,
            name,
        )
        return renderer.apology(NO_AGENT_APOLOGY)
    transfer = plan_transfer(
        entry.destination,
        context_of(conversation),
        sip_domain=project.sip_domain,
        utterance=conversation.utterance,
    )
    return renderer.transfer(transfer, links, conversation.id)
