"""Delivery state of events to `event_webhooks` subscriptions: queue, claim, record, list, redeliver.

Only the delivery worker writes these tables (the CLI and console ask it to redeliver by
setting a delivery back to pending). A delivery is claimed with SELECT … FOR UPDATE SKIP
LOCKED on PostgreSQL, and only the oldest pending delivery of a conversation for a
subscription can be claimed: several workers never send one event at once, and a
conversation's events reach each receiver in order. No HTTP here (gateway/events/deliver.py sends).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from gateway.config.file import EventWebhook, GatewayConfig, ProjectConfig
from gateway.events.journal import LOOKBACK
from gateway.infra.safe_text import xml_legal
from gateway.storage.models import EventDelivery, EventSubscription, PublishedEvent, utcnow
from gateway.storage.store import insert_ignoring_conflict, as_utc

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERED, FAILED)

#: Events considered per subscription per pass.
QUEUE_BATCH = 1000


def subscription(session: Session, project: ProjectConfig, webhook: EventWebhook, now: datetime) -> EventSubscription:
    """The row that tracks a subscription; a new one starts with the last day of events."""
    found = _subscription_row(session, project.key, webhook.url)
    if found is not None:
        return found
    before = session.exec(
        select(func.max(PublishedEvent.seq)).where(
            PublishedEvent.project_key == project.key, PublishedEvent.created_at < now - LOOKBACK
        )
    ).one()
    insert_ignoring_conflict(
        session,
        EventSubscription.__table__,
        {"project_key": project.key, "url": webhook.url, "queued_through_seq": before or 0, "first_seen_at": now},
    )
    return _subscription_row(session, project.key, webhook.url)


def _subscription_row(session: Session, project_key: str, url: str) -> EventSubscription | None:
    return session.exec(
        select(EventSubscription).where(EventSubscription.project_key == project_key, EventSubscription.url == url)
    ).first()


def queue(session: Session, config: GatewayConfig) -> int:
    """Make a pending delivery for every journal event of the last day each subscription wants; commits. How many made.

    Older events are for the feed: a subscription removed from the config and listed again
    (its row, and how far it was queued, are kept) starts with the last day as a new one does.

    The journal's seq is its commit order (one publisher at a time), so `queued_through_seq`
    never passes an event still to come. Racing workers insert the same rows; the unique key
    keeps one.
    """
    now = utcnow()
    made = 0
    for project in config.projects:
        for webhook in project.event_webhooks:
            row = subscription(session, project, webhook, now)
            events = session.exec(
                select(PublishedEvent)
                .where(PublishedEvent.project_key == project.key, PublishedEvent.seq > row.queued_through_seq)
                .order_by(PublishedEvent.seq)
                .limit(QUEUE_BATCH)
            ).all()
            for event in events:
                if webhook.wants(event.type) and as_utc(event.created_at) >= now - LOOKBACK:
                    made += insert_ignoring_conflict(
                        session,
                        EventDelivery.__table__,
                        {
                            "subscription_id": row.id,
                            "event_seq": event.seq,
                            "conversation_id": event.conversation_id,
                            "status": PENDING,
                            "attempts": 0,
                            "next_attempt_at": now,
                            "created_at": now,
                        },
                    )
            if events:
                row.queued_through_seq = max(row.queued_through_seq, events[-1].seq)
                session.add(row)
    session.commit()
    return made


@dataclass(frozen=True)
class Claimed:
    delivery: EventDelivery
    event: PublishedEvent
    subscription: EventSubscription


def claim(session: Session, now: datetime) -> Claimed | None:
    """Lock one due delivery that is its conversation's oldest pending one; None when none is free.

    The lock lasts until the caller commits: another worker skips the row, and skips the
    conversation's later deliveries because this one is still pending and older.
    """
    earlier = aliased(EventDelivery)
    query = (
        select(EventDelivery)
        .where(EventDelivery.status == PENDING, EventDelivery.next_attempt_at <= now)
        .where(
            ~exists().where(
                and_(
                    earlier.subscription_id == EventDelivery.subscription_id,
                    earlier.conversation_id == EventDelivery.conversation_id,
                    earlier.status == PENDING,
                    earlier.event_seq < EventDelivery.event_seq,
                )
            )
        )
        .order_by(EventDelivery.next_attempt_at, EventDelivery.event_seq)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    delivery = session.exec(query.execution_options(populate_existing=True)).first()
    if delivery is None:
        return None
    return Claimed(delivery, session.get(PublishedEvent, delivery.event_seq), session.get(EventSubscription, delivery.subscription_id))


def record_delivered(session: Session, delivery: EventDelivery, status_code: int, now: datetime) -> None:
    delivery.status, delivery.attempts = DELIVERED, delivery.attempts + 1
    delivery.last_status_code, delivery.last_error = status_code, None
    delivery.delivered_at, delivery.next_attempt_at = now, None
    session.add(delivery)


def _storable(error: str) -> str:
    """The receiver's own words (its reason phrase, its exception) fit for the column: a NUL
    made PostgreSQL refuse the row, which ended the worker on the same delivery after every restart."""
    return xml_legal(error)[:500]


def record_retry(session: Session, delivery: EventDelivery, status_code: int | None, error: str, at: datetime) -> None:
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = status_code, _storable(error)
    delivery.next_attempt_at = at
    session.add(delivery)


def record_failed(session: Session, delivery: EventDelivery, status_code: int | None, error: str) -> None:
    """Stop this event for this subscription, saying why; the conversation's next event goes on."""
    delivery.status, delivery.attempts = FAILED, delivery.attempts + 1
    delivery.last_status_code, delivery.last_error = status_code, _storable(error)
    delivery.next_attempt_at = None
    session.add(delivery)


@dataclass(frozen=True)
class DeliveryView:
    """A delivery as operators read it (console and CLI)."""

    id: int
    url: str
    project_key: str
    event_id: str
    event_type: str
    conversation_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


def recent(session: Session, *, project_key: str | None = None, status: str | None = None, limit: int = 50) -> list[DeliveryView]:
    """Newest first."""
    query = (
        select(EventDelivery, PublishedEvent, EventSubscription)
        .join(PublishedEvent, PublishedEvent.seq == EventDelivery.event_seq)
        .join(EventSubscription, EventSubscription.id == EventDelivery.subscription_id)
    )
    if project_key is not None:
        query = query.where(EventSubscription.project_key == project_key)
    if status is not None:
        query = query.where(EventDelivery.status == status)
    rows = session.exec(query.order_by(EventDelivery.id.desc()).limit(limit)).all()
    return [
        DeliveryView(
            id=delivery.id,
            url=sub.url,
            project_key=sub.project_key,
            event_id=event.event_id,
            event_type=event.type,
            conversation_id=event.conversation_id,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=as_utc(delivery.next_attempt_at),
            delivered_at=as_utc(delivery.delivered_at),
            created_at=as_utc(delivery.created_at),
        )
        for delivery, event, sub in rows
    ]


def redeliver(session: Session, delivery_id: int, *, project_key: str | None = None) -> EventDelivery | None:
    """Send a delivery again as soon as a worker is free (same event id and body); commits. None if unknown."""
    delivery = session.get(EventDelivery, delivery_id)
    if delivery is None:
        return None
    if project_key is not None and session.get(EventSubscription, delivery.subscription_id).project_key != project_key:
        return None
    delivery.status, delivery.next_attempt_at = PENDING, utcnow()
    # A fresh 24 h of retries from now: the operator asked for this one.
    delivery.created_at = utcnow()
    session.add(delivery)
    session.commit()
    return delivery


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(EventDelivery.status, func.count()).group_by(EventDelivery.status)).all()
    return {status: 0 for status in STATUSES} | {status: count for status, count in rows}


def oldest_pending_age(session: Session, now: datetime) -> float:
    """Seconds since the oldest event still waiting for a delivery was created; 0 when none waits."""
    oldest = session.exec(
        select(func.min(PublishedEvent.created_at))
        .join(EventDelivery, EventDelivery.event_seq == PublishedEvent.seq)
        .where(EventDelivery.status == PENDING)
    ).one()
    return max(0.0, (now - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0


def retry_deadline(delivery: EventDelivery, horizon: timedelta) -> datetime:
    """Retries stop this long after the delivery was queued (or last asked for again)."""
    return as_utc(delivery.created_at) + horizon
