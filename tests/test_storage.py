"""Storage set-up: `gateway init-db`, SQLite's WAL mode and busy timeout, one row per CallSid."""
from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import inspect, text

from gateway.cli import main
from gateway.store import make_engine


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
