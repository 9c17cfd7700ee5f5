"""The handoff state machine (SPEC §2): which transitions exist, and recording them.

Every change of a conversation's state is one history entry plus the new state on the
conversation row, written in one transaction. No Flask here.
"""
from __future__ import annotations

import re
from datetime import datetime

from sqlmodel import Session

from gateway import jsonlog, metrics, store
from gateway.models import Conversation, utcnow

INITIATED = "handoff_initiated"
COMPLETED = "handoff_completed"
FAILED = "handoff_failed"
LIFECYCLE_STATES = (INITIATED, COMPLETED, FAILED)

_NEXT_STATES: dict[str | None, set[str]] = {
    None: {INITIATED},
    INITIATED: {COMPLETED, FAILED},
    FAILED: {INITIATED},
    COMPLETED: set(),
}

TOPIC_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


class TransitionError(Exception):
    """A state change the lifecycle does not allow; the message says what is allowed."""


def check_topic(topic: str) -> str:
    """A topic is any snake_case name that is not one of the lifecycle states."""
    if not TOPIC_PATTERN.match(topic) or len(topic) > 64:
        raise ValueError(f"topic {topic!r} must be a snake_case name such as customer_refund")
    if topic in LIFECYCLE_STATES:
        raise ValueError(f"{topic} is a lifecycle state, not a topic")
    return topic


def can_initiate(conversation: Conversation) -> bool:
    return INITIATED in _NEXT_STATES[conversation.state]


def transition(
    session: Session,
    conversation: Conversation,
    state: str,
    *,
    destination: str | None = None,
    detail: str | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Move to `state` and record it. False (and nothing written) for a retried webhook."""
    if state not in _NEXT_STATES[conversation.state]:
        allowed = ", ".join(sorted(_NEXT_STATES[conversation.state])) or "nothing"
        raise TransitionError(
            f"cannot go from {conversation.state or 'no handoff'} to {state}; allowed: {allowed}"
        )
    destination = destination or conversation.destination
    if not store.add_event(
        session, conversation, state=state, destination=destination, detail=detail, dedupe_key=dedupe_key, at=at
    ):
        session.rollback()
        return False
    conversation.state = state
    conversation.destination = destination
    if state == INITIATED:
        conversation.attempts += 1
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    jsonlog.bind(conversation_id=conversation.id)
    metrics.handoff_recorded(state, destination)
    return True


def initiate(
    session: Session,
    conversation: Conversation,
    *,
    destination: str,
    reason: str | None,
    utterance: str | None,
    detail: str | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Start a handoff attempt to `destination`, keeping why and what was said before it."""
    conversation.reason = reason
    conversation.utterance = utterance
    return transition(
        session, conversation, INITIATED, destination=destination, detail=detail, dedupe_key=dedupe_key
    )


def set_topic(session: Session, conversation: Conversation, topic: str) -> None:
    """Keep a topic state beside the lifecycle state, and in the history."""
    check_topic(topic)
    if conversation.topic == topic:
        return
    store.add_event(session, conversation, state=topic, destination=conversation.destination)
    conversation.topic = topic
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
