"""Database tables. Plain SQLModel: nothing here knows about HTTP or Twilio."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from gateway.config.destinations import CONVERSATION_ID_LENGTH
from gateway.config.file import EVENT_WEBHOOK_URL_MAX
from gateway.infra.random_ids import time_ordered_uuid


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A conversation id: a time-ordered UUID (gateway/infra/random_ids.py), made before the row
    so TwiML can carry it."""
    return str(time_ordered_uuid())


def _timestamp(**kwargs) -> Field:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kwargs)


class Conversation(SQLModel, table=True):
    """One call, SMS thread or web chat, with its current handoff state beside it."""

    __tablename__ = "conversations"
    # Every index here is written on every new call, the webhook's hot path, so each one serves
    # a query in gateway/storage/store.py and no column is indexed on its own "just in case".
    __table_args__ = (
        Index("ix_conversations_shared_lookup", "project_key", "shared_id", "started_at", "id"),  # SPEC §5
        Index("ix_conversations_newest", "project_key", "started_at", "id"),  # listing, keyset paging
        Index("ix_conversations_caller", "project_key", "from_number", "started_at"),  # a caller's history
        # Conversations that ended lately, for their end events (gateway/events/journal.py).
        # Partial: a new call has no end, so its INSERT writes nothing here.
        Index(
            "ix_conversations_ended", "project_key", "ended_at",
            sqlite_where=text("ended_at IS NOT NULL"), postgresql_where=text("ended_at IS NOT NULL"),
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=CONVERSATION_ID_LENGTH)
    project_key: str = Field(max_length=200)
    channel: str = Field(max_length=10)  # voice | sms | chat
    call_sid: str | None = Field(default=None, unique=True, max_length=64)
    shared_id: str | None = Field(default=None, max_length=200)
    from_number: str | None = Field(default=None, max_length=64)
    to_number: str | None = Field(default=None, max_length=64)

    state: str | None = Field(default=None, max_length=64)
    topic: str | None = Field(default=None, max_length=64)
    destination: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, max_length=200)
    utterance: str | None = Field(default=None, max_length=1000)
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0

    call_status: str | None = Field(default=None, max_length=20)
    status_sequence: int | None = None
    duration_seconds: int | None = None

    started_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class HandoffEvent(SQLModel, table=True):
    """One transition in a conversation's history; `dedupe_key` makes webhook retries harmless."""

    __tablename__ = "handoff_events"
    # Also the index for a conversation's history: conversation_id leads it.
    __table_args__ = (UniqueConstraint("conversation_id", "dedupe_key"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", max_length=CONVERSATION_ID_LENGTH)
    state: str = Field(max_length=64)
    destination: str | None = Field(default=None, max_length=100)
    detail: str | None = Field(default=None, max_length=500)
    dedupe_key: str | None = Field(default=None, max_length=200)
    at: datetime = _timestamp()
    #: The conversation's shared_id, data, reason and utterance just after this entry, which an
    #: event published later must show as they were (SPEC §5: the document "at that moment").
    #: None in entries recorded before migration 0006.
    snapshot: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class StoredDestination(SQLModel, table=True):
    """A destination made through the API or console (the file's own live only in the file)."""

    __tablename__ = "destinations"
    # Names are unique without regard to case (`destinations.name_key`); that key is also the
    # index for a project's destinations (project_key leads it). The exact-name key is the one
    # databases made before name_key already have.
    __table_args__ = (
        UniqueConstraint("project_key", "name"),
        UniqueConstraint("project_key", "name_key", name="uq_destinations_project_name_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_key: str = Field(max_length=200)
    name: str = Field(max_length=100)
    #: The name NFKC-normalised, trimmed and case-folded: "Front desk" and "front desk" clash.
    name_key: str = Field(max_length=300)
    body: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


#: The label column's width (`gateway api-key create --label` checks it before storing).
API_KEY_LABEL_MAX = 100


class ApiKey(SQLModel, table=True):
    """An API key made by the CLI; only its sha256 is kept."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    project_key: str = Field(index=True, max_length=200)
    key_sha256: str = Field(unique=True, max_length=64)
    label: str | None = Field(default=None, max_length=API_KEY_LABEL_MAX)
    created_at: datetime = _timestamp()


class SmsMessage(SQLModel, table=True):
    """One text sent or received on a project's number; `status` only ever moves forward."""

    __tablename__ = "sms_messages"

    id: int | None = Field(default=None, primary_key=True)
    sid: str = Field(unique=True, max_length=64)
    project_key: str = Field(index=True, max_length=200)
    conversation_id: str | None = Field(default=None, foreign_key="conversations.id", index=True, max_length=36)
    direction: str = Field(max_length=10)  # inbound | outbound
    from_number: str = Field(max_length=64)
    to_number: str = Field(max_length=64)
    body: str = Field(default="", sa_type=Text)
    status: str = Field(max_length=20)
    error_code: int | None = None
    created_at: datetime = _timestamp(index=True)
    updated_at: datetime = _timestamp()


class SmsStatusEvent(SQLModel, table=True):
    """Every delivery callback as Twilio sent it; may arrive before the message row exists."""

    __tablename__ = "sms_status_events"

    id: int | None = Field(default=None, primary_key=True)
    message_sid: str = Field(index=True, max_length=64)
    status: str = Field(max_length=20)
    error_code: int | None = None
    at: datetime = _timestamp()


class SmsOptOut(SQLModel, table=True):
    """A customer number that texted STOP to a project; deleted when it texts START."""

    __tablename__ = "sms_opt_outs"
    # Also the index for a project's opt-outs: project_key leads it.
    __table_args__ = (UniqueConstraint("project_key", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    project_key: str = Field(max_length=200)
    number: str = Field(max_length=64)
    keyword: str = Field(max_length=20)
    at: datetime = _timestamp()


class SmsThread(SQLModel, table=True):
    """The open SMS conversation of a customer number; the unique key keeps it to one per project."""

    __tablename__ = "sms_threads"
    __table_args__ = (UniqueConstraint("project_key", "customer_number"),)

    id: int | None = Field(default=None, primary_key=True)
    project_key: str = Field(max_length=200)
    customer_number: str = Field(max_length=64)
    conversation_id: str = Field(foreign_key="conversations.id", max_length=CONVERSATION_ID_LENGTH)


class ChatMessage(SQLModel, table=True):
    """One line of a chat or SMS transcript, for the console's timeline."""

    __tablename__ = "chat_messages"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", index=True, max_length=36)
    role: str = Field(max_length=20)  # customer | assistant
    text: str = Field(sa_type=Text)
    at: datetime = _timestamp()


class PublishedEvent(SQLModel, table=True):
    """A handoff event as integrators get it (SPEC §5 Events): one per history row or conversation end.

    Made from the history by `gateway.events.journal.publish`, never by a webhook; `seq` is the feed's
    order and `body` the exact JSON every delivery and the feed send, so a retry is byte for byte
    the first try. `history_id` is unique: a history row is published once.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_project_seq", "project_key", "seq"),)

    #: 64-bit on PostgreSQL, so any 18-digit feed cursor is a position; SQLite's rowid is already 64-bit
    seq: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    event_id: str = Field(unique=True, max_length=64)
    history_id: int | None = Field(default=None, unique=True)
    project_key: str = Field(max_length=200)
    conversation_id: str = Field(max_length=36)
    type: str = Field(max_length=40)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    body: str = Field(sa_type=Text)


class EventSubscription(SQLModel, table=True):
    """How far the delivery worker has queued a project's `event_webhooks` entry (written by it only)."""

    __tablename__ = "event_subscriptions"
    __table_args__ = (UniqueConstraint("project_key", "url"),)

    id: int | None = Field(default=None, primary_key=True)
    project_key: str = Field(max_length=200)
    url: str = Field(max_length=EVENT_WEBHOOK_URL_MAX)
    #: every event up to this seq has been considered for this subscription
    queued_through_seq: int = Field(default=0, sa_type=BigInteger)
    first_seen_at: datetime = _timestamp()


class EventDelivery(SQLModel, table=True):
    """One event for one subscription: its attempts, next retry and last error (written by the worker only)."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_seq"),
        # The worker's claim: a conversation's oldest pending delivery, due now.
        Index("ix_event_deliveries_pending", "status", "next_attempt_at"),
        Index("ix_event_deliveries_conversation", "subscription_id", "conversation_id", "event_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="event_subscriptions.id")
    event_seq: int = Field(sa_column=Column(BigInteger, ForeignKey("events.seq"), nullable=False))
    conversation_id: str = Field(max_length=36)
    status: str = Field(default="pending", max_length=12)  # pending | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = _timestamp()


class SignInFailure(SQLModel, table=True):
    """A wrong console password from one address; shared by every worker and instance."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (
        Index("ix_sign_in_failures_address", "address", "at"),  # an address's recent failures
        Index("ix_sign_in_failures_at", "at"),  # forgetting old ones
    )

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(max_length=100)
    at: datetime = _timestamp()
