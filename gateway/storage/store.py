"""Persistence: the engine, and the reads and writes of conversations and their history.

No HTTP, no Twilio. Writes are staged in the caller's session; the caller commits (texts and
chats: gateway/storage/message_store.py; destinations and keys: gateway/storage/project_store.py).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import quote

from sqlalchemy import Table, and_, bindparam, event, false, or_, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlmodel import Session, create_engine, select

from gateway.storage import sqlite_writer
from gateway.storage.models import Conversation, HandoffEvent, utcnow
from gateway.storage.search import SearchTerms

log = logging.getLogger(__name__)


#: The busy timeout each engine was made with (make_engine), for waits outside the driver's own.
_busy_timeouts: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
DEFAULT_BUSY_TIMEOUT = 5.0


def busy_timeout_of(engine: Engine) -> float:
    """How long a request may wait for this database before it gives up (and a webhook fails open)."""
    return _busy_timeouts.get(engine, DEFAULT_BUSY_TIMEOUT)


def make_engine(database_url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Engine:
    engine = _make_engine(database_url, busy_timeout)
    _busy_timeouts[engine] = busy_timeout
    return engine


def _make_engine(database_url: str, busy_timeout: float) -> Engine:
    """One engine per app. Every wait for the database is bounded by `busy_timeout` seconds.

    SQLite gets WAL and a busy timeout so concurrent workers wait, then fail (and the voice
    webhooks fail open) rather than hang; PostgreSQL gets the same bound on connecting, on
    waiting for a pooled connection, and on waiting for a row lock.
    """
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url, busy_timeout)
    connect_args = {}
    if database_url.startswith("postgresql"):
        # A row lock another transaction holds (a racing webhook, an API handoff) is waited on
        # for the busy timeout at most, as SQLite's lock is; then the webhook fails open.
        connect_args = {
            "connect_timeout": max(1, round(busy_timeout)),
            "options": f"-c lock_timeout={int(busy_timeout * 1000)}",
        }
    return create_engine(
        database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=busy_timeout,
        connect_args=connect_args,
    )


def _sqlite_engine(database_url: str, busy_timeout: float) -> Engine:
    """SQLite that recovers from a file made read-only for a while, and notices a file swapped under it.

    - A "readonly database" error counts as a disconnect: SQLAlchemy drops that connection and
      every older one in the pool, and the next request opens afresh.
    - A connection opened while the file could not be written is read-only for good (SQLite
      falls back to read-only silently), so it is reopened at checkout once the file can be
      written again.
    - Each connection remembers which file (device and inode) its path named when it opened.
      If the path now names another file, or none, it is dropped at checkout rather than
      reading and writing a file nobody can see any more (see `SqliteFile`).
    """
    path = make_url(database_url).database or ""
    if path in ("", ":memory:") or path.startswith("file:"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": busy_timeout})
    else:
        database_file = SqliteFile(path, busy_timeout)
        engine = create_engine(database_url, creator=database_file.connect)
        sqlite_writer.attach(engine, path)

        @event.listens_for(engine, "connect")
        def _remember_file(_dbapi_connection, record):
            record.info["file"] = database_file.identity()
            record.info["read_only"] = not database_file.writable()

        @event.listens_for(engine, "checkout")
        def _still_the_same_file(_dbapi_connection, record, _proxy):
            if database_file.identity() != record.info.get("file"):
                log.error("the SQLite file %s was deleted or replaced while the gateway ran; reopening it", path)
                raise DisconnectionError(f"{path} is no longer the file this connection opened")
            if record.info.get("read_only") and database_file.writable():
                log.warning("the SQLite file %s can be written again; reopening a read-only connection", path)
                raise DisconnectionError(f"{path} was opened read-only")

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        _use_wal(cursor, busy_timeout)
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "handle_error")
    def _read_only_is_a_disconnect(context):
        error = context.original_exception
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY:
            log.error("the SQLite database could not be written (%s); reconnecting", error)
            context.is_disconnect = True

    return engine


def _use_wal(cursor, busy_timeout: float) -> None:
    """Put the file in WAL mode (the file keeps it), trying again for up to the busy timeout.

    Only the first connections to a new database change the mode, and when several instances
    start on it together SQLite may refuse one of them at once, without its busy wait, rather
    than risk a deadlock; a moment later the mode is set, or set already.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteFile:
    """The gateway's database file: created when first opened, never re-created once it existed.

    A file deleted under a running gateway stays missing (every request fails open and /readyz
    says why) instead of silently becoming a new, empty database. A folder that was not mounted
    yet at start-up is fine: the file is made when it can first be opened.
    """

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._existed = os.path.exists(path)

    def identity(self) -> tuple[int, int] | None:
        """Which file the path names now (device, inode); None when it names none."""
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def writable(self) -> bool:
        """Whether the file can be opened for writing now (SQLite would open it read-only if not).

        Asked of the kernel without opening the file: closing any descriptor of it would drop
        the POSIX locks by which this process's open connections tell other processes they are
        there, and another worker could then delete the WAL under them (a corrupt database).
        """
        return os.access(self.path, os.W_OK)

    def connect(self) -> sqlite3.Connection:
        if self._existed and not os.path.exists(self.path):
            raise sqlite3.OperationalError(
                f"the database file {self.path} is gone (deleted or moved while the gateway ran); "
                "restore it, or restart the gateway to start an empty one"
            )
        mode = "rw" if self._existed else "rwc"
        connection = sqlite3.connect(
            f"file:{quote(os.path.abspath(self.path))}?mode={mode}",
            uri=True,
            timeout=self._busy_timeout,
            check_same_thread=False,
        )
        self._existed = True
        return connection


def prove_writable(engine: Engine) -> None:
    """Raise the database's error unless it answers and takes a write (a no-op one, rolled back).

    A SQLite file that can be opened may still refuse every write; an UPDATE that matches no
    row is refused just the same, and leaves nothing behind.
    """
    with engine.connect() as connection:
        connection.execute(
            update(Conversation).where(false()).values(updated_at=Conversation.updated_at)
        )
        connection.rollback()



def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


class SomeCallsKnown(Exception):
    """Some calls of a group were stored already (a retry, a racing twin): write them one by one."""


@dataclass(frozen=True)
class _PreparedRowsInsert:
    """INSERT .. ON CONFLICT DO NOTHING of n rows, compiled once per dialect, table, columns and n,
    for a DBAPI cursor; row i's values are bound as `column__i`.

    The new-call path runs it on a pooled DBAPI connection: SQLAlchemy's compile cache and
    execution context, and the ORM session, cost more than the INSERTs themselves. The
    dialect's own bind processors (JSON, SQLite's timestamps) keep the rows exactly as the
    ORM writes them.
    """

    sql: str
    #: Each bind's (row number, column), in the order a positional dialect (SQLite) takes them; None for named.
    positional: tuple[tuple[int, str], ...] | None
    processors: dict[str, Callable]

    def parameters(self, rows: list[dict]):
        converted = [
            {name: (value if (process := self.processors.get(name)) is None else process(value)) for name, value in row.items()}
            for row in rows
        ]
        if self.positional is not None:
            return [converted[number][name] for number, name in self.positional]
        return {f"{name}__{number}": value for number, row in enumerate(converted) for name, value in row.items()}


#: Groups of up to this many calls are compiled once per size; a larger group is rare enough to compile anew.
_ROW_COUNTS_KEPT = 128


@lru_cache(maxsize=_ROW_COUNTS_KEPT * 2)
def _prepared_rows_insert(dialect: Dialect, table: Table, columns: tuple[str, ...], count: int) -> _PreparedRowsInsert:
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    rows = [{name: bindparam(f"{name}__{number}") for name in columns} for number in range(count)]
    statement = insert(table).values(rows).on_conflict_do_nothing()
    compiled = statement.compile(dialect=dialect)
    processors = {}
    for name in columns:
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    positional = None
    if dialect.positional:
        positional = tuple((int(number), name) for name, _, number in (bind.rpartition("__") for bind in compiled.positiontup))
    return _PreparedRowsInsert(str(compiled), positional, processors)


def insert_ignoring_conflict(session: Session, table: Table, values: dict) -> int:
    """Stage a row unless it clashes with a unique one, so racing writers never raise; rows inserted."""
    return _insert_rows(dbapi_connection(session), session.get_bind().dialect, table, [values])


@contextmanager
def dbapi_errors(dialect: Dialect, statement: str | None = None, parameters=None):
    """Raise a DBAPI connection's errors as SQLAlchemy's own classes, as the ORM path does, so
    callers fail open (or replay pauses) the same way whichever path hit the outage."""
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(statement, parameters, error, dialect.loaded_dbapi.Error) from error


def add_new_calls(connection: DBAPIConnection, dialect: Dialect, rows: list[dict]) -> list[bool]:
    """Stage new calls' conversation rows; for each, False if its CallSid is known.
    SomeCallsKnown when that is so of some calls but not all: the caller rolls back and writes each alone.

    The path every new call takes: one prebuilt multi-row INSERT, and no read, however many
    calls commit together. A row stored with its first attempt begun gets its first history
    entry from the INSERT's trigger (migration 0004), in the same statement: each statement lets
    other threads run while the database works, and asks the GIL back after. A racing twin's
    INSERT waits on the CallSid's unique index until the winner commits, then inserts nothing.
    The dicts are left as given, so a commit group can stage them again.
    """
    count = _insert_rows(connection, dialect, Conversation.__table__, rows)
    # The row count tells which calls were new when it is all or none of them. RETURNING would
    # tell it row by row, but SQLite steps once a row, and each step lets go of the GIL while
    # the group holds the writer turn.
    if 0 < count < len(rows):
        raise SomeCallsKnown(f"{len(rows) - count} of {len(rows)} calls were stored already")
    return [count > 0] * len(rows)


def _insert_rows(connection: DBAPIConnection, dialect: Dialect, table: Table, rows: list[dict]) -> int:
    """INSERT .. ON CONFLICT DO NOTHING of rows with the same columns: how many were inserted."""
    prepared = _prepared_rows_insert(dialect, table, tuple(rows[0]), len(rows))
    parameters = prepared.parameters(rows)
    with dbapi_errors(dialect, prepared.sql, parameters):
        cursor = connection.cursor()
        try:
            cursor.execute(prepared.sql, parameters)
            return cursor.rowcount
        finally:
            cursor.close()


def dbapi_connection(session: Session) -> DBAPIConnection:
    """The DBAPI connection under a session's transaction, for the prepared INSERTs."""
    return session.connection().connection.dbapi_connection


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
    insert_ignoring_conflict(session, Conversation.__table__, candidate.model_dump())
    stored = session.exec(
        select(Conversation)
        .where(Conversation.call_sid == call_sid)
        .execution_options(populate_existing=True)
    ).one()
    return stored, stored.id == candidate.id


def conversation_by_call_sid(session: Session, call_sid: str, *, for_update: bool = False) -> Conversation | None:
    """The call's conversation; `for_update` locks it until commit on PostgreSQL and re-reads it."""
    query = select(Conversation).where(Conversation.call_sid == call_sid)
    if for_update:
        query = _locking(session, query)
    return session.exec(query).first()


def find_by_id(session: Session, conversation_id: str) -> Conversation | None:
    return session.get(Conversation, conversation_id)


def conversation_for_update(session: Session, conversation_id: str) -> Conversation | None:
    """The row, locked until commit on PostgreSQL (SQLite serialises writers by itself)."""
    return session.exec(_locking(session, select(Conversation).where(Conversation.id == conversation_id))).first()


def _locking(session: Session, query):
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return query.execution_options(populate_existing=True)


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
    snapshot: dict | None = None,
) -> bool:
    """Append a history entry; False when this dedupe_key was already recorded (a retried webhook)."""
    values = dict(
        conversation_id=conversation.id,
        state=state,
        destination=destination,
        detail=detail[:500] if detail else None,
        dedupe_key=dedupe_key,
        at=at or utcnow(),
        snapshot=snapshot,
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
    shared_id: str | None = None
    state: str | None = None
    topic: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    channel: str | None = None
    #: the console's search box and the API's `q`: any one of the ids, or the caller or number called
    search: SearchTerms | None = None


def _in_project(project_key: str, search: SearchTerms | None):
    """The project's rows, and of those the ones the search names.

    A search's terms each have an index (id, CallSid, the project's shared_ids, its callers), so
    the database answers the OR from them; `project_key || ''` stops SQLite from walking the
    project's whole newest-first index instead (its documented unary-plus idiom). The number
    called has no index: when the search is one of the project's own numbers, which most of its
    calls were made to, the newest-first walk finds a page of them at once.
    """
    within = Conversation.project_key == project_key
    if search is None:
        return within
    terms = [
        Conversation.id == search.text,
        Conversation.call_sid == search.text,
        and_(within, Conversation.shared_id == search.text),
        and_(within, Conversation.from_number.in_((search.text, *search.numbers))),
    ]
    if search.called:
        return and_(within, or_(*terms, Conversation.to_number.in_(search.called)))
    return and_((Conversation.project_key + "") == project_key, or_(*terms))


def list_conversations(
    session: Session,
    project_key: str,
    filters: ConversationFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Conversation]:
    """Newest first; `after` is the (started_at, id) of the last row already shown (keyset paging)."""
    query = select(Conversation).where(_in_project(project_key, filters.search))
    for column, value in (
        (Conversation.call_sid, filters.call_sid),
        (Conversation.shared_id, filters.shared_id),
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
        # A row-value comparison: both SQLite and PostgreSQL seek the newest-first index to it,
        # so a page deep in the history costs what the first one does.
        query = query.where(tuple_(Conversation.started_at, Conversation.id) < tuple_(*after))
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
