"""Fixtures: an app per test with its own settings, config and database (SQLite and PostgreSQL)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
import shutil
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from gateway import create_app
from gateway.storage import schema
from gateway.settings import Settings
from tests.openapi_conformance import Conformance
from tests.support import ACCOUNT_SID, AUTH_TOKEN, CONFIG_TOML

POSTGRES_ENV = "GATEWAY_TEST_DATABASE_URL"

#: The `twilio_api` fixture (Twilio REST and assistant mocks) for the SMS and chat tests, and the
#: console's `console_app` and signed-in `operator`.
pytest_plugins = ["tests.messaging_support", "tests.console_support"]


def _psycopg(url: str) -> str:
    return Settings(_env_file=None, database_url=url).database_url


@contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database on $GATEWAY_TEST_DATABASE_URL's server, dropped after."""
    admin_url = make_url(_psycopg(os.environ[POSTGRES_ENV]))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database():
    """A database of this run's own, created here and dropped at the end, so runs never mix."""
    if not os.environ.get(POSTGRES_ENV):
        yield None
        return
    with scratch_postgres_database("gateway_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_at_head(tmp_path_factory):
    """A SQLite file the migrations brought to head once; each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("schema") / "head.db"
    engine = create_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path, postgres_database, sqlite_at_head):
    """Every test that touches storage runs on both backends, in a database at head."""
    if request.param == "sqlite":
        shutil.copyfile(sqlite_at_head, tmp_path / "gateway.db")
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    if postgres_database is None:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL runs are skipped")
    yield postgres_database
    engine = create_engine(postgres_database)
    schema.upgrade(engine)  # a test whose app never started made no tables
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG_TOML)
    return path


@pytest.fixture
def make_settings(database_url, config_path, tmp_path):
    """Settings for a test app; keyword arguments override single fields."""

    def build(**overrides) -> Settings:
        values = dict(
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            database_url=database_url,
            config_path=config_path,
            public_url=None,
            trusted_proxies=0,
            console_password_hash=None,
            secret_key="test-secret-key",
            spool_dir=tmp_path / "spool",
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def make_app(make_settings):
    """Build test apps; every /v1 response they give is checked against their /openapi.json."""
    apps = []

    def build(**overrides):
        app = create_app(make_settings(**overrides))
        app.testing = True
        conformance = Conformance()
        app.after_request(conformance.check)
        conformance.load(app.test_client().get("/openapi.json").get_json())
        apps.append((app, conformance))
        return app

    yield build
    problems = [problem for _app, conformance in apps for problem in conformance.problems]
    for app, _conformance in apps:
        app.extensions["gateway"].engine.dispose()
    assert not problems, "responses that /openapi.json does not describe:\n" + "\n".join(problems)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def session(app):
    """A session on the test app's database, for asserting on the rows users would see."""
    with Session(app.extensions["gateway"].engine, expire_on_commit=False) as session:
        yield session
