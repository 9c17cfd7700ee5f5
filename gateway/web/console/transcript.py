"""What was said on a chat or an SMS thread, turn by turn, and who said it.

The customer's and the assistant's turns are the chat lines kept as they happen. On SMS an
agent answers by texting the customer from one of the project's numbers (`POST /sms`), so the
agent's turns are the texts sent to the customer's number while the thread was open.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from gateway.storage import message_store, store
from gateway.storage.models import ChatMessage, Conversation, SmsMessage

#: How much of a chat's first message the conversations list shows.
OPENER_WORDS = 8


@dataclass(frozen=True)
class Turn:
    at: datetime
    #: customer, assistant or agent
    speaker: str
    text: str
    #: an agent's text: how far Twilio got delivering it (sent, delivered, failed, ...)
    delivery: str | None = None


def turns(session: Session, conversation: Conversation) -> list[Turn]:
    """Every turn oldest first; a voice call has none (nothing of it is transcribed)."""
    said = [
        Turn(store.as_utc(line.at), line.role, line.text)
        for line in message_store.transcript(session, conversation.id)
    ]
    texted = [
        Turn(store.as_utc(message.created_at), "agent", message.body, _delivery(message))
        for message in _agent_texts(session, conversation)
    ]
    return sorted(said + texted, key=lambda turn: turn.at)


def _agent_texts(session: Session, conversation: Conversation) -> list[SmsMessage]:
    if conversation.channel != "sms" or not conversation.from_number:
        return []
    query = select(SmsMessage).where(
        SmsMessage.project_key == conversation.project_key,
        SmsMessage.direction == "outbound",
        SmsMessage.to_number == conversation.from_number,
        SmsMessage.created_at >= conversation.started_at,
    )
    if conversation.ended_at is not None:
        query = query.where(SmsMessage.created_at <= conversation.ended_at)
    return list(session.exec(query.order_by(SmsMessage.created_at, SmsMessage.id)))


def _delivery(message: SmsMessage) -> str:
    return f"{message.status} (error {message.error_code})" if message.error_code else message.status


def openers(session: Session, conversations: Iterable[Conversation]) -> dict[str, str]:
    """The first words the customer wrote on each chat, by conversation id (one query a page)."""
    chat_ids = [conversation.id for conversation in conversations if conversation.channel == "chat"]
    if not chat_ids:
        return {}
    lines = session.exec(
        select(ChatMessage.conversation_id, ChatMessage.text)
        .where(ChatMessage.conversation_id.in_(chat_ids), ChatMessage.role == "customer")
        .order_by(ChatMessage.conversation_id, ChatMessage.at, ChatMessage.id)
    )
    first: dict[str, str] = {}
    for conversation_id, text in lines:
        first.setdefault(conversation_id, _first_words(text))
    return first


def _first_words(text: str) -> str:
    words = text.split()
    return " ".join(words[:OPENER_WORDS]) + (" …" if len(words) > OPENER_WORDS else "")
