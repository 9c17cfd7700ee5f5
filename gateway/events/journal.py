"""Handoff events (SPEC §5 Events): made from the history the webhooks already write.

A webhook writes no event and calls nobody to announce one. Every history row
(`handoff_events`) is an event, and a conversation's end (`conversations.ended_at`) is one
more; `publish` reads what is new there and appends it, once and in order, to the event
journal (`events`). The feed (`GET /events`) and the delivery worker read only the journal, so
each event keeps one id, one position and one body however often it is sent.

`publish` runs in the delivery worker and before each feed read; on PostgreSQL an advisory
lock lets one publisher at a time append, which keeps the journal's order its commit order.
Where the journal starts, how far back it looks and why: docs/events.md.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway import presenters
from gateway.config import event_types
from gateway.handoffs import handoff
from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent, PublishedEvent, utcnow

log = logging.getLogger(__name__)

#: How far back a new journal starts, and how long after its end a conversation is looked at for its end event.
LOOKBACK = timedelta(hours=24)
#: History rows below the newest published one that are looked at again: a transaction that
#: took its id earlier may commit later (PostgreSQL hands out ids before commit).
RESCAN_ROWS = 1000
#: At most this many history rows are published per pass; the next pass takes the rest.
BATCH = 500
#: How long a call that ended mid-transfer waits for the transfer's outcome before its end is
#: published: the caller hanging up while the agent's phone rings sends Twilio's status callback
#: and the <Dial>/<Refer> action together, in either order, and Twilio waits at most 15 s for
#: either; the margin covers the action's own handling.
TRANSFER_OUTCOME_WAIT = timedelta(seconds=20)
#: pg_advisory_xact_lock key of the one publisher ("HGEV").
_PUBLISHER_LOCK = 0x48474556
_ENDED_PREFIX = "evt_end_"


def history_event_id(history_id: int) -> str:
    return f"evt_{history_id}"


def ended_event_id(conversation_id: str) -> str:
    return f"{_ENDED_PREFIX}{conversation_id}"


def event_type(entry: HandoffEvent, earlier: Iterable[HandoffEvent]) -> str:
    """The event a history entry is: an attempt after a failure is a retry (a fallback starting)."""
    if entry.state == handoff.INITIATED:
        retry = any(previous.state == handoff.FAILED for previous in earlier)
        return event_types.RETRYING if retry else event_types.INITIATED
    if entry.state == handoff.COMPLETED:
        return event_types.COMPLETED
    if entry.state == handoff.FAILED:
        return event_types.FAILED
    return event_types.TOPIC


def state_at(conversation: Conversation, history: list[HandoffEvent]) -> dict:
    """The `handoff_state` document as it stood when the last entry of `history` was recorded.

    The lifecycle state, topic, destination, attempts and history come from the entries
    themselves; shared_id, data, reason and utterance from the last entry's snapshot (entries
    recorded before migration 0006 have none: the conversation's current values, then).
    """
    document = presenters.handoff_state(conversation, history)
    kept = history[-1].snapshot
    if kept is not None:
        document.update(shared_id=kept.get("shared_id"), data=kept.get("data") or {})
        document["handoff"].update(reason=kept.get("reason"), utterance=kept.get("utterance"))
    lifecycle = [entry for entry in history if entry.state in handoff.LIFECYCLE_STATES]
    topics = [entry for entry in history if entry.state not in handoff.LIFECYCLE_STATES]
    document["state"] = lifecycle[-1].state if lifecycle else None
    document["topic"] = topics[-1].state if topics else None
    document["handoff"].update(
        destination=history[-1].destination,
        attempts=sum(entry.state == handoff.INITIATED for entry in history),
        updated_at=presenters.timestamp(history[-1].at),
    )
    return document


def _envelope(event_id: str, kind: str, created_at: datetime, project_key: str, data: dict) -> str:
    account_id, _, project_id = project_key.partition("/")
    return json.dumps(
        {
            "id": event_id,
            "type": kind,
            "created_at": presenters.timestamp(created_at),
            "account_id": account_id,
            "project_id": project_id,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _draft(event_id: str, kind: str, created_at: datetime, conversation: Conversation, data: dict, **extra) -> PublishedEvent:
    return PublishedEvent(
        event_id=event_id,
        type=kind,
        created_at=created_at,
        project_key=conversation.project_key,
        conversation_id=conversation.id,
        body=_envelope(event_id, kind, created_at, conversation.project_key, data),
        **extra,
    )


def _publishable(session: Session, now: datetime) -> ColumnElement[bool]:
    """The history rows `publish` still looks at: those it would add if they were missing.

    A new journal starts with the last day; the rescan window of later passes is counted in
    ids, not time, and without that start it would publish older history after newer events.
    The start is the oldest history event kept, so pruning moves it later: pruning keeps the
    whole rescan window (gateway/events/retention.py), so no row it removed is ever looked at again.
    """
    oldest, newest = session.exec(select(func.min(PublishedEvent.history_id), func.max(PublishedEvent.history_id))).one()
    if newest is None:
        return HandoffEvent.at >= now - LOOKBACK  # a new journal: the last day only
    start = session.exec(select(PublishedEvent.created_at).where(PublishedEvent.history_id == oldest)).one()
    return and_(HandoffEvent.id > newest - RESCAN_ROWS, HandoffEvent.at >= store.as_utc(start))


def _unpublished_history(session: Session, publishable: ColumnElement[bool]) -> list[HandoffEvent]:
    """History not yet in the journal, never from before where the journal starts."""
    query = (
        select(HandoffEvent)
        .where(~exists().where(PublishedEvent.history_id == HandoffEvent.id))
        .where(publishable)
    )
    return list(session.exec(query.order_by(HandoffEvent.id).limit(BATCH)))


def _unpublished_ends(
    session: Session, project_keys: list[str], now: datetime, publishable: ColumnElement[bool]
) -> list[Conversation]:
    """Conversations that ended in the last day without their end event, and with all their
    history published (by when they ended: a chat or SMS thread may run for days). History
    the publisher no longer looks at (before the journal's start, or pruned) holds no end back.

    A call that ended with its transfer still in progress waits for the transfer's outcome
    (`TRANSFER_OUTCOME_WAIT`), so the end stays the conversation's last event.
    """
    if not project_keys:
        return []
    pending_history = (
        exists()
        .where(HandoffEvent.conversation_id == Conversation.id)
        .where(~exists().where(PublishedEvent.history_id == HandoffEvent.id))
        .where(publishable)
    )
    query = (
        select(Conversation)
        .where(Conversation.project_key.in_(project_keys))
        .where(Conversation.ended_at.is_not(None))
        .where(Conversation.ended_at >= now - LOOKBACK)
        .where(~exists().where(PublishedEvent.event_id == literal(_ENDED_PREFIX) + Conversation.id))
        .where(~pending_history)
        .where(_not_awaiting_transfer_outcome(now))
        .limit(BATCH)
    )
    return list(session.exec(query))


def _not_awaiting_transfer_outcome(now: datetime):
    """A chat's handoff ends it while still `handoff_initiated`; only a call has an action to come."""
    return or_(
        Conversation.call_sid.is_(None),
        Conversation.state.is_(None),
        Conversation.state != handoff.INITIATED,
        Conversation.ended_at <= now - TRANSFER_OUTCOME_WAIT,
    )


def _history_drafts(session: Session, new_history: list[HandoffEvent]) -> list[PublishedEvent]:
    """An event per new history row, each with the state as it stood then; oldest first."""
    by_conversation: dict[str, set[int]] = defaultdict(set)
    for entry in new_history:
        by_conversation[entry.conversation_id].add(entry.id)
    drafts: list[tuple[tuple, PublishedEvent]] = []
    for conversation_id, wanted in by_conversation.items():
        conversation = store.find_by_id(session, conversation_id)
        history = store.history(session, conversation_id)
        for index, entry in enumerate(history):
            if entry.id not in wanted:
                continue
            prefix = history[: index + 1]
            at = store.as_utc(entry.at)
            kind = event_type(entry, prefix[:-1])
            row = _draft(history_event_id(entry.id), kind, at, conversation, state_at(conversation, prefix), history_id=entry.id)
            drafts.append(((at, entry.id), row))
    return [row for _key, row in sorted(drafts, key=lambda pair: pair[0])]


def _ended_draft(session: Session, conversation: Conversation) -> PublishedEvent:
    """`conversation.ended`: the final state, after every history entry of the conversation."""
    history = store.history(session, conversation.id)
    ended_at = store.as_utc(conversation.ended_at)
    return _draft(
        ended_event_id(conversation.id),
        event_types.ENDED,
        ended_at,
        conversation,
        presenters.handoff_state(conversation, history),
    )


def _take_publisher_lock(session: Session) -> bool:
    """PostgreSQL: one publisher at a time, until its commit. SQLite serialises writers itself."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.exec(select(func.pg_try_advisory_xact_lock(_PUBLISHER_LOCK))).one())


def publish(session: Session, project_keys: list[str]) -> int:
    """Append what is new in the history to the journal and commit; the number of events added.

    Returns 0 without waiting when another publisher holds the lock: it is publishing the same.
    """
    if not _take_publisher_lock(session):
        session.rollback()
        return 0
    now = utcnow()
    added = 0
    try:
        # One bound for the pass: what it publishes and which ends it lets go are read alike.
        publishable = _publishable(session, now)
        for row in _history_drafts(session, _unpublished_history(session, publishable)):
            session.add(row)
            added += 1
        session.flush()  # an end is published only after all of its conversation's history
        for conversation in _unpublished_ends(session, project_keys, now, publishable):
            session.add(_ended_draft(session, conversation))
            added += 1
        session.commit()
    except IntegrityError:  # another SQLite publisher added the same events first
        session.rollback()
        return 0
    return added


def feed(session: Session, project_key: str, *, after: int, types: list[str], limit: int) -> list[PublishedEvent]:
    """A project's events after position `after`, oldest first, of the given types."""
    query = (
        select(PublishedEvent)
        .where(PublishedEvent.project_key == project_key, PublishedEvent.seq > after)
        .where(PublishedEvent.type.in_(types))
        .order_by(PublishedEvent.seq)
        .limit(limit)
    )
    return list(session.exec(query))


def body(event: PublishedEvent) -> dict:
    return json.loads(event.body)
