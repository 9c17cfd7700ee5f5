"""Persistence: the engine, and the reads and writes of conversations and their history.

No HTTP, no Twilio. Writes are staged in the caller's session; the caller commits (texts and
chats: gateway/message_store.py; destinations and keys: gateway/project_store.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from sqlalchemy import Table, and_, event, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

from gateway.models import Conversation, HandoffEvent, NewCall, utcnow


def make_engine(database_url: str, *, busy_timeout: float = 5.0) -> Engine:
    """One engine per app. Every wait for the database is bounded by `busy_timeout` seconds.

    SQLite gets WAL and a busy timeout so concurrent workers wait, then fail (and the voice
    webhooks fail open) rather than hang; PostgreSQL gets the same bound on connecting and on
    waiting for a pooled connection.
    """
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url, connect_args={"check_same_thread": False, "timeout": busy_timeout}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args = {"connect_timeout": max(1, round(busy_timeout))} if database_url.startswith("postgresql") else {}
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=busy_timeout,
        connect_args=connect_args,
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


@lru_cache(maxsize=None)
def _insert_or_skip(dialect: str, table: Table):
    """INSERT .. ON CONFLICT DO NOTHING for a table, built once per dialect: the hot path only binds values.

    SQLAlchemy 2 keeps an INSERT's rowcount only when asked; without it PostgreSQL reports -1.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)


def insert_ignoring_conflict(session: Session, table: Table, values: dict) -> int:
    """Stage a row unless it clashes with a unique one, so racing writers never raise; rows inserted."""
    statement = _insert_or_skip(session.get_bind().dialect.name, table)
    return session.connection().execute(statement, values).rowcount


#: The name add_new_call and insert_call still use; issue 10 rewrites them (leave them be here).
_insert_ignoring_conflict = insert_ignoring_conflict


def add_new_call(session: Session, call: NewCall, first_event: dict | None) -> bool:
    """Stage a call's conversation row and first history entry; False, staging nothing, if the CallSid is known.

    Two prebuilt INSERTs and no read: the path every new call takes. A racing twin's INSERT
    waits on the CallSid's unique index until the winner commits, then inserts nothing.
    """
    if not _insert_ignoring_conflict(session, Conversation.__table__, call.row()):
        return False
    if first_event is not None:
        _insert_ignoring_conflict(session, HandoffEvent.__table__, first_event)
    return True


def insert_call(
    session: Session,
    *,
    call_sid: str,
    project_key: str,
    from_number: str | None,
    to_number: str | None,
    shared_id: str | None,
    conversation_id: str | None = None,
    started_at: datetime | None = None,
) -> tuple[Conversation, bool]:
    """Stage the conversation of a CallSid unless one exists; True when this call made it.

    Not committed: the caller commits it together with the first handoff attempt, so no
    conversation is ever stored without it. A racing twin's INSERT waits for that commit (the
    CallSid is unique) and then finds the winner's row. `conversation_id` and `started_at` let
    the spool replay keep the id and time a caller was given while the database was down.
    """
    existing = conversation_by_call_sid(session, call_sid)
    if existing:
        return existing, False
    now = started_at or utcnow()
    candidate = Conversation(
        project_key=project_key,
        channel="voice",
        call_sid=call_sid,
        from_number=from_number,
        to_number=to_number,
        shared_id=shared_id,
        started_at=now,
        updated_at=now,
    )
    if conversation_id is not None:
        candidate.id = conversation_id
    _insert_ignoring_conflict(session, Conversation.__table__, candidate.model_dump())
    stored = session.exec(
        select(Conversation)
        .where(Conversation.call_sid == call_sid)
        .execution_options(populate_existing=True)
    ).one()
    return stored, stored.id == candidate.id


def conversation_by_call_sid(session: Session, call_sid: str) -> Conversation | None:
    return session.exec(select(Conversation).where(Conversation.call_sid == call_sid)).first()


def find_by_id(session: Session, conversation_id: str) -> Conversation | None:
    return session.get(Conversation, conversation_id)


def conversation_for_update(session: Session, conversation_id: str) -> Conversation | None:
    """The row, locked until commit on PostgreSQL (SQLite serialises writers by itself)."""
    query = select(Conversation).where(Conversation.id == conversation_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).first()


def find_conversation(
    session: Session, project_key: str, *, conversation_id: str | None = None, shared_id: str | None = None
) -> Conversation | None:
    """By shared_id when given (it wins, SPEC §5), else by id; always within one project."""
    query = select(Conversation).where(Conversation.project_key == project_key)
    if shared_id is not None:
        query = query.where(Conversation.shared_id == shared_id).order_by(
            Conversation.started_at.desc(), Conversation.id.desc()
        )
    elif conversation_id is not None:
        query = query.where(Conversation.id == conversation_id)
    else:
        return None
    return session.exec(query.limit(1)).first()


def add_event(
    session: Session,
    conversation: Conversation,
    *,
    state: str,
    destination: str | None = None,
    detail: str | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Append a history entry; False when this dedupe_key was already recorded (a retried webhook)."""
    values = dict(
        conversation_id=conversation.id,
        state=state,
        destination=destination,
        detail=detail[:500] if detail else None,
        dedupe_key=dedupe_key,
        at=at or utcnow(),
    )
    if dedupe_key is None:
        session.add(HandoffEvent(**values))
        session.flush()
        return True
    return bool(insert_ignoring_conflict(session, HandoffEvent.__table__, values))


def history(session: Session, conversation_id: str) -> list[HandoffEvent]:
    """Oldest first; the id breaks ties between events of the same instant."""
    return list(
        session.exec(
            select(HandoffEvent)
            .where(HandoffEvent.conversation_id == conversation_id)
            .order_by(HandoffEvent.at, HandoffEvent.id)
        )
    )


@dataclass(frozen=True)
class ConversationFilter:
    """`GET /conversations` filters (SPEC §5); None means "any"."""

    call_sid: str | None = None
    state: str | None = None
    topic: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    channel: str | None = None


def list_conversations(
    session: Session,
    project_key: str,
    filters: ConversationFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Conversation]:
    """Newest first; `after` is the (started_at, id) of the last row already shown (keyset paging)."""
    query = select(Conversation).where(Conversation.project_key == project_key)
    for column, value in (
        (Conversation.call_sid, filters.call_sid),
        (Conversation.state, filters.state),
        (Conversation.topic, filters.topic),
        (Conversation.from_number, filters.from_number),
        (Conversation.to_number, filters.to_number),
        (Conversation.channel, filters.channel),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(Conversation.started_at >= filters.since)
    if filters.until is not None:
        query = query.where(Conversation.started_at < filters.until)
    if after is not None:
        started_at, conversation_id = after
        query = query.where(
            or_(
                Conversation.started_at < started_at,
                and_(Conversation.started_at == started_at, Conversation.id < conversation_id),
            )
        )
    query = query.order_by(Conversation.started_at.desc(), Conversation.id.desc()).limit(limit)
    return list(session.exec(query))


def delete_call(session: Session, call_sid: str) -> bool:
    """Stage removing a call's conversation and its history (the console's route test leaves nothing behind)."""
    conversation = conversation_by_call_sid(session, call_sid)
    if conversation is None:
        return False
    for entry in history(session, conversation.id):
        session.delete(entry)
    session.flush()
    session.delete(conversation)
    return True
