"""Storage set-up: `gateway init-db`, SQLite's WAL mode and busy timeout, the lookup's index.

Migrations have their own tests (tests/test_migrations.py)."""
from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import event, inspect, text
from sqlmodel import Session

from gateway.cli import main
from gateway import create_app
from gateway.storage import schema
from gateway.storage.store import find_conversation, make_engine


def test_init_db_creates_every_table(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["init-db"])
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    assert {"conversations", "handoff_events", "destinations", "api_keys"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    engine.dispose()


def test_the_app_makes_an_empty_database_at_first_start(make_settings, tmp_path):
    app = create_app(make_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    engine = app.extensions["gateway"].engine
    assert "conversations" in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == schema.head()
    engine.dispose()


def test_the_shared_id_lookup_reads_an_index_not_the_table(tmp_path):
    """SPEC §5's lookup by shared_id must stay fast at a million conversations (benchmarks/lookup.py)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    schema.upgrade(engine)
    executed = []
    event.listen(engine, "before_cursor_execute", lambda *args: executed.append(args[2:4]))
    with Session(engine) as session:
        assert find_conversation(session, "front-desk", shared_id="crm-42") is None
    (statement, parameters), = executed
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    details = " ".join(row[-1] for row in plan)
    assert "USING INDEX ix_conversations_shared_lookup" in details, details
    engine.dispose()
