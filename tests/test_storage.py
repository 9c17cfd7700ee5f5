"""Storage set-up: `gateway init-db`, SQLite's WAL mode and busy timeout, indexes old and new."""
from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import event, inspect, text
from sqlmodel import Session

from gateway.cli import main
from gateway.store import find_conversation, init_db, make_engine


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


def test_the_app_creates_its_tables_on_first_start(app):
    engine = app.extensions["gateway"].engine
    assert "conversations" in inspect(engine).get_table_names()


def test_an_existing_database_gets_indexes_added_since_it_was_made(database_url):
    """create_all skips existing tables; a database from an older version still gets new indexes."""
    engine = make_engine(database_url)
    init_db(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_conversations_shared_lookup"))
    assert "ix_conversations_shared_lookup" not in _index_names(engine, "conversations")

    init_db(engine)
    init_db(engine)  # and again: a restart finds it there

    assert "ix_conversations_shared_lookup" in _index_names(engine, "conversations")
    engine.dispose()


def test_the_shared_id_lookup_reads_an_index_not_the_table(tmp_path):
    """SPEC §5's lookup by shared_id must stay fast at a million conversations (benchmarks/lookup.py)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    init_db(engine)
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


def _index_names(engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table)}
