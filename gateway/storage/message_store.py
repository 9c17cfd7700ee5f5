"""Persistence for texts, opt-outs, SMS threads and chat transcripts. No HTTP, no Twilio.

Every write is staged in the caller's session; the caller commits (gateway/texting/messaging.py and
gateway/texting/chat.py, which end their units of work before any call to Twilio or an assistant).
"""
from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import Session, select

from gateway.storage.models import ChatMessage, Conversation, SmsMessage, SmsOptOut, SmsStatusEvent, SmsThread, utcnow
from gateway.storage.store import insert_ignoring_conflict

#: How far along a message is. Callbacks arrive out of order: a lower rank never replaces a higher.
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "receiving": 1,
    "sending": 2,
    "sent": 3,
    "received": 4,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}


def _rank(status: str | None) -> int:
    """Statuses Twilio may add later rank lowest, so they never hide a known final one."""
    return STATUS_RANK.get(status or "", -1)


# --- messages -------------------------------------------------------------------------------

def message_by_sid(session: Session, sid: str, project_key: str | None = None) -> SmsMessage | None:
    query = select(SmsMessage).where(SmsMessage.sid == sid)
    if project_key is not None:
        query = query.where(SmsMessage.project_key == project_key)
    return session.exec(query).first()


def record_inbound(
    session: Session,
    *,
    sid: str,
    project_key: str,
    from_number: str,
    to_number: str,
    body: str,
) -> bool:
    """Keep a received text; False when this MessageSid was already seen (Twilio retried)."""
    now = utcnow()
    inserted = insert_ignoring_conflict(
        session,
        SmsMessage.__table__,
        dict(
            sid=sid,
            project_key=project_key,
            conversation_id=None,
            direction="inbound",
            from_number=from_number,
            to_number=to_number,
            body=body,
            status="received",
            error_code=None,
            created_at=now,
            updated_at=now,
        ),
    )
    return bool(inserted)


def link_message(session: Session, sid: str, conversation_id: str) -> None:
    message = message_by_sid(session, sid)
    if message is not None:
        message.conversation_id = conversation_id
        session.add(message)


def add_outbound(
    session: Session,
    *,
    sid: str,
    project_key: str,
    conversation_id: str | None,
    from_number: str,
    to_number: str,
    body: str,
    status: str,
    error_code: int | None,
) -> SmsMessage:
    """Keep a sent text, folding in any status callback that beat Twilio's answer to us."""
    message = SmsMessage(
        sid=sid,
        project_key=project_key,
        conversation_id=conversation_id,
        direction="outbound",
        from_number=from_number,
        to_number=to_number,
        body=body,
        status=status,
        error_code=error_code,
    )
    for event in status_events(session, sid):
        _apply_status(message, event.status, event.error_code)
    session.add(message)
    return message


def _apply_status(message: SmsMessage, status: str, error_code: int | None) -> bool:
    """Move forward only; an error code is kept when its status is applied or none is known yet."""
    moved = _rank(status) > _rank(message.status)
    if moved:
        message.status = status
    if error_code is not None and (moved or message.error_code is None):
        message.error_code = error_code
    return moved


def record_status(session: Session, *, sid: str, status: str, error_code: int | None) -> SmsMessage | None:
    """Keep a delivery callback; update the message it belongs to when that row exists yet."""
    session.add(SmsStatusEvent(message_sid=sid, status=status, error_code=error_code))
    message = session.exec(select(SmsMessage).where(SmsMessage.sid == sid).with_for_update()).first()
    if message is not None:
        _apply_status(message, status, error_code)
        message.updated_at = utcnow()
        session.add(message)
    return message


def status_events(session: Session, sid: str) -> list[SmsStatusEvent]:
    return list(
        session.exec(
            select(SmsStatusEvent).where(SmsStatusEvent.message_sid == sid).order_by(SmsStatusEvent.at, SmsStatusEvent.id)
        )
    )


# --- opt-outs -------------------------------------------------------------------------------

def is_opted_out(session: Session, project_key: str, number: str) -> bool:
    return (
        session.exec(
            select(SmsOptOut.id).where(SmsOptOut.project_key == project_key, SmsOptOut.number == number)
        ).first()
        is not None
    )


def opt_out(session: Session, project_key: str, number: str, *, keyword: str) -> None:
    """Idempotent: a second STOP (or Twilio's 21610) keeps the first record."""
    insert_ignoring_conflict(
        session,
        SmsOptOut.__table__,
        dict(project_key=project_key, number=number, keyword=keyword, at=utcnow()),
    )


def opt_in(session: Session, project_key: str, number: str) -> None:
    session.exec(delete(SmsOptOut).where(SmsOptOut.project_key == project_key, SmsOptOut.number == number))


# --- conversations: chats and SMS threads ---------------------------------------------------

def create_conversation(
    session: Session,
    *,
    project_key: str,
    channel: str,
    shared_id: str | None = None,
    data: dict | None = None,
    from_number: str | None = None,
    to_number: str | None = None,
) -> Conversation:
    now = utcnow()
    conversation = Conversation(
        project_key=project_key,
        channel=channel,
        shared_id=shared_id,
        data=data or {},
        from_number=from_number,
        to_number=to_number,
        started_at=now,
        updated_at=now,
    )
    session.add(conversation)
    session.flush()
    return conversation


def open_thread(session: Session, project_key: str, customer_number: str, our_number: str) -> Conversation:
    """The customer's open SMS conversation, made on first sight; racing texts share one."""
    thread = _thread(session, project_key, customer_number)
    if thread is None:
        conversation = create_conversation(
            session, project_key=project_key, channel="sms", from_number=customer_number, to_number=our_number
        )
        insert_ignoring_conflict(
            session,
            SmsThread.__table__,
            dict(project_key=project_key, customer_number=customer_number, conversation_id=conversation.id),
        )
        thread = _thread(session, project_key, customer_number)
        if thread.conversation_id != conversation.id:  # another text won the race: drop ours
            session.delete(conversation)
            session.flush()
    return session.get(Conversation, thread.conversation_id)


def _thread(session: Session, project_key: str, customer_number: str) -> SmsThread | None:
    return session.exec(
        select(SmsThread).where(SmsThread.project_key == project_key, SmsThread.customer_number == customer_number)
    ).first()


def close_conversation(session: Session, conversation: Conversation) -> None:
    """End a chat or SMS thread; the customer's next text starts a new thread."""
    if conversation.ended_at is None:
        conversation.ended_at = utcnow()
        conversation.updated_at = conversation.ended_at
        session.add(conversation)
    session.exec(delete(SmsThread).where(SmsThread.conversation_id == conversation.id))


def add_chat_message(session: Session, conversation: Conversation, *, role: str, text: str) -> ChatMessage:
    line = ChatMessage(conversation_id=conversation.id, role=role, text=text)
    conversation.updated_at = line.at
    session.add(line)
    session.add(conversation)
    return line


def last_customer_text(session: Session, conversation_id: str) -> str | None:
    """What the customer said last, for the note that tells an agent why they are waiting."""
    return session.exec(
        select(ChatMessage.text)
        .where(ChatMessage.conversation_id == conversation_id, ChatMessage.role == "customer")
        .order_by(ChatMessage.at.desc(), ChatMessage.id.desc())
        .limit(1)
    ).first()


def transcript(session: Session, conversation_id: str) -> list[ChatMessage]:
    """Oldest first, for the console's timeline."""
    return list(
        session.exec(
            select(ChatMessage).where(ChatMessage.conversation_id == conversation_id).order_by(ChatMessage.at, ChatMessage.id)
        )
    )
