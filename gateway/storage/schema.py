"""The database schema's version, kept by Alembic (gateway/storage/migrations/): upgrade it, or refuse it.

A new database is made by the migrations; one made before them (by `create_all`) is adopted by
the same migrations, the baseline making only the tables and indexes it lacks; one behind the
code's head revision is refused with the command that fixes it, because serving from it would
fail on a missing column mid-call.
No Flask here. Upgrade steps for several instances: docs/migrations.md.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from tempfile import TemporaryDirectory

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
#: Alembic says "Context impl SQLiteImpl." at INFO each time the revision is read, at every start;
#: upgrade() logs what it changed instead.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "gateway db upgrade"

#: The schema the gateway made with `create_all` before it had migrations.
BASELINE = "0001"
#: A table every database made before the migrations holds: its presence means "adopt, don't create".
BASELINE_TABLE = "conversations"
#: Indexes that releases before the baseline made and the models dropped since (031d33b the
#: single-column conversations indexes, 9832ad9 the project_key ones): `create_all` never
#: dropped them, so a database made before either still has them, each written on every new call.
BASELINE_LEFTOVER_INDEXES = (
    "ix_conversations_project_key",
    "ix_conversations_shared_id",
    "ix_conversations_from_number",
    "ix_conversations_to_number",
    "ix_conversations_state",
    "ix_conversations_topic",
    "ix_conversations_started_at",
    "ix_handoff_events_conversation_id",
    "ix_destinations_project_key",
    "ix_sms_opt_outs_project_key",
)
#: Any constant: the PostgreSQL advisory lock that one migrating instance holds.
MIGRATION_LOCK_ID = 0x6761746577617921


class DatabaseBehind(OperationalError):
    """The database's schema is older than this gateway's; says which command brings it up.

    An OperationalError, like a database that is down: every path that fails open on an
    outage (the voice and SMS webhooks, the spool replay) fails open on this too.
    """

    def __init__(self, message: str) -> None:
        super().__init__(None, None, Exception(message))
        self.message = message

    def __str__(self) -> str:
        return self.message


class UpgradeRefused(Exception):
    """The upgrade stopped with a message for the operator: Alembic's own, or a migration's that
    found rows it cannot carry over as they are (it says which, and what to do).

    The upgrade's transaction is rolled back: the database is left at its revision.
    """


class NothingToRevise(Exception):
    """The models match head: Alembic would write a revision whose upgrade() is `pass`, which a
    developer could commit by mistake, so none is written."""


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def head() -> str:
    """The revision this code's models match."""
    return _scripts().get_current_head()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _made_before_migrations(connection: Connection, revision: str | None) -> bool:
    return revision is None and inspect(connection).has_table(BASELINE_TABLE)


def _lock(connection: Connection, *, wait: bool) -> None:
    """Hold the database against other migrators until this transaction ends.

    PostgreSQL: an advisory lock, so instances starting together migrate one after another and
    the later ones find nothing left to do. With `wait`, as long as the other migrator takes:
    every connection's lock_timeout (the engine's busy timeout) would otherwise fail the second
    `gateway db upgrade` while the first runs a long revision. SQLite: a write transaction,
    which does the same within the busy timeout.
    """
    if connection.dialect.name == "postgresql":
        bounded = connection.execute(text("SHOW lock_timeout")).scalar_one()
        if wait:
            connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        # The migration's own statements keep the bound: an ALTER TABLE waiting for ever behind
        # one open read would make every old instance's query of that table wait behind it.
        connection.execute(text("SELECT set_config('lock_timeout', :bound, true)"), {"bound": bounded})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade(engine: Engine, *, wait: bool = True) -> str:
    """Bring the database to head in one transaction, adopting one made before migrations; the revision.

    `wait=False` bounds the wait for another migrator by the engine's busy timeout, then raises
    the database's OperationalError: for the app, which must not hang a request on it.
    """
    with engine.connect() as connection:
        _lock(connection, wait=wait)
        config = _alembic_config(connection)
        before = _revision_of(connection)
        if _made_before_migrations(connection, before):
            log.warning("adopting a database made before migrations: making what it lacks of the baseline %s", BASELINE)
            for index in BASELINE_LEFTOVER_INDEXES:
                connection.execute(text(f"DROP INDEX IF EXISTS {index}"))
        try:
            command.upgrade(config, "head")
        except CommandError as refused:  # raised by a migration for the operator to read
            raise UpgradeRefused(str(refused)) from refused
        revision = _revision_of(connection)
        connection.commit()
    if revision != before:
        log.info("database schema upgraded from revision %s to %s", before or "(none)", revision)
    return revision


def check(engine: Engine) -> None:
    """Return when the app can serve from this database, making it first if it is empty.

    Raises DatabaseBehind when it is behind head or was made before migrations (the operator
    runs `gateway db upgrade`, as docs/migrations.md says), and the database's own error
    while it is unreachable. A revision newer than this code knows is served with a warning:
    during a rolling upgrade the previous release keeps running on the upgraded schema.
    """
    with engine.connect() as connection:
        revision = _revision_of(connection)
        before_migrations = _made_before_migrations(connection, revision)
    if revision == head():
        return
    if before_migrations:
        raise DatabaseBehind(
            f"the database was made before schema migrations; run `{UPGRADE_COMMAND}` to adopt it "
            "(its rows are kept)"
        )
    if revision is None:
        # A new, empty database: nothing is serving from it yet. Another instance making its
        # tables holds the lock for a moment; one that holds it longer fails this check like an
        # outage (the webhooks fail open, the next request checks again) rather than hang a worker.
        upgrade(engine, wait=False)
        return
    if revision not in _known_revisions():
        log.warning(
            "the database is at revision %s, which this gateway (head %s) does not know: a newer "
            "release upgraded it; serving, as each migration keeps the previous release working",
            revision,
            head(),
        )
        return
    raise DatabaseBehind(
        f"the database schema is at revision {revision}, behind this gateway's {head()}: "
        f"run `{UPGRADE_COMMAND}`"
    )


def _refuse_an_empty_revision(_context, _revision, directives) -> None:
    """Alembic's hook before it writes the file: raising here leaves nothing behind."""
    if directives[0].upgrade_ops.is_empty():
        raise NothingToRevise(
            f"nothing changed: the models in gateway/storage/models.py match head revision {head()}, "
            "so no revision was written; change the tables first"
        )


def new_revision(message: str) -> Path:
    """Write the next revision, autogenerated from the models' difference from head; its file.

    For developers in a checkout (docs/migrations.md): the comparison runs against a scratch
    SQLite database brought to head, so no server is needed. Review what it wrote. Raises
    NothingToRevise, writing nothing, when the models match head.
    """
    with TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine)
            with engine.connect() as connection:
                rev_id = f"{len(_known_revisions()) + 1:04d}"
                script = command.revision(
                    _alembic_config(connection),
                    message=message,
                    autogenerate=True,
                    rev_id=rev_id,
                    process_revision_directives=_refuse_an_empty_revision,
                )
        finally:
            engine.dispose()
    _scripts.cache_clear()
    return Path(script.path)
