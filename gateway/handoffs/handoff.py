"""The handoff state machine (SPEC §2): which transitions exist, and recording them.

Every change of a conversation's state is one history entry plus the new state on the
conversation row. These functions only stage the change; the caller commits, so a use case
that fails one attempt and starts the next does both in one transaction. No Flask here.
"""
from __future__ import annotations

import re

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, TypeAdapter
from sqlmodel import Session

from gateway.infra import jsonlog, metrics
from gateway.storage import store
from gateway.storage.models import Conversation, utcnow

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


class TransitionError(Exception):
    """A state change the lifecycle does not allow; the message says what is allowed."""


TOPIC_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"


def _a_topic(topic: str) -> str:
    """Checked here rather than by a pydantic pattern, whose refusal only quotes the regex."""
    if not re.fullmatch(TOPIC_PATTERN, topic):
        raise ValueError(f"topic {topic!r} must be a snake_case name such as customer_refund")
    if topic in LIFECYCLE_STATES:
        raise ValueError(f"{topic} is a lifecycle state, not a topic")
    return topic


#: A topic state: any snake_case name that is not one of the lifecycle states. Request bodies
#: declare their topic with it, so /openapi.json states these very limits. The pattern and the
#: "not one of" are given to the schema by hand: pydantic derives neither from a validator, and
#: its own pattern check would answer with the regex instead of what to write.
Topic = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_a_topic),
    Field(
        description="A snake_case topic state such as customer_refund; not one of the lifecycle states.",
        json_schema_extra={"pattern": TOPIC_PATTERN, "not": {"enum": list(LIFECYCLE_STATES)}},
    ),
]
_TOPIC = TypeAdapter(Topic)


def check_topic(topic: str) -> str:
    """The topic, or a ValueError (pydantic's ValidationError) that says what is wrong with it."""
    return _TOPIC.validate_python(topic)


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
    **changes,
) -> bool:
    """Stage a move to `state` (plus column `changes`); False, staging nothing, for a retried webhook."""
    _check(conversation, state)
    destination = destination or conversation.destination
    recorded = store.add_event(
        session,
        conversation,
        state=state,
        destination=destination,
        detail=detail,
        dedupe_key=dedupe_key,
        at=at,
        snapshot=snapshot(conversation, **changes),
    )
    if not recorded:
        return False
    _apply(conversation, state, destination, changes)
    session.add(conversation)
    announce(conversation.id, conversation.state, conversation.destination)
    return True


def snapshot(conversation: Conversation, **changes) -> dict:
    """What a history entry keeps of the conversation as it stands with `changes` applied: the
    values its event must show though they may change again before it is published."""
    return {
        "shared_id": conversation.shared_id,
        "data": conversation.data or {},
        "reason": changes.get("reason", conversation.reason),
        "utterance": changes.get("utterance", conversation.utterance),
    }


def announce(conversation_id: str, state: str | None, destination: str | None) -> None:
    """Count the transition and stamp later log lines with the conversation."""
    jsonlog.bind(conversation_id=conversation_id)
    metrics.handoff_recorded(state, destination)


def _check(conversation: Conversation, state: str) -> None:
    if state not in _NEXT_STATES[conversation.state]:
        allowed = ", ".join(sorted(_NEXT_STATES[conversation.state])) or "nothing"
        raise TransitionError(
            f"cannot go from {conversation.state or 'no handoff'} to {state}; allowed: {allowed}"
        )


def _apply(conversation: Conversation, state: str, destination: str | None, changes: dict) -> None:
    for column, value in changes.items():
        setattr(conversation, column, value)
    conversation.state = state
    conversation.destination = destination
    if state == INITIATED:
        conversation.attempts += 1
    conversation.updated_at = utcnow()


def initiate(
    session: Session,
    conversation: Conversation,
    *,
    destination: str,
    reason: str | None,
    utterance: str | None,
    detail: str | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Stage a handoff attempt to `destination`, keeping why and what was said before it."""
    return transition(
        session,
        conversation,
        INITIATED,
        destination=destination,
        detail=detail,
        dedupe_key=dedupe_key,
        at=at,
        reason=reason,
        utterance=utterance,
    )


def set_topic(session: Session, conversation: Conversation, topic: str) -> None:
    """Stage a topic state beside the lifecycle state, and note it in the history."""
    check_topic(topic)
    if conversation.topic == topic:
        return
    store.add_event(session, conversation, state=topic, destination=conversation.destination, snapshot=snapshot(conversation))
    conversation.topic = topic
    conversation.updated_at = utcnow()
    session.add(conversation)
