"""Schema migrations (Alembic) on SQLite and PostgreSQL: empty to head, adopting a database made
before migrations with its rows, models that match the migrations, and an app that refuses to
serve from a database behind head while its webhooks still answer callers."""
from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from gateway import create_app
from gateway.storage import schema
from gateway.cli import main
from gateway.storage.store import DEFAULT_BUSY_TIMEOUT, make_engine
from tests.conftest import POSTGRES_ENV, scratch_postgres_database
from tests.support import ACME, CONFIG_KEY, call_params, post_signed, twiml_root

SNAPSHOTS = Path(__file__).parent / "schema_before_migrations"
CONVERSATION_ID = "0b6f7b4e-3f59-4d5c-9f1e-6a1d2c3b4a59"

#: One row in every table of the schema made before migrations, written as that code wrote them.
ROWS_BEFORE_MIGRATIONS = [
    ("conversations", {
        "id": CONVERSATION_ID, "project_key": ACME, "channel": "voice", "call_sid": "CA" + "5" * 32,
        "shared_id": "crm-42", "from_number": "+14155551234", "to_number": "+14155550199",
        "state": "handoff_completed", "topic": None, "destination": "Front desk", "reason": "needs_human",
        "utterance": None, "data": '{"account_number": "12345"}', "attempts": 1, "call_status": "completed",
        "status_sequence": 3, "duration_seconds": 42, "started_at": "2026-11-20 10:00:00+00:00",
        "updated_at": "2026-11-20 10:01:00+00:00", "ended_at": "2026-11-20 10:02:00+00:00",
    }),
    ("handoff_events", {
        "id": 1, "conversation_id": CONVERSATION_ID, "state": "handoff_initiated", "destination": "Front desk",
        "detail": None, "dedupe_key": "call", "at": "2026-11-20 10:00:00+00:00",
    }),
    ("destinations", {
        "id": 1, "project_key": ACME, "name": "Night desk", "body": '{"method": "invite", "route": "+14155550111"}',
        "created_at": "2026-11-20 09:00:00+00:00", "updated_at": "2026-11-20 09:00:00+00:00",
    }),
    ("api_keys", {
        "id": 1, "project_key": ACME, "key_sha256": "a" * 64, "label": "crm", "created_at": "2026-11-20 09:00:00+00:00",
    }),
    ("sms_messages", {
        "id": 1, "sid": "SM" + "1" * 32, "project_key": ACME, "conversation_id": CONVERSATION_ID,
        "direction": "outbound", "from_number": "+14155550199", "to_number": "+14155551234", "body": "Hello",
        "status": "delivered", "error_code": None, "created_at": "2026-11-20 10:05:00+00:00",
        "updated_at": "2026-11-20 10:05:00+00:00",
    }),
    ("sms_status_events", {
        "id": 1, "message_sid": "SM" + "1" * 32, "status": "delivered", "error_code": None, "at": "2026-11-20 10:05:01+00:00",
    }),
    ("sms_opt_outs", {
        "id": 1, "project_key": ACME, "number": "+14155559999", "keyword": "STOP", "at": "2026-11-20 10:06:00+00:00",
    }),
    ("sms_threads", {
        "id": 1, "project_key": ACME, "customer_number": "+14155551234", "conversation_id": CONVERSATION_ID,
    }),
    ("chat_messages", {
        "id": 1, "conversation_id": CONVERSATION_ID, "role": "customer", "text": "I need a person", "at": "2026-11-20 10:00:30+00:00",
    }),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """A database of the test's own with nothing in it: no tables, no revision."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL runs are skipped")
    with scratch_postgres_database("gateway_migrations") as url:
        yield url


@pytest.fixture
def engine(empty_database_url):
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def cli(empty_database_url, config_path, monkeypatch):
    """Run `gateway …` against the test's database, as an operator's shell would."""
    monkeypatch.setenv("GATEWAY_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("GATEWAY_CONFIG", str(config_path))
    return lambda *args: CliRunner().invoke(main, list(args))


def _revision(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _drift(engine) -> list:
    """What the models hold that the database does not, or the other way round (Alembic's check)."""
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)


def _make_database_before_migrations(engine, release: str = "") -> None:
    """The tables and rows a gateway made before migrations, from the frozen DDL of that code
    (the last release before them, or `release`'s snapshot): a row in each table it had."""
    ddl = (SNAPSHOTS / f"{release}{engine.dialect.name}.sql").read_text()
    statements = [s for s in "\n".join(l for l in ddl.splitlines() if not l.startswith("--")).split(";") if s.strip()]
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
        tables = set(inspect(connection).get_table_names())
        for table, row in ROWS_BEFORE_MIGRATIONS:
            if table not in tables:
                continue
            columns = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), row)


def _all_rows(engine) -> dict[str, list]:
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        return {
            table: [tuple(map(str, found)) for found in connection.execute(text(f"SELECT {', '.join(row)} FROM {table}"))]
            for table, row in ROWS_BEFORE_MIGRATIONS
            if table in tables
        }


def test_db_upgrade_makes_an_empty_database_at_head_with_every_table(cli, engine):
    result = cli("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert f"database at revision {schema.head()}" in result.output
    assert _revision(engine) == schema.head()
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())


def test_init_db_does_what_db_upgrade_does(cli, engine):
    result = cli("init-db")

    assert result.exit_code == 0, result.output
    assert _revision(engine) == schema.head()
    assert _drift(engine) == []


def test_the_models_match_what_the_migrations_make(engine):
    """A model changed without a revision fails here: write one with `gateway db revision`."""
    schema.upgrade(engine)
    assert _drift(engine) == [], "the models differ from the migrations; see docs/migrations.md"


def test_the_migrations_have_one_head():
    """Two branches that each added a revision after the same one must be chained before merging."""
    assert len(schema._scripts().get_heads()) == 1, "run `alembic merge`, or re-point one down_revision"


@pytest.fixture
def versions_left_as_they_were():
    """The revisions folder's files before the test; whatever the test wrote is removed, pass or fail."""
    versions = schema.MIGRATIONS_DIR / "versions"
    before = set(versions.glob("*.py"))
    yield versions, before
    for written in set(versions.glob("*.py")) - before:
        written.unlink()
    schema._scripts.cache_clear()


def test_db_revision_refuses_to_write_an_empty_revision_when_the_models_match_head(versions_left_as_they_were):
    versions, before = versions_left_as_they_were

    result = CliRunner().invoke(main, ["db", "revision", "-m", "nothing changed"])

    assert result.exit_code == 1, result.output
    assert "nothing changed" in result.output
    assert f"match head revision {schema.head()}" in result.output
    assert set(versions.glob("*.py")) == before


def test_upgrading_twice_changes_nothing(engine):
    schema.upgrade(engine)
    assert schema.upgrade(engine) == schema.head()
    assert _drift(engine) == []


def test_instances_upgrading_at_once_migrate_one_after_the_other(empty_database_url, engine):
    """Several instances started together on one new database: one migrates, the others wait."""
    engines = [make_engine(empty_database_url) for _ in range(3)]
    with ThreadPoolExecutor(len(engines)) as pool:
        revisions = list(pool.map(schema.upgrade, engines))
    for each in engines:
        each.dispose()

    assert revisions == [schema.head()] * len(engines)
    assert _drift(engine) == []


def _store_conversation(connection, call_sid: str, *, first_attempt: bool) -> str:
    """A conversation row as a new call's INSERT writes it, with or without its first attempt begun."""
    conversation_id = "conv-" + call_sid[-8:]
    connection.execute(
        text(
            "INSERT INTO conversations (id, project_key, channel, call_sid, data, attempts, state, destination, "
            "started_at, updated_at) VALUES (:id, :project, 'voice', :sid, '{}', :attempts, :state, :destination, "
            ":at, :at)"
        ),
        {
            "id": conversation_id, "project": ACME, "sid": call_sid, "attempts": 1 if first_attempt else 0,
            "state": "handoff_initiated" if first_attempt else None,
            "destination": "Front desk" if first_attempt else None, "at": "2026-12-03 10:00:00+00:00",
        },
    )
    return conversation_id


def _history_of(connection, conversation_id: str) -> list[tuple]:
    rows = connection.execute(
        text("SELECT state, destination, detail, dedupe_key, at FROM handoff_events WHERE conversation_id = :id"),
        {"id": conversation_id},
    )
    return [(state, destination, detail, dedupe_key, str(at)[:19]) for state, destination, detail, dedupe_key, at in rows]


def test_the_database_writes_the_first_history_entry_of_a_call_stored_with_its_first_attempt(engine):
    """Migration 0004: one INSERT stores a new call and its first history entry; 0003 wrote none."""
    schema.upgrade(engine)
    with engine.begin() as connection:
        transferred = _store_conversation(connection, "CA" + "1" * 32, first_attempt=True)
        assistant = _store_conversation(connection, "CA" + "2" * 32, first_attempt=False)
        assert _history_of(connection, transferred) == [
            ("handoff_initiated", "Front desk", None, "attempt:1", "2026-12-03 10:00:00")
        ]
        assert _history_of(connection, assistant) == []

    with engine.connect() as connection:
        config = schema._alembic_config(connection)
        alembic_command.downgrade(config, "0003")
        connection.commit()
    with engine.begin() as connection:
        before_0004 = _store_conversation(connection, "CA" + "3" * 32, first_attempt=True)
        assert _history_of(connection, before_0004) == []


def test_a_database_made_before_migrations_is_adopted_with_every_row(cli, engine):
    _make_database_before_migrations(engine)
    rows_before = _all_rows(engine)
    assert all(rows_before.values())

    result = cli("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert _revision(engine) == schema.head()
    assert _all_rows(engine) == rows_before
    assert _drift(engine) == [], "an adopted database must be the one a new install gets"


def test_a_database_made_by_the_first_release_is_adopted_with_the_tables_it_lacked(cli, engine):
    """ea227b0 had no SMS or chat tables: adoption makes them, keeps its rows, and the app serves it."""
    _make_database_before_migrations(engine, "first_release.")
    rows_before = _all_rows(engine)
    assert set(rows_before) == {"conversations", "handoff_events", "destinations", "api_keys"}

    result = cli("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert _revision(engine) == schema.head()
    assert {table: rows for table, rows in _all_rows(engine).items() if table in rows_before} == rows_before
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    assert _drift(engine) == [], "an adopted database must be the one a new install gets"
    schema.check(engine)  # the app serves from it


#: Indexes `create_all` made on every column marked index=True before 031d33b (gateway/models.py
#: of ea227b0 to 031d33b^): the models dropped them, but no release dropped them from a database.
INDEXES_BEFORE_031D33B = [
    "CREATE INDEX ix_conversations_from_number ON conversations (from_number)",
    "CREATE INDEX ix_conversations_project_key ON conversations (project_key)",
    "CREATE INDEX ix_conversations_shared_id ON conversations (shared_id)",
    "CREATE INDEX ix_conversations_started_at ON conversations (started_at)",
    "CREATE INDEX ix_conversations_state ON conversations (state)",
    "CREATE INDEX ix_conversations_to_number ON conversations (to_number)",
    "CREATE INDEX ix_conversations_topic ON conversations (topic)",
    "CREATE INDEX ix_handoff_events_conversation_id ON handoff_events (conversation_id)",
]


def test_adopting_a_database_made_before_031d33b_drops_the_indexes_the_models_no_longer_have(cli, engine):
    """031d33b cut a new call's index writes from 10 to 5; an adopted database must not keep the other 5."""
    _make_database_before_migrations(engine)
    with engine.begin() as connection:
        for statement in INDEXES_BEFORE_031D33B:
            connection.exec_driver_sql(statement)

    result = cli("db", "upgrade")

    assert result.exit_code == 0, result.output
    indexes = {index["name"] for index in inspect(engine).get_indexes("conversations")}
    assert {name for name in indexes if name.startswith("ix_")} == {
        "ix_conversations_caller", "ix_conversations_newest", "ix_conversations_shared_lookup", "ix_conversations_ended",
    }
    assert _drift(engine) == [], "an adopted database must be the one a new install gets"


def test_the_app_refuses_a_database_made_before_migrations_until_it_is_upgraded(
    make_settings, empty_database_url, engine, cli
):
    _make_database_before_migrations(engine)
    app = create_app(make_settings(database_url=empty_database_url))
    client = app.test_client()

    refused = client.get(f"/v1/{ACME}/handoff_state?id={CONVERSATION_ID}", headers={"x-api-key": CONFIG_KEY})
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "database_behind"
    assert "`gateway db upgrade`" in refused.get_json()["error"]["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "gateway db upgrade" in ready.get_json()["reason"]
    # A caller is still routed: the webhook answers from the config, as when the database is down.
    call = post_signed(client, "/voice/call", call_params(call_sid="CA" + "6" * 32, to="+14155550199"))
    assert call.status_code == 200
    assert twiml_root(call.data).find("Dial/Number").text == "+14155550100"

    assert cli("db", "upgrade").exit_code == 0

    served = client.get(f"/v1/{ACME}/handoff_state?id={CONVERSATION_ID}", headers={"x-api-key": CONFIG_KEY})
    assert served.status_code == 200, served.get_json()
    assert served.get_json()["shared_id"] == "crm-42"
    assert client.get("/readyz").status_code == 200
    app.extensions["gateway"].engine.dispose()


def test_the_cli_refuses_a_database_made_before_migrations(cli, engine):
    _make_database_before_migrations(engine)

    result = cli("api-key", "create", "--account", "acme", "--project", "frontdesk")

    assert result.exit_code == 1
    assert "run `gateway db upgrade`" in result.output
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM api_keys")).scalar() == 1


@pytest.fixture
def next_release(tmp_path, monkeypatch):
    """The migrations plus one more revision, as the next release would ship them: a new column."""
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "9001_next_release.py").write_text(
        f'''"""A column the next release adds."""
from alembic import op
import sqlalchemy as sa

revision = "9001"
down_revision = "{schema.head()}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("conversations", sa.Column("priority", sa.Integer(), nullable=True))


def downgrade():
    op.drop_column("conversations", "priority")
'''
    )

    def switch():
        monkeypatch.setattr(schema, "MIGRATIONS_DIR", migrations)
        schema._scripts.cache_clear()

    yield switch
    schema._scripts.cache_clear()


def test_the_app_refuses_a_database_behind_head_and_db_upgrade_brings_it_up_keeping_rows(
    make_settings, empty_database_url, engine, cli, next_release
):
    _make_database_before_migrations(engine)
    assert cli("db", "upgrade").exit_code == 0
    rows = _all_rows(engine)
    baseline_head = schema.head()
    next_release()

    app = create_app(make_settings(database_url=empty_database_url))
    refused = app.test_client().get(f"/v1/{ACME}/handoff_state?id={CONVERSATION_ID}", headers={"x-api-key": CONFIG_KEY})
    assert refused.status_code == 503
    assert refused.get_json()["error"]["message"] == (
        f"the database schema is at revision {baseline_head}, behind this gateway's 9001: run `gateway db upgrade`"
    )

    result = cli("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert _revision(engine) == "9001"
    assert "priority" in {column["name"] for column in inspect(engine).get_columns("conversations")}
    assert _all_rows(engine) == rows
    assert app.test_client().get("/readyz").status_code == 200
    app.extensions["gateway"].engine.dispose()


def test_the_previous_release_keeps_serving_a_database_a_newer_release_upgraded(
    make_settings, empty_database_url, engine, next_release, monkeypatch, caplog
):
    """A rolling upgrade: the new release migrated; an old instance restarting must still serve."""
    this_release = schema.MIGRATIONS_DIR
    next_release()
    schema.upgrade(engine)
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", this_release)
    schema._scripts.cache_clear()

    app = create_app(make_settings(database_url=empty_database_url))
    client = app.test_client()
    response = post_signed(client, "/voice/call", call_params(call_sid="CA" + "7" * 32, to="+14155550199"))

    assert response.status_code == 200
    assert client.get("/readyz").status_code == 200
    assert any("does not know" in record.getMessage() for record in caplog.records)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT state FROM conversations WHERE call_sid = :sid"), {"sid": "CA" + "7" * 32})
        assert stored.scalar_one() == "handoff_initiated"
    app.extensions["gateway"].engine.dispose()


def _destination_row(row_id: int, project_key: str, name: str) -> dict:
    return {
        "id": row_id, "project_key": project_key, "name": name, "body": "{}",
        "created_at": "2026-11-20 10:00:00+00:00", "updated_at": "2026-11-20 10:00:00+00:00",
    }


def _destinations_before_0003(engine, *rows: dict) -> None:
    """A database at 0001 holding these destinations, as the releases before 0003 stored them."""
    with engine.connect() as connection:
        alembic_command.upgrade(schema._alembic_config(connection), "0001")
        connection.commit()
    with engine.begin() as connection:
        for row in rows:
            connection.execute(
                text("INSERT INTO destinations (id, project_key, name, body, created_at, updated_at) "
                     "VALUES (:id, :project_key, :name, :body, :created_at, :updated_at)"), row)


def test_an_upgrade_that_would_merge_destination_names_differing_only_in_case_stops_and_names_them(cli, engine):
    """Migration 0003 makes names unique without regard to case: it must not fail half-way, nor
    pick one of two destinations a route may name; the operator is told which to rename."""
    _destinations_before_0003(engine, _destination_row(1, ACME, "Sales"), _destination_row(2, ACME, "sales "),
                              _destination_row(3, "other/project", "SALES"), _destination_row(4, ACME, "Support"))

    refused = cli("db", "upgrade")
    assert refused.exit_code == 1
    assert f"{ACME}: 'Sales' (id 1), 'sales ' (id 2)" in refused.output
    assert "SALES" not in refused.output and "Support" not in refused.output  # no clash of their own
    assert "Rename or delete all but one" in refused.output
    assert _revision(engine) == "0001"  # 0002 applied before 0003 stopped, and was undone with it
    assert not inspect(engine).has_table("event_subscriptions")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM destinations")).scalar_one() == 4

    with engine.begin() as connection:
        connection.execute(text("UPDATE destinations SET name = 'Sales (west)' WHERE id = 2"))
    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert _revision(engine) == schema.head()


def test_an_upgrade_that_meets_a_name_whose_key_outgrows_its_column_stops_and_names_it(cli, engine):
    """The release before 0003 took any 1-100 characters without NFKC; NFKC makes each U+FDFA 18
    characters, so 0003's key of this 20-character name has 360 (name_key holds 300)."""
    long_name = "\ufdfa" * 20
    _destinations_before_0003(engine, _destination_row(1, ACME, long_name), _destination_row(2, ACME, "Support"))

    refused = cli("db", "upgrade")
    assert refused.exit_code == 1
    assert f"{ACME}: {long_name!r} (id 1)" in refused.output
    assert "Support" not in refused.output
    assert "Rename each to a shorter name" in refused.output
    assert "Traceback" not in refused.output
    assert _revision(engine) == "0001"

    with engine.begin() as connection:
        connection.execute(text("UPDATE destinations SET name = 'Blessings desk' WHERE id = 1"))
    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert _revision(engine) == schema.head()

@pytest.fixture
def postgres_url():
    """A new, empty PostgreSQL database, for what only its advisory lock does."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL runs are skipped")
    with scratch_postgres_database("gateway_migration_lock") as url:
        yield url


@contextmanager
def _migration_lock_held_for(url: str, seconds: float):
    """Another migrator: holds the migration lock for `seconds`, as a long revision would."""
    holder = make_engine(url)
    connection = holder.connect()
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": schema.MIGRATION_LOCK_ID})
    release = threading.Timer(seconds, connection.commit)
    release.start()
    try:
        yield
    finally:
        release.join()
        connection.close()
        holder.dispose()


def test_db_upgrade_waits_for_another_run_longer_than_the_busy_timeout(postgres_url, config_path, monkeypatch):
    """docs/migrations.md: run from several places at once, one migrates and the others wait."""
    monkeypatch.setenv("GATEWAY_DATABASE_URL", postgres_url)
    monkeypatch.setenv("GATEWAY_CONFIG", str(config_path))
    with _migration_lock_held_for(postgres_url, DEFAULT_BUSY_TIMEOUT + 1):
        result = CliRunner().invoke(main, ["db", "upgrade"])

    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert f"database at revision {schema.head()}" in result.output


def test_old_instances_keep_serving_while_db_upgrade_waits_on_a_busy_table(postgres_url):
    """Found by an outside review: the unbounded wait for the migration lock lasted the whole
    transaction, so 0006's ALTER TABLE, queued behind one open read, waited for ever, and every
    old instance's read of the table queued behind it until its busy timeout ran out."""
    migrator = make_engine(postgres_url, busy_timeout=1)
    serving = make_engine(postgres_url, busy_timeout=1)
    with migrator.connect() as connection:
        alembic_command.upgrade(schema._alembic_config(connection), "0005")
        connection.commit()
    blocker = serving.connect()
    blocker.execute(text("SELECT count(*) FROM handoff_events"))  # an old instance's open transaction
    outcome: dict = {}

    def upgrade():
        try:
            outcome["revision"] = schema.upgrade(migrator)
        except OperationalError as error:  # the migration's own statements keep the busy timeout
            outcome["error"] = error

    thread = threading.Thread(target=upgrade)
    thread.start()
    try:
        thread.join(timeout=5)
        with serving.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM handoff_events")).scalar() == 0
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(timeout=30)
        migrator.dispose()
        serving.dispose()
    assert "lock timeout" in str(outcome.get("error")), outcome


def test_the_app_making_a_new_database_waits_for_another_migrator_only_its_busy_timeout(postgres_url):
    """A web worker must not hang on the lock: it fails like an outage (webhooks fail open) and checks again."""
    engine = make_engine(postgres_url, busy_timeout=1)
    try:
        with _migration_lock_held_for(postgres_url, 3):
            with pytest.raises(OperationalError, match="lock timeout"):
                schema.check(engine)
        schema.check(engine)
        assert _revision(engine) == schema.head()
    finally:
        engine.dispose()
