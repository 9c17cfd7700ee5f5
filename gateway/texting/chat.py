"""The chat engine: one turn of a web chat or SMS thread, and the handoff it may end in.

The project's `assistant_webhook` answers each turn; without one, the destinations'
`handoff_keywords` decide. Shared by the chat API and the SMS webhook. No Flask here.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated

import requests
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from sqlmodel import Session

from gateway.handoffs import catalog, handoff
from gateway.infra import strict_json
from gateway.storage import message_store
from gateway.config.file import ProjectConfig
from gateway.config.destinations import Destination
from gateway.errors import GatewayError, Refusal
from gateway.storage.models import Conversation, utcnow
from gateway.infra.safe_text import NOT_BLANK

log = logging.getLogger(__name__)

#: Twilio waits 15 s for an SMS webhook; the assistant gets a third of that.
ASSISTANT_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_LENGTH = 4000
CHAT_CHANNELS = ("chat", "sms")

INVALID_MESSAGE = Refusal(
    "invalid_message", f"`message` must be text that is not blank, of at most {MAX_MESSAGE_LENGTH} characters."
)
#: A customer's turn: some text, not all whitespace. The chat API takes (and documents) its
#: `message` as one; `respond` checks it again for the SMS threads, whose texts come from Twilio.
CustomerMessage = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_LENGTH, pattern=NOT_BLANK), INVALID_MESSAGE]
_CUSTOMER_MESSAGE = TypeAdapter(CustomerMessage)

DEFAULT_HANDOFF_REPLY = "Let me connect you with someone from our team."
APOLOGY = "Sorry, we cannot answer right now. Please try again in a few minutes."


class AssistantHandoff(BaseModel):
    model_config = ConfigDict(extra="ignore")

    destination: str | None = Field(None, max_length=100)
    reason: str | None = Field(None, max_length=200)
    utterance: str | None = Field(None, max_length=1000)
    data: dict = Field(default_factory=dict)
    topic: handoff.Topic | None = None


class AssistantAnswer(BaseModel):
    """What the assistant webhook must answer: `{response, handoff?}`."""

    model_config = ConfigDict(extra="ignore")

    response: str = ""
    handoff: AssistantHandoff | None = None


@dataclass(frozen=True)
class Turn:
    conversation: Conversation
    response: str
    #: The destination the conversation was handed to in this turn, if it was.
    handoff: Destination | None = None


def start(
    session: Session,
    project: ProjectConfig,
    *,
    shared_id: str | None = None,
    data: dict | None = None,
) -> Conversation:
    conversation = message_store.create_conversation(
        session, project_key=project.key, channel="chat", shared_id=shared_id, data=data
    )
    session.commit()
    return conversation


def check_open(conversation: Conversation) -> None:
    """Only a live chat or SMS thread without a handoff takes another turn (409 otherwise)."""
    if conversation.channel not in CHAT_CHANNELS:
        raise GatewayError(409, "not_a_chat", f"Conversation {conversation.id} is a {conversation.channel} conversation, not a chat.")
    if conversation.state is not None:
        raise GatewayError(
            409,
            "conversation_handed_off",
            f"Conversation {conversation.id} was handed off to {conversation.destination}; the agent answers now.",
        )
    if conversation.ended_at is not None:
        raise GatewayError(409, "conversation_closed", f"Conversation {conversation.id} is closed; create a new chat.")


def end_on_handoff(conversation: Conversation) -> None:
    """A web chat ends when it is handed off (SPEC §5): the agent takes the customer on elsewhere.

    An SMS thread stays open: the customer goes on texting the same number.
    """
    if conversation.channel == "chat" and conversation.ended_at is None:
        conversation.ended_at = utcnow()


def respond(session: Session, project: ProjectConfig, conversation: Conversation, message: object) -> Turn:
    """Keep the customer's message, get the reply, and hand off when the reply says so.

    The customer's message is committed before the assistant is asked (no lock is held while it
    thinks, and a failed turn keeps it); the reply or handoff is committed at the end.
    """
    try:
        _CUSTOMER_MESSAGE.validate_python(message)
    except ValidationError:
        raise INVALID_MESSAGE.error("message") from None
    check_open(conversation)
    message_store.add_chat_message(session, conversation, role="customer", text=message)
    session.commit()
    if project.assistant_webhook:
        answer = ask_assistant(project.assistant_webhook, conversation.id, message)
    else:
        answer = _keyword_answer(session, project, message)
    if answer.handoff is None:
        message_store.add_chat_message(session, conversation, role="assistant", text=answer.response)
        turn = Turn(conversation, answer.response)
    else:
        turn = _hand_off(session, project, conversation, answer)
    session.commit()
    return turn


def _hand_off(session: Session, project: ProjectConfig, conversation: Conversation, answer: AssistantAnswer) -> Turn:
    wanted = answer.handoff
    name = wanted.destination or project.default_destination
    entry = catalog.find(session, project, name)
    if entry is None:
        raise GatewayError(502, "assistant_error", f"The assistant handed off to {name!r}, which is not a destination of this project.")
    destination = entry.destination
    utterance = wanted.utterance or destination.utterance
    if wanted.data:
        conversation.data = {**(conversation.data or {}), **wanted.data}
    try:
        # The dedupe key makes a concurrent turn's handoff insert nothing (SQLite locks no row).
        started = handoff.initiate(
            session,
            conversation,
            destination=destination.name,
            reason=wanted.reason or destination.reason or "handoff_requested",
            utterance=utterance,
            dedupe_key=f"attempt:{conversation.attempts + 1}",
        )
    except handoff.TransitionError:  # a concurrent turn handed off first
        started = False
    if not started:
        session.rollback()
        session.refresh(conversation)
        check_open(conversation)
        raise GatewayError(409, "conversation_handed_off", f"Conversation {conversation.id} was handed off just now.")
    if wanted.topic:
        handoff.set_topic(session, conversation, wanted.topic)
    end_on_handoff(conversation)
    response = answer.response if answer.response.strip() else utterance or DEFAULT_HANDOFF_REPLY
    message_store.add_chat_message(session, conversation, role="assistant", text=response)
    log.info("conversation %s handed off to %s (%s)", conversation.id, destination.name, conversation.reason)
    return Turn(conversation, response, destination)


def ask_assistant(url: str, conversation_id: str, message: str) -> AssistantAnswer:
    """POST the turn to the assistant; any failure is a 502 that names what went wrong."""
    try:
        reply = requests.post(
            url, json={"conversation_id": conversation_id, "message": message}, timeout=ASSISTANT_TIMEOUT_SECONDS
        )
    except requests.ConnectionError as error:  # ConnectTimeout included: it never got the turn
        raise _assistant_error(f"could not be reached ({type(error).__name__})") from None
    except requests.Timeout:
        raise _assistant_error(f"did not answer within {ASSISTANT_TIMEOUT_SECONDS:g} s") from None
    except requests.RequestException as error:
        raise _assistant_error(f"failed ({type(error).__name__})") from None
    if reply.status_code != 200:
        raise _assistant_error(f"answered HTTP {reply.status_code}")
    try:
        answer = AssistantAnswer.model_validate(strict_json.loads(reply.content))
    except ValueError as error:  # not JSON, or pydantic's ValidationError
        detail = _first_problem(error) if isinstance(error, ValidationError) else "a body that is not JSON"
        raise _assistant_error(f"answered {detail}") from None
    if answer.handoff is None and not answer.response.strip():
        # Nothing to say and no one to hand to: Twilio refuses an empty <Message>, a chat shows nothing.
        raise _assistant_error("answered a blank `response` without a handoff")
    return answer


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    return f"an invalid {where} ({first['msg'].removeprefix('Value error, ')})"


def _assistant_error(what: str) -> GatewayError:
    return GatewayError(502, "assistant_error", f"The assistant webhook {what}; the conversation stays open, try again.")


def _keyword_answer(session: Session, project: ProjectConfig, message: str) -> AssistantAnswer:
    """Without an assistant: a destination's keyword in the message hands off there."""
    text = message.lower()
    keywords = []
    for entry in catalog.list_destinations(session, project):
        for keyword in entry.destination.handoff_keywords:
            keywords.append(keyword)
            if re.search(rf"(?<!\w){re.escape(keyword)}(?!\w)", text):
                return AssistantAnswer(handoff=AssistantHandoff(destination=entry.destination.name))
    if keywords:
        return AssistantAnswer(response=f'Thanks for your message. To talk to a person, reply "{keywords[0]}".')
    return AssistantAnswer(response="Thanks for your message; we will get back to you soon.")


def close(session: Session, conversation: Conversation) -> None:
    if conversation.channel not in CHAT_CHANNELS:
        raise GatewayError(409, "not_a_chat", f"Conversation {conversation.id} is a {conversation.channel} conversation, not a chat.")
    message_store.close_conversation(session, conversation)
    session.commit()
