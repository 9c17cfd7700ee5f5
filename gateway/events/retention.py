"""Forgetting old events: the journal (`events`) and `event_deliveries` keep `GATEWAY_EVENTS_RETENTION_DAYS`.

At about five events a call both tables would otherwise grow for ever. The delivery worker
prunes; rows go in batches, each its own short transaction, so a prune never holds PostgreSQL
row locks or SQLite's one writer lock for long. Kept whatever their age:

- a pending delivery and its event, until the delivery finishes (an operator's redeliver);
- the journal's newest event: SQLite's `seq` (INTEGER PRIMARY KEY, no AUTOINCREMENT) is the
  largest one plus one, so deleting it would hand its seq out again, past feed cursors and
  `event_subscriptions.queued_through_seq`;
- the events of the last `journal.RESCAN_ROWS` history ids: the publisher looks at those again
  on every pass and would publish a missing one anew.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, exists, func, or_
from sqlmodel import Session, select

from gateway.events import journal
from gateway.events.deliveries import DELIVERED, FAILED
from gateway.storage.models import EventDelivery, PublishedEvent

#: Rows deleted per transaction.
BATCH = 500


def prune(session: Session, before: datetime) -> tuple[int, int]:
    """Delete finished deliveries of events created before `before`, then those events; commits.

    How many (deliveries, events) went.
    """
    gone_deliveries = _in_batches(session, _finished_deliveries(before))
    newest_seq, newest_history = session.exec(select(func.max(PublishedEvent.seq), func.max(PublishedEvent.history_id))).one()
    if newest_seq is None:
        return gone_deliveries, 0
    old_events = (
        select(PublishedEvent.seq)
        .where(PublishedEvent.created_at < before, PublishedEvent.seq < newest_seq)
        .where(or_(PublishedEvent.history_id.is_(None), PublishedEvent.history_id <= (newest_history or 0) - journal.RESCAN_ROWS))
        .where(~exists().where(EventDelivery.event_seq == PublishedEvent.seq))
        .limit(BATCH)
    )
    return gone_deliveries, _in_batches(session, delete(PublishedEvent).where(PublishedEvent.seq.in_(old_events)))


def _finished_deliveries(before: datetime):
    old = (
        select(EventDelivery.id)
        .join(PublishedEvent, PublishedEvent.seq == EventDelivery.event_seq)
        .where(EventDelivery.status.in_((DELIVERED, FAILED)), PublishedEvent.created_at < before)
        .limit(BATCH)
    )
    # The status again on the row itself: one an operator sends again meanwhile stays.
    return delete(EventDelivery).where(EventDelivery.id.in_(old), EventDelivery.status.in_((DELIVERED, FAILED)))


def _in_batches(session: Session, statement) -> int:
    total = 0
    while True:
        gone = session.exec(statement).rowcount
        session.commit()
        total += gone
        if gone < BATCH:
            return total
