"""The JSON shapes integrators read (SPEC §5), built from rows. Shared by the API and console."""
from __future__ import annotations

from datetime import datetime

from gateway.storage.models import ChatMessage, Conversation, HandoffEvent, SmsMessage, SmsStatusEvent
from gateway.storage.store import as_utc


def timestamp(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, the form every desktop's date parser accepts."""
    moment = as_utc(moment)
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def history_entry(event: HandoffEvent) -> dict:
    return {
        "state": event.state,
        "at": timestamp(event.at),
        "destination": event.destination,
        "detail": event.detail,
    }


def handoff_state(conversation: Conversation, events: list[HandoffEvent]) -> dict:
    """The screen-pop document: who, why, what was said, and every step so far."""
    return {
        "id": conversation.id,
        "shared_id": conversation.shared_id,
        "data": conversation.data or {},
        "state": conversation.state,
        "topic": conversation.topic,
        "handoff": {
            "destination": conversation.destination,
            "reason": conversation.reason,
            "utterance": conversation.utterance,
            "attempts": conversation.attempts,
            "updated_at": timestamp(conversation.updated_at),
            "history": [history_entry(event) for event in events],
        },
    }


def conversation(conversation: Conversation) -> dict:
    """A conversation as listed by `GET /conversations`."""
    return {
        "id": conversation.id,
        "shared_id": conversation.shared_id,
        "channel": conversation.channel,
        "call_sid": conversation.call_sid,
        "from": conversation.from_number,
        "to": conversation.to_number,
        "state": conversation.state,
        "topic": conversation.topic,
        "destination": conversation.destination,
        "reason": conversation.reason,
        "attempts": conversation.attempts,
        "call_status": conversation.call_status,
        "duration_seconds": conversation.duration_seconds,
        "started_at": timestamp(conversation.started_at),
        "updated_at": timestamp(conversation.updated_at),
        "ended_at": timestamp(conversation.ended_at),
    }


def conversation_detail(row: Conversation, events: list[HandoffEvent]) -> dict:
    """`GET /conversations/{id}`: the listing fields plus the whole handoff state."""
    state = handoff_state(row, events)
    return {**conversation(row), "data": state["data"], "handoff": state["handoff"]}


def message(message: SmsMessage, statuses: list[SmsStatusEvent], explanation: str | None) -> dict:
    """A text as `POST /sms` and `GET /messages/{sid}` show it, its error code in words."""
    return {
        "sid": message.sid,
        "conversation_id": message.conversation_id,
        "direction": message.direction,
        "from": message.from_number,
        "to": message.to_number,
        "body": message.body,
        "status": message.status,
        "error_code": message.error_code,
        "error_explanation": explanation,
        "created_at": timestamp(message.created_at),
        "updated_at": timestamp(message.updated_at),
        "status_history": [
            {"status": event.status, "error_code": event.error_code, "at": timestamp(event.at)} for event in statuses
        ],
    }


def chat_line(line: ChatMessage) -> dict:
    return {"role": line.role, "text": line.text, "at": timestamp(line.at)}
